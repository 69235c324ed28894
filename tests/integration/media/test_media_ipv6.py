"""RTP over IPv6 and on a dual-stack socket (issue 15 part 5), on ::1 and 127.0.0.1.

A session bound to ``::`` serves a callee of either family from one port pair:
an IPv4 callee is reached (and latched) through its v4-mapped address, yet the
session reports plain IPv4; an IPv6 address written another way in the SDP
(``0:0::1``) is the same source for symmetric RTP; a packet from the other
family's loopback is a stranger and neither latches nor counts.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from ringcast.errors import MediaError
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


def udp(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.fixture
def v4() -> Iterator[socket.socket]:
    with udp("127.0.0.1") as s:
        yield s


@pytest.fixture
def v6() -> Iterator[socket.socket]:
    with udp("::1") as s:
        yield s


def audio(seq: int) -> bytes:
    return build_rtp(b"\xff" * 160, payload_type=0, seq=seq, timestamp=seq * 160, ssrc=0xF00)


async def test_dual_stack_session_latches_an_ipv4_callee(
    clock: RtpClock, allocator: PortAllocator, v4: socket.socket, v6: socket.socket
) -> None:
    """Bound to ``::``: the IPv6 loopback is a stranger to a call whose SDP names
    127.0.0.1; the IPv4 callee latches, and the session says where in IPv4."""
    sdp = udp("127.0.0.1")
    session = await MediaSession.open(clock, allocator, bind_host="::")
    try:
        session.start("127.0.0.1", sdp.getsockname()[1], 0, "PCMU", 101)
        v6.sendto(audio(1), ("::1", session.local_port))
        await asyncio.sleep(0.1)
        assert session.strangers == 1
        assert session.remote == ("127.0.0.1", sdp.getsockname()[1])
        v4.sendto(audio(2), ("127.0.0.1", session.local_port))
        await asyncio.sleep(0.1)
        assert session.remote == v4.getsockname()
        assert session.packets_received == 1
    finally:
        await session.close()
        sdp.close()


async def test_ipv6_address_written_another_way_latches(
    clock: RtpClock, allocator: PortAllocator, v6: socket.socket
) -> None:
    """SDP ``c=IN IP6 0:0::1`` and RTP from ``::1`` are one address (RFC 5952
    forms differ, the address does not)."""
    sdp = udp("::1")
    session = await MediaSession.open(clock, allocator, bind_host="::1")
    try:
        session.start("0:0::1", sdp.getsockname()[1], 0, "PCMU", 101)
        assert session.remote == ("::1", sdp.getsockname()[1])
        v6.sendto(audio(1), ("::1", session.local_port))
        await asyncio.sleep(0.1)
        assert session.strangers == 0
        assert session.remote == ("::1", v6.getsockname()[1])
    finally:
        await session.close()
        sdp.close()


async def test_an_ipv6_address_this_host_lacks_is_a_media_error(
    clock: RtpClock, allocator: PortAllocator
) -> None:
    """An address this host lacks is a MediaError naming it, not a crash."""
    with pytest.raises(MediaError, match=r"cannot (bind RTP port \d+ on|open an RTP socket)"):
        await MediaSession.open(clock, allocator, bind_host="2001:db8::1")
