"""Write pcap files of RFC 4733 telephone-events for SIPp's `play_pcap_audio`.

SIPp replays the UDP payloads of a pcap (Ethernet/IPv4/UDP records) to the
media address our SDP offer names, keeping the records' spacing. The files in
tests/data/media/rfc4733_*.pcap are made by :func:`rfc4733_pcap` (a test
holds them equal): one digit, 100 ms of event packets every 20 ms with a
growing duration, then the end packet three times (RFC 4733 §2.5.1.4).
"""

from __future__ import annotations

import struct
from pathlib import Path

DATA = Path(__file__).parent / "data" / "media"
EVENT_PT = 101  # telephone-event, as ringcast's offer names it
DIGITS = "0123456789*#ABCD"
SSRC = 0x5EED4733
TONE_PACKETS = 5  # 100 ms
END_COPIES = 3
SAMPLES = 160  # per 20 ms at 8 kHz


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _frame(payload: bytes, src_port: int = 6000, dst_port: int = 6000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ether = b"\x00" * 12 + b"\x08\x00"
    return ether + ip + udp


def rfc4733_packets(digit: str, *, seq: int = 1000, timestamp: int = 16000) -> list[bytes]:
    """The RTP packets of one digit: marker on the first, one timestamp for all."""
    event = DIGITS.index(digit)
    out = []
    for i in range(TONE_PACKETS + END_COPIES - 1):
        n = min(i + 1, TONE_PACKETS)
        end = i + 1 >= TONE_PACKETS
        marker = 0x80 if i == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | EVENT_PT, seq + i, timestamp, SSRC)
        body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, n * SAMPLES)
        out.append(header + body)
    return out


def rfc4733_pcap(digit: str) -> bytes:
    """A pcap (microsecond timestamps, Ethernet) of one digit's packets, 20 ms apart."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, packet in enumerate(rfc4733_packets(digit)):
        frame = _frame(packet)
        usec = i * 20_000
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    return b"".join(out)


def pcap_path(digit: str) -> Path:
    return DATA / f"rfc4733_{'star' if digit == '*' else 'hash' if digit == '#' else digit}.pcap"


if __name__ == "__main__":  # regenerate the committed files
    for d in "19":
        pcap_path(d).write_bytes(rfc4733_pcap(d))
