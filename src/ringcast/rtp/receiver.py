"""What the callee sends one call: symmetric-RTP latching, RFC 4733 digits, audio, RTCP.

A mixin of :class:`ringcast.rtp.session.MediaSession` (its incoming half).
Symmetric RTP (RFC 4961): until the latch the socket stays unconnected and the
first authentic RTP packet from a trusted IP sets where we send; then the
socket is connected (the send fast path, strangers filtered out). Received
audio is read only while someone listens (a listener, the in-band DTMF
detector, a relay); otherwise a socket filter lets the kernel drop it unread
(`_filter_incoming`, :func:`ringcast.rtp.udp.attach_payload_type_filter`).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringcast.inet import unmapped
from ringcast.media.codecs import Pcm16
from ringcast.media.inband_dtmf import InbandDtmfDetector
from ringcast.rtp.clock import RtpClock
from ringcast.rtp.packet import DTMF_EVENTS, RTP_HEADER_SIZE, payload_span
from ringcast.rtp.srtp import SrtpContext
from ringcast.rtp.state import SessionState
from ringcast.rtp.udp import attach_payload_type_filter

log = logging.getLogger(__name__)

RECV_BATCH = 64  # datagrams read per readiness callback
INBAND_BATCH = 640  # G.711 bytes (80 ms) of audio the in-band DTMF receiver takes at once

AudioListener = Callable[[Pcm16], None]  # gets the callee's decoded audio, packet by packet


class StreamReceiver:
    """Reads the callee's RTP and RTCP (the session's incoming half)."""

    # the session's fields this half reads and writes (MediaSession sets them; its
    # __slots__ hold them)
    _clock: RtpClock
    _sock: socket.socket
    _rtcp_sock: socket.socket
    _remote: tuple[str, int] | None
    _rtcp_remote: tuple[str, int] | None
    _connected: bool
    _latched: bool
    _latch_ips: frozenset[str]
    _srtp: SrtpContext | None
    _tap: Callable[[bytes], None] | None
    _receive_dtmf_pts: tuple[int, ...]
    _hearing: bool
    _listeners: list[AudioListener]
    _inband: InbandDtmfDetector | None
    _inband_held: bytearray
    _decode: Callable[[bytes], Pcm16]
    _last_event: tuple[int, int] | None
    state: SessionState
    local_port: int
    payload_type: int
    strangers: int
    packets_received: int
    rtcp_received: int
    inband_digits: int

    if TYPE_CHECKING:

        def on_digit(self, digit: str) -> None: ...

        def _set_send(self, raw: Callable[[bytes | bytearray], object]) -> None: ...

        @property
        def srtp_auth_failures(self) -> int: ...

    def _srtp_failed(self, kind: str, addr: tuple[str, int] | None, data: bytes) -> None:
        """Count a packet that failed SRTP/SRTCP checks; log the first of the session."""
        self._clock.srtp_auth_failures += 1
        if self.srtp_auth_failures == 1:
            log.info(
                "media session %s: S%s packet from %s failed authentication (%s bytes, "
                "header %s); further ones are counted only",
                self.local_port,
                kind,
                addr,
                len(data),
                data[:12].hex(),
            )

    def _latch(self, addr: tuple[str, int] | None) -> None:
        """Fix where RTP goes (the callee's source, else the SDP address) and connect."""
        if self._latched or self.state is not SessionState.STARTED or self._remote is None:
            return
        if unmapped(self._remote[0]) == "0.0.0.0":
            return  # a c=0.0.0.0 hold: no address to connect to until a resume re-aims
        if addr is not None and addr != self._remote:
            log.info(
                "media session %s: symmetric RTP %s -> %s", self.local_port, self._remote, addr
            )
            self._remote = addr
            self._rtcp_remote = (addr[0], addr[1] + 1)
        self._latched = True
        try:
            self._sock.connect(self._remote)
            self._connected = True
            self._set_send(self._sock.send)  # the fast path: no address per packet
        except OSError as exc:
            log.warning(
                "media session %s: connect %s failed: %s", self.local_port, self._remote, exc
            )
            return
        self._filter_incoming()

    def _filter_incoming(self) -> None:
        """Let the kernel drop the callee's audio: only telephone-events reach Python.

        A classic BPF socket filter (Linux SO_ATTACH_FILTER) on the RTP socket
        accepts a datagram only when its RTP payload type is one of the
        telephone-event types we receive (none at all without one). The callee's 50 packets
        per second of audio then cost no Python time. While someone listens to the
        audio (see the module docstring) its payload type passes too. Elsewhere,
        Python filters.
        """
        if not sys.platform.startswith("linux"):
            return
        wanted = self._receive_dtmf_pts + ((self.payload_type,) if self._hearing else ())
        try:
            attach_payload_type_filter(self._sock, wanted)
        except OSError as exc:
            log.debug("media session %s: no socket filter: %s", self.local_port, exc)

    def _on_readable(self) -> None:
        sock = self._sock
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error queued on the socket
                continue
            if len(data) < RTP_HEADER_SIZE or data[0] >> 6 != 2:
                continue
            if not self._connected and addr[0] not in self._latch_ips:
                self.strangers += 1  # neither latch on it nor read its digits
                continue
            if self._srtp is not None:  # only an authentic packet latches or is read
                opened = self._srtp.open(data)
                if opened is None:
                    self._srtp_failed("RTP", addr, data)
                    continue
                data = opened
            self.packets_received += 1
            if not self._latched and self._remote is not None:
                self._latch((addr[0], addr[1]))  # an IPv6 source has flow info and scope too
            if self._tap is not None:
                self._tap(data)
            pt = data[1] & 0x7F
            if pt in self._receive_dtmf_pts:
                self._on_event(data)
            elif self._hearing and pt == self.payload_type:
                self._on_audio(data)

    def _on_rtcp(self) -> None:
        """Drain the callee's RTCP (receiver reports, BYE): counted, not used."""
        for _ in range(RECV_BATCH):
            try:
                data = self._rtcp_sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if self._srtp is not None and self._srtp.open_rtcp(data) is None:
                self._srtp_failed("RTCP", None, data)
                continue
            self.rtcp_received += 1

    @property
    def last_event(self) -> tuple[int, int] | None:
        """(SSRC, RTP timestamp) of the RFC 4733 event counted last; None before any."""
        return self._last_event

    def _on_event(self, data: bytes) -> None:
        pos, end = payload_span(data)
        if end - pos < 4:
            return
        event = data[pos]
        key = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[4:8], "big"))
        if event >= len(DTMF_EVENTS) or key == self._last_event:
            return  # not a digit, or a repeat of the digit already counted
        self._last_event = key
        digit = DTMF_EVENTS[event]
        log.debug("media session %s: dtmf %s", self.local_port, digit)
        self.on_digit(digit)

    def _on_audio(self, data: bytes) -> None:
        """One packet of the callee's audio: to in-band DTMF and the listeners."""
        pos, end = payload_span(data)
        if end <= pos:
            return
        inband = self._inband
        if not self._listeners:  # in-band DTMF alone: decode and analyse 80 ms at a time
            if inband is not None:
                held = self._inband_held
                held += data[pos:end]
                if len(held) >= INBAND_BATCH:
                    pcm = self._decode(bytes(held))
                    held.clear()
                    self._inband_feed(inband, pcm)
            return
        pcm = self._decode(data[pos:end])
        if inband is not None:
            self._inband_feed(inband, pcm)
        for listener in self._listeners:
            listener(pcm)

    def _inband_feed(self, inband: InbandDtmfDetector, pcm: Pcm16) -> None:
        if self._inband_held:  # audio held back before a listener came
            held = self._decode(bytes(self._inband_held))
            self._inband_held.clear()
            for found in inband.feed(held):
                self.inband_digits += 1
                self.on_digit(found.digit)
        for found in inband.feed(pcm):
            self.inband_digits += 1
            self.on_digit(found.digit)
