"""The kernel socket filter on an RTP socket (Linux SO_ATTACH_FILTER), on loopback."""

from __future__ import annotations

import socket
import sys

import pytest

from ringcast.rtp.packet import build_rtp
from ringcast.rtp.udp import attach_payload_type_filter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux BPF")


def _passed(payload_types: object) -> list[int]:
    """Send one packet of each of PT 0, 8, 96, 101 (with and without marker); which pass."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        attach_payload_type_filter(rx, payload_types)  # type: ignore[arg-type]
        for seq, (pt, marker) in enumerate((p, m) for p in (0, 8, 96, 101) for m in (False, True)):
            pkt = build_rtp(b"\0" * 4, payload_type=pt, seq=seq, timestamp=0, ssrc=1, marker=marker)
            tx.sendto(pkt, rx.getsockname())
        tx.sendto(b"end", rx.getsockname())  # not RTP: byte 1 is 'n' (0x6e)
        got = []
        for _ in range(10):
            try:
                data = rx.recv(2048)
            except TimeoutError:
                break
            got.append(data[1] & 0x7F)
        return got
    finally:
        rx.close()
        tx.close()


def test_filter_passes_every_listed_payload_type() -> None:
    assert _passed((101, 96)) == [96, 96, 101, 101]


def test_filter_single_and_none() -> None:
    assert _passed(101) == [101, 101]
    assert _passed(None) == []
    assert _passed(()) == []
