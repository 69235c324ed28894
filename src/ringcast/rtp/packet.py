"""RTP and RTCP wire formats (RFC 3550) and RFC 4733 telephone-events, without sockets.

The send path never builds a header from scratch: `RtpHeaderTemplate` keeps the
12 header bytes of one stream and patches sequence number and timestamp in
place. Parsing raises `ValueError` with an exact message.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

RTP_VERSION = 2
RTP_HEADER_SIZE = 12  # bytes, without CSRCs or extension (RFC 3550 §5.1)
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_CNAME = 1
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01 (RFC 3550 §4)

DTMF_EVENTS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-15 in this order
DTMF_VOLUME = 10  # -dBm0 of the events we send (RFC 4733 §2.3.4)

_SEQ_TS = struct.Struct("!HI")
_HEADER = struct.Struct("!BBHII")
_EVENT = struct.Struct("!BBH")


class RtpHeaderTemplate:
    """The 12 header bytes of one RTP stream, patched in place per packet.

    `packet(payload, seq, ts)` writes seq/timestamp into the template and returns
    header + payload. Marker and payload type are set with `set_marker` /
    `set_payload_type` (RFC 3550 §5.1).
    """

    __slots__ = ("buf", "payload_type")

    def __init__(self, ssrc: int, payload_type: int) -> None:
        self.buf = bytearray(_HEADER.pack(RTP_VERSION << 6, payload_type & 0x7F, 0, 0, ssrc))
        self.payload_type = payload_type & 0x7F

    def set_marker(self, marker: bool) -> None:
        self.buf[1] = self.payload_type | (0x80 if marker else 0)

    def set_payload_type(self, payload_type: int) -> None:
        self.payload_type = payload_type & 0x7F
        self.buf[1] = (self.buf[1] & 0x80) | self.payload_type

    def packet(self, payload: bytes, seq: int, timestamp: int) -> bytes:
        _SEQ_TS.pack_into(self.buf, 2, seq, timestamp)
        return bytes(self.buf) + payload


def build_rtp(
    payload: bytes, *, payload_type: int, seq: int, timestamp: int, ssrc: int, marker: bool = False
) -> bytes:
    """One RTP packet, version 2, no padding, no extension, no CSRC."""
    return (
        _HEADER.pack(
            RTP_VERSION << 6,
            (0x80 if marker else 0) | (payload_type & 0x7F),
            seq & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        + payload
    )


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A parsed RTP packet (RFC 3550 §5.1)."""

    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    csrcs: tuple[int, ...] = ()


def payload_span(data: bytes) -> tuple[int, int]:
    """Where a received RTP packet's payload starts and ends: after the CSRCs and the
    header extension (RFC 3550 §5.3.1), before the padding (§5.1). The payload is
    empty or missing when start >= end. The caller has checked the fixed header;
    the per-packet paths use this instead of :func:`parse_rtp`, which builds a packet."""
    b0 = data[0]
    pos = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10 and len(data) >= pos + 4:
        pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
    return pos, len(data) - (data[-1] if b0 & 0x20 else 0)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; ValueError with an exact reason if it is not one."""
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {b0 >> 6} is not 2")
    cc = b0 & 0x0F
    pos = RTP_HEADER_SIZE + 4 * cc
    if len(data) < pos:
        raise ValueError(f"RTP packet too short for {cc} CSRCs")
    csrcs = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE) if cc else ()
    if b0 & 0x10:  # header extension (§5.3.1)
        if len(data) < pos + 4:
            raise ValueError("RTP header extension truncated")
        (words,) = struct.unpack_from("!H", data, pos + 2)
        pos += 4 + 4 * words
        if len(data) < pos:
            raise ValueError("RTP header extension truncated")
    end = len(data)
    if b0 & 0x20:  # padding (§5.1): the last byte counts the padding bytes
        pad = data[-1]
        if pad == 0 or pos + pad > end:
            raise ValueError(f"RTP padding length {pad} is invalid")
        end -= pad
    return RtpPacket(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, bytes(data[pos:end]), csrcs)


# --- RFC 4733 telephone-event --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 event payload."""

    event: int
    end: bool
    volume: int
    duration: int  # timestamp units since the event's RTP timestamp

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


def event_code(digit: str) -> int:
    """The RFC 4733 event number of a DTMF digit; ValueError if it is none."""
    idx = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if idx < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return idx


def build_event(event: int, *, end: bool, duration: int, volume: int = DTMF_VOLUME) -> bytes:
    """The 4-byte telephone-event payload (RFC 4733 §2.3)."""
    return _EVENT.pack(event & 0xFF, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


def parse_event(payload: bytes) -> TelephoneEvent:
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload too short: {len(payload)} bytes")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


# --- RTCP (RFC 3550 §6) -------------------------------------------------------------------


def ntp_timestamp(unix_time: float | None = None) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time (now by default)."""
    t = time.time() if unix_time is None else unix_time
    seconds = int(t) + NTP_EPOCH_OFFSET
    fraction = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return ((seconds & 0xFFFFFFFF) << 32) | fraction


def build_sender_report(
    *, ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int
) -> bytes:
    """An SR with no report blocks (§6.4.1): 28 bytes, length field 6."""
    return struct.pack(
        "!BBHIIIIII",
        RTP_VERSION << 6,
        RTCP_SR,
        6,
        ssrc,
        (ntp >> 32) & 0xFFFFFFFF,
        ntp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk carrying CNAME (§6.5), padded to 32 bits."""
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, SDES_CNAME, len(text)) + text + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return struct.pack("!BBH", (RTP_VERSION << 6) | 1, RTCP_SDES, len(chunk) // 4) + chunk


def build_bye(ssrc: int, reason: str = "") -> bytes:
    """A BYE for one SSRC (§6.6), optional reason, padded to 32 bits."""
    body = struct.pack("!I", ssrc)
    if reason:
        text = reason.encode()[:255]
        body += bytes([len(text)]) + text
        body += b"\0" * (-len(body) % 4)
    return struct.pack("!BBH", (RTP_VERSION << 6) | 1, RTCP_BYE, len(body) // 4) + body


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    packet_type: int
    count: int
    body: bytes


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP packet (§6.1); ValueError on a malformed one."""
    out: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise ValueError(f"RTCP packet truncated at byte {pos}")
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise ValueError(f"RTCP version {b0 >> 6} is not 2")
        end = pos + 4 * (length + 1)
        if end > len(data):
            raise ValueError(f"RTCP length {length} runs past the datagram")
        out.append(RtcpPacket(pt, b0 & 0x1F, bytes(data[pos + 4 : end])))
        pos = end
    return out
