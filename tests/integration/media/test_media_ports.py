"""RTP port pairs beside another holder of the same range (real sockets on 127.0.0.1)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from ringcast.rtp import MediaSession, PortAllocator, RtpClock

BLOCK = 80  # ports held in a row: 40 pairs, more than MediaSession.open's 32 attempts


def hold(ports: range) -> list[socket.socket] | None:
    """Bind every port of `ports` on 127.0.0.1, or None (and nothing held) if one is taken."""
    held: list[socket.socket] = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            for h in held:
                h.close()
            return None
        held.append(s)
    return held


@pytest.fixture
def held_block() -> Iterator[int]:
    """The first port of BLOCK ports in a row that this test holds, below the
    kernel's ephemeral range."""
    for _ in range(50):
        base = random.randrange(20000, 30000, 2)
        held = hold(range(base, base + BLOCK))
        if held is not None:
            break
    else:
        pytest.fail("no free block of ports to hold")
    try:
        yield base
    finally:
        for s in held:
            s.close()


async def test_a_held_block_of_ports_costs_one_attempt_not_one_per_port(held_block: int) -> None:
    # the allocator's round starts at the held block, as a second process's round
    # would start where the first one's is
    allocator = PortAllocator(held_block, held_block + 3 * BLOCK - 1, start=held_block)
    clock = RtpClock()
    sessions: list[MediaSession] = []
    try:
        for _ in range(5):
            sessions.append(await MediaSession.open(clock, allocator, "127.0.0.1"))
        ports = [s.local_port for s in sessions]
        assert all(not held_block <= p < held_block + BLOCK for p in ports), ports
        assert len(set(ports)) == 5 and allocator.in_use == 5
    finally:
        for s in sessions:
            await s.close()
        await clock.stop()
