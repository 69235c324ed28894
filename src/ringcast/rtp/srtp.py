"""SRTP and SRTCP (RFC 3711, RFC 7714 for AEAD_AES_256_GCM) for one call, through libsrtp.

:class:`SrtpContext` holds two libsrtp sessions (``pylibsrtp``): one keyed
with our master key and salt that protects what we send, one keyed with the
callee's that checks and decrypts what it sends. The keys come from SDES
(RFC 4568, negotiated by the SIP layer) and never leave this object: its
``repr`` names the suite only.

Prompts are encoded once and shared by every call; protection is per call,
on the clock's send path (:meth:`wrap_send`), so the shared frames stay plain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pylibsrtp

log = logging.getLogger(__name__)

PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}

SendFn = Callable[[bytes | bytearray], object]


class SrtpContext:
    """One call's SRTP: ``protect``/``protect_rtcp`` out, ``unprotect``/``unprotect_rtcp`` in.

    ``unprotect*`` raise :class:`pylibsrtp.Error` on an authentication or
    replay failure (counted in ``auth_failures`` by the caller's choice of
    :meth:`open`/:meth:`open_rtcp`, which return None instead).
    """

    __slots__ = ("_local_key", "_profile", "_remote_key", "_rx", "_tx", "auth_failures", "suite")

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        profile = PROFILES.get(suite)
        if profile is None:
            raise ValueError(f"unsupported SRTP crypto-suite {suite!r}")
        self.suite = suite
        self._profile = profile
        self._local_key = local_key
        self._remote_key = remote_key
        tx = pylibsrtp.Policy(
            key=local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
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

    def protect_rtcp(self, packet: bytes) -> bytes:
        """RTCP → SRTCP (§3.4): encrypted, E flag and index, auth tag appended."""
        return self._tx.protect_rtcp(packet)

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

    def wrap_send(self, send: SendFn) -> SendFn:
        """``send`` that protects each packet first: the clock's per-packet send path."""
        protect = self._tx.protect

        def send_protected(packet: bytes | bytearray) -> object:
            return send(protect(bytes(packet)))

        return send_protected
