"""The same-run baseline of the per-packet benches: what one streaming call does
per 20 ms packet, send one RTP packet on a connected socket (process time).

    from send_baseline import rtp_packets, send_cost

`bench/amd_cpu.py` and `bench/recording.py` compare the Python work of one
callee packet with this figure, measured in the same run on the same packets.
"""

from __future__ import annotations

import socket
import time

import numpy as np

from ringcast.media.codecs import get_codec
from ringcast.rtp.packet import build_rtp

PACKET = 160  # PCMU bytes per 20 ms RTP packet


def rtp_packets(pcm: np.ndarray) -> list[bytes]:
    """`pcm` (8 kHz int16) as PCMU RTP packets of 20 ms, one SSRC, in sequence."""
    payload = get_codec("PCMU").encode(pcm)
    return [
        build_rtp(
            payload[i : i + PACKET], payload_type=0, seq=n & 0xFFFF, timestamp=PACKET * n, ssrc=1
        )
        for n, i in enumerate(range(0, len(payload) - PACKET + 1, PACKET))
    ]


def send_cost(pkts: list[bytes], count: int) -> float:
    """Process seconds per packet to send `count` of `pkts` (cycled) on a connected
    UDP socket to a loopback sink nobody reads."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out.connect(sink.getsockname())
        t0 = time.process_time()
        for i in range(count):
            out.send(pkts[i % len(pkts)])
        return (time.process_time() - t0) / count
    finally:
        out.close()
        sink.close()
