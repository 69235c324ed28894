"""The callee's audio reaches Python only while someone listens (MediaSession.listen,
in-band DTMF), through the kernel socket filter too; in-band digits count like
RFC 4733 events (real sockets on 127.0.0.1, no SIP)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from ringcast.media.codecs import float_to_pcm16, get_codec
from ringcast.media.prompt import dtmf_tone
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.packet import build_rtp


@pytest.fixture
async def clock() -> AsyncIterator[RtpClock]:
    c = RtpClock()
    yield c
    await c.stop()


@pytest.fixture
def allocator() -> PortAllocator:
    base = random.randrange(40000, 59000, 2)
    return PortAllocator(base, base + 20)


@pytest.fixture
def callee() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    yield s
    s.close()


def packets(pcm: np.ndarray, seq: int = 1) -> list[bytes]:
    payload = get_codec("PCMU").encode(pcm)
    return [
        build_rtp(payload[i : i + 160], payload_type=0, seq=seq + n, timestamp=160 * n, ssrc=7)
        for n, i in enumerate(range(0, len(payload) - 159, 160))
    ]


async def send(sock: socket.socket, port: int, pkts: list[bytes]) -> None:
    for p in pkts:
        sock.sendto(p, ("127.0.0.1", port))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.1)


def tones(*keys: str) -> np.ndarray:
    gap = np.zeros(800, dtype=np.float32)
    parts = [gap]
    for k in keys:
        parts += [dtmf_tone(k, 0.12), gap]
    return float_to_pcm16(np.concatenate(parts))


async def test_inband_digits_without_telephone_event(
    clock: RtpClock, allocator: PortAllocator, callee: socket.socket
) -> None:
    async with await MediaSession.open(clock, allocator, bind_host="127.0.0.1") as media:
        host, port = callee.getsockname()
        media.start(host, port, 0, "PCMU", None, 101)  # the answer had no telephone-event
        assert media.inband_dtmf
        await send(callee, media.local_port, packets(tones("4")))  # latches, connects, filters
        await send(callee, media.local_port, packets(tones("2"), seq=100))  # through the filter
        assert media.dtmf_received == "42"
        assert media.inband_digits == 2


async def test_tones_are_not_read_when_telephone_event_was_negotiated(
    clock: RtpClock, allocator: PortAllocator, callee: socket.socket
) -> None:
    async with await MediaSession.open(clock, allocator, bind_host="127.0.0.1") as media:
        host, port = callee.getsockname()
        media.start(host, port, 0, "PCMU", 101, 101)
        assert not media.inband_dtmf
        await send(callee, media.local_port, packets(tones("4", "2")))
        assert media.dtmf_received == ""


async def test_a_listener_hears_the_callee_until_it_stops(
    clock: RtpClock, allocator: PortAllocator, callee: socket.socket
) -> None:
    heard: list[np.ndarray] = []
    async with await MediaSession.open(clock, allocator, bind_host="127.0.0.1") as media:
        host, port = callee.getsockname()
        media.start(host, port, 0, "PCMU", 101, 101)
        audio = float_to_pcm16((0.3 * np.sin(np.arange(1600) * 0.3)).astype(np.float32))
        await send(callee, media.local_port, packets(audio[:160]))  # latch: the filter is on
        received = media.packets_received
        await send(callee, media.local_port, packets(audio[160:], seq=2))
        assert media.packets_received == received  # the kernel dropped the audio unread
        media.listen(heard.append)
        await send(callee, media.local_port, packets(audio, seq=20))
        assert len(heard) == 10
        expected = get_codec("PCMU").decode(get_codec("PCMU").encode(audio))
        assert np.array_equal(np.concatenate(heard), expected)
        media.unlisten(heard.append)
        received = media.packets_received
        await send(callee, media.local_port, packets(audio, seq=40))
        assert len(heard) == 10 and media.packets_received == received
