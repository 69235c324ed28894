"""SRTP and SRTCP (RFC 3711, RFC 7714 for AEAD_AES_256_GCM) for one call, through libsrtp.

:class:`SrtpContext` holds two libsrtp sessions (``pylibsrtp``): one keyed
with our master key and salt that protects what we send, one keyed with the
callee's that checks and decrypts what it sends. The keys come from SDES
(RFC 4568, negotiated by the SIP layer) and never leave this object: its
``repr`` names the suite only.

Prompts are encoded once and shared by every call; protection is per call,
on the clock's send path (:meth:`wrap_send`), so the shared frames stay plain.
That path calls libsrtp's ``srtp_protect`` through pylibsrtp's own cffi
binding with a buffer kept per call: ``Session.protect`` allocates and copies
on every packet, which nearly doubled the cost per packet (bench/RESULTS.md).
Without that binding (a future pylibsrtp) it falls back to ``Session.protect``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pylibsrtp

try:  # pylibsrtp's cffi binding: the send path's fast route (see the module docstring)
    from pylibsrtp._binding import ffi as _ffi
    from pylibsrtp._binding import lib as _lib
except ImportError:  # pragma: no cover - a pylibsrtp without it
    _ffi = _lib = None

log = logging.getLogger(__name__)
SRTP_BUFFER = 1500  # bytes: an RTP packet plus the largest auth tag fits (we send 172 + 16)

PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}

SendFn = Callable[[bytes | bytearray], object]
RawSend = Callable[[Any], object]  # socket.send / sendto-bound: takes any buffer


class SrtpContext:
    """One call's SRTP: ``protect``/``protect_rtcp`` out, ``unprotect``/``unprotect_rtcp`` in.

    ``unprotect*`` raise :class:`pylibsrtp.Error` on an authentication or
    replay failure (counted in ``auth_failures`` by the caller's choice of
    :meth:`open`/:meth:`open_rtcp`, which return None instead).
    """

    __slots__ = ("_local_key", "_profile", "_remote_key", "_rx", "_tx", "auth_failures", "suite")

    def __init__(
        self, suite: str, local_key: bytes, remote_key: bytes, ssrc: int | None = None
    ) -> None:
        profile = PROFILES.get(suite)
        if profile is None:
            raise ValueError(f"unsupported SRTP crypto-suite {suite!r}")
        self.suite = suite
        self._profile = profile
        self._local_key = local_key
        self._remote_key = remote_key
        # Our SSRC, when known: libsrtp keys that one stream at once instead of keeping a
        # template it clones on the first packet (half the memory on the send path).
        tx = pylibsrtp.Policy(
            key=local_key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
            if ssrc is None
            else pylibsrtp.Policy.SSRC_SPECIFIC,
            ssrc_value=ssrc or 0,
            srtp_profile=profile,
        )
        self._tx = pylibsrtp.Session(tx)
        self._rx = self._inbound(remote_key)
        self.auth_failures = 0

    def _inbound(self, remote_key: bytes) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=self._profile
        )
        return pylibsrtp.Session(policy)

    def same_keys(self, suite: str, local_key: bytes, remote_key: bytes) -> bool:
        return (suite, local_key, remote_key) == (self.suite, self._local_key, self._remote_key)

    def keeps_local(self, suite: str, local_key: bytes) -> bool:
        return (suite, local_key) == (self.suite, self._local_key)

    def rekey_remote(self, remote_key: bytes) -> None:
        """The callee re-keyed in a re-offer (RFC 4568 §7.1.4): a new inbound context;
        ours goes on (a new one would restart its packet index and reuse keystream)."""
        if remote_key != self._remote_key:
            self._remote_key = remote_key
            self._rx = self._inbound(remote_key)

    def __repr__(self) -> str:
        return f"SrtpContext({self.suite})"

    def protect(self, packet: bytes | bytearray) -> bytes:
        """RTP → SRTP (RFC 3711 §3.3): payload encrypted, auth tag appended."""
        return self._tx.protect(bytes(packet))

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """RTCP → SRTCP (§3.4): encrypted, E flag and index, auth tag appended
        (None when libsrtp refuses, e.g. the key's packet limit: not sent)."""
        try:
            return self._tx.protect_rtcp(packet)
        except pylibsrtp.Error as exc:
            log.warning("srtcp protect failed: %s", exc)
            return None

    def open(self, packet: bytes) -> bytes | None:
        """SRTP → RTP, or None (counted) when it fails authentication or replay checks."""
        try:
            return self._rx.unprotect(packet)
        except pylibsrtp.Error:
            self.auth_failures += 1
            return None

    def open_rtcp(self, packet: bytes) -> bytes | None:
        """SRTCP → RTCP, or None (counted) when it fails its checks."""
        try:
            return self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error:
            self.auth_failures += 1
            return None

    def wrap_send(self, send: RawSend) -> SendFn:
        """``send`` that protects each packet first: the clock's per-packet send path.

        A packet libsrtp refuses raises OSError, which the clock counts as a
        send error (as a full socket buffer) without stopping the stream.
        """
        if _ffi is None or _lib is None:
            return self._wrap_public(send)
        buf = _ffi.new("unsigned char[]", SRTP_BUFFER)
        view = _ffi.buffer(buf)
        out = memoryview(view)
        size = _ffi.new("int *")
        ctx = self._tx._srtp[0]  # the srtp_t the Session owns (kept alive by self._tx)
        protect = _lib.srtp_protect
        limit = SRTP_BUFFER - 16 - 128  # room for the tag and an MKI (pylibsrtp's trailer)

        def send_protected(packet: bytes | bytearray) -> object:
            n = len(packet)
            if n > limit:
                raise OSError(f"RTP packet of {n} bytes is too long for SRTP")
            view[0:n] = packet
            size[0] = n
            rc = protect(ctx, buf, size)
            if rc:
                raise OSError(f"srtp_protect failed ({rc})")
            return send(out[: size[0]])

        send_protected.buffers = (buf, size, self._tx)  # type: ignore[attr-defined]
        return send_protected

    def _wrap_public(self, send: RawSend) -> SendFn:
        protect = self._tx.protect

        def send_protected(packet: bytes | bytearray) -> object:
            try:
                return send(protect(bytes(packet)))
            except pylibsrtp.Error as exc:
                raise OSError(f"srtp_protect failed: {exc}") from None

        return send_protected
