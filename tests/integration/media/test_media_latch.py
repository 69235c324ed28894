"""Symmetric RTP latches only on a trusted source IP (RTP bleed, AST-2017-005).

A "stranger" socket on 127.0.0.3 sends RTP to ringcast's media port: it must
neither take the stream nor inject digits. The SDP address on another port
(the callee's real source) and the IP the call's SIP goes to (a callee behind
NAT) may latch. No test here makes ringcast send anything to 127.0.0.3: when a
latch points there, the session is re-aimed at 127.0.0.1 before it closes (its
RTCP BYE), and nothing is played.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from media_stream_lib import RtpSink, job_to
from sipp import SippUas

from ringcast.dialer.call import CallContext, place_call
from ringcast.domain import Outcome
from ringcast.media import prepare_prompt
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.packet import build_event, build_rtp
from ringcast.sip import SipEndpoint

HERE = Path(__file__).parent
STRANGER_IP = "127.0.0.3"


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
def stranger() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((STRANGER_IP, 0))
    s.setblocking(False)
    yield s
    s.close()


def audio(seq: int) -> bytes:
    return build_rtp(b"\xff" * 160, payload_type=0, seq=seq, timestamp=seq * 160, ssrc=0xBAD)


def digit(event: int, seq: int) -> list[bytes]:
    """A whole RFC 4733 key press (PT 101), start to end."""
    return [
        build_rtp(
            build_event(event, end=i >= 2, duration=160 * (i + 1)),
            payload_type=101,
            seq=seq + i,
            timestamp=4000,
            ssrc=0xBAD,
            marker=i == 0,
        )
        for i in range(4)
    ]


async def close_safely(session: MediaSession, callee_port: int) -> None:
    """Close, re-aimed at 127.0.0.1 first: the RTCP BYE must not go to a stranger."""
    if session.remote is not None and session.remote[0] != "127.0.0.1":
        session.start("127.0.0.1", callee_port, 0, "PCMU", 101)
    await session.close()


async def test_stranger_neither_latches_nor_sends_digits(
    clock: RtpClock, allocator: PortAllocator, stranger: socket.socket
) -> None:
    sdp = RtpSink.open()  # the address the SDP answer names
    callee = RtpSink.open()  # the callee's real RTP source: same IP, another port
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        session.start("127.0.0.1", sdp.port, 0, "PCMU", 101)
        ours = ("127.0.0.1", session.local_port)
        stranger.sendto(audio(1), ours)
        for pkt in digit(9, 2):
            stranger.sendto(pkt, ours)
        await asyncio.sleep(0.1)
        assert session.remote == ("127.0.0.1", sdp.port)
        assert session.dtmf_received == ""
        callee.rtp.sendto(audio(1), ours)  # the SDP's IP from another port: latches
        await asyncio.sleep(0.1)
        assert session.remote == ("127.0.0.1", callee.port)
    finally:
        await close_safely(session, sdp.port)
        sdp.close()
        callee.close()


async def test_the_sip_peer_address_may_latch(
    clock: RtpClock, allocator: PortAllocator, stranger: socket.socket
) -> None:
    """Behind NAT the SDP names a private address and RTP comes from the address
    the call's SIP goes to: `latch_hosts`. (127.0.0.3 plays that address here;
    nothing is played, so nothing is sent to it.)"""
    sdp = RtpSink.open()
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    try:
        session.start("127.0.0.1", sdp.port, 0, "PCMU", 101, latch_hosts=[STRANGER_IP])
        stranger.sendto(audio(1), ("127.0.0.1", session.local_port))
        await asyncio.sleep(0.1)
        assert session.remote == stranger.getsockname()
    finally:
        await close_safely(session, sdp.port)
        sdp.close()


@pytest.mark.sipp
async def test_stranger_during_a_sipp_call(
    sipp_bin: str, stranger: socket.socket, allocator: PortAllocator, tmp_path: Path
) -> None:
    """A real call (SIPp answers with RTP at the sink): the stranger's RTP and
    digit change nothing and it receives nothing; the callee's digit counts."""
    sink = RtpSink.open()
    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
    await ep.start()
    clock = RtpClock()
    uas = SippUas(
        HERE / "uas_answer_sink.xml", tmp_path, keys={"rtp_sink_port": str(sink.port)}, max_calls=1
    )
    uas.start()
    try:
        ctx = CallContext(sip=ep, clock=clock, ports=allocator, rtp_bind_host="127.0.0.1")
        prompt = await prepare_prompt([{"pause": 1.5}])
        job = job_to(uas.uri("alice"))
        call = asyncio.create_task(place_call(job, prompt, ctx))
        ours = ("127.0.0.1", await sink.first_sender_port())
        stranger.sendto(audio(1), ours)
        for pkt in digit(9, 2):
            stranger.sendto(pkt, ours)
        await asyncio.sleep(0.2)
        sink.send_event(ours[1], 5, ts=1000, seq=10)  # the callee, from its SDP address
        report = await asyncio.wait_for(call, 10)
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
    finally:
        uas.stop()
        await ep.close()
        await clock.stop()
        sink.close()
    with pytest.raises(BlockingIOError):
        stranger.recvfrom(2048)  # not one packet reached the stranger
    assert report.outcome is Outcome.ANSWERED
    assert report.dtmf == "5"
    assert len([p for p in sink.packets if p.data[1] & 0x7F == 0]) == 75  # the whole 1.5 s
