"""Mid-call media changes from a real SIPp callee reach the RTP stream (RFC 3264 §8, §8.4).

The dialer (`place_call`) plays a prompt while SIPp re-INVITEs: the RTP must
follow each accepted description to the sockets the test owns, and an offer
without the codec in use gets 488 (RFC 3261 §14.2) with the stream unchanged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from media_stream_lib import RtpSink, job_to
from sipp import SippUas

from ringcast.dialer.call import CallContext, place_call
from ringcast.domain import Outcome
from ringcast.media import prepare_prompt
from ringcast.rtp import PortAllocator, RtpClock
from ringcast.rtp.packet import parse_rtp
from ringcast.sip import SipEndpoint

pytestmark = pytest.mark.sipp

HERE = Path(__file__).parent


@pytest.fixture
async def sinks() -> AsyncIterator[list[RtpSink]]:
    opened = [RtpSink.open() for _ in range(3)]
    yield opened
    for s in opened:
        s.close()


async def call_through(
    endpoint: SipEndpoint, uas: SippUas, seconds: float, tmp_path: Path
) -> tuple[object, int]:
    """Play `seconds` of silence through place_call to SIPp's `alice`; (report, sipp rc)."""
    clock = RtpClock()
    base = random.randrange(40000, 59000, 2)
    ctx = CallContext(
        sip=endpoint, clock=clock, ports=PortAllocator(base, base + 20), rtp_bind_host="127.0.0.1"
    )
    prompt = await prepare_prompt([{"pause": seconds}])
    job = job_to(uas.uri("alice"), max_duration=seconds + 5)
    try:
        report = await asyncio.wait_for(place_call(job, prompt, ctx), seconds + 10)
        rc = await asyncio.to_thread(uas.wait, 5)
    finally:
        await clock.stop()
    return report, rc


async def test_reinvite_moves_rtp_and_488_keeps_it(
    endpoint: SipEndpoint, sinks: list[RtpSink], tmp_path: Path
) -> None:
    keys = {f"sink{i + 1}": str(s.port) for i, s in enumerate(sinks)}
    uas = SippUas(HERE / "uas_reinvite_move.xml", tmp_path, keys=keys, max_calls=1)
    uas.start()
    try:
        report, rc = await call_through(endpoint, uas, 3.0, tmp_path)
    finally:
        uas.stop()
    assert rc == 0, uas.errors()  # SIPp saw 200, 200, 488 (PCMA-only offer), 200, BYE
    assert report.outcome is Outcome.ANSWERED and report.codec == "PCMU"  # type: ignore[attr-defined]
    s1, s2, s3 = sinks
    assert s1.packets and s2.packets and s3.packets, [len(s.packets) for s in sinks]
    # Each move is a clean cut: nothing goes back to an old address.
    assert s1.packets[-1].at < s2.packets[0].at
    assert s2.packets[-1].at < s3.packets[0].at
    # The refused PCMA offer changed nothing: sink2 kept the stream through it (0.6 s
    # until the 488, 0.6 s after), and the payload type stayed PCMU's.
    assert len(s2.packets) >= 40, len(s2.packets)
    pts = {parse_rtp(p.data).payload_type for s in sinks for p in s.packets}
    assert pts == {0}, pts
    # Our 200 to the SDP-less re-INVITE offers only the codec in use (RFC 3264 §8).
    log = uas.messages()
    offer = log.split("CSeq: 3 INVITE", 2)
    assert len(offer) == 3 and "m=audio" in offer[2].split("CSeq: 3 ACK")[0]
    assert "RTP/AVP 0 101\n" in offer[2].split("CSeq: 3 ACK")[0].replace("\r", "")


async def test_hold_pauses_the_prompt_and_resume_continues_it(
    endpoint: SipEndpoint, sinks: list[RtpSink], tmp_path: Path
) -> None:
    """Answer a=inactive, then sendrecv, sendonly (+ m=video), c=0.0.0.0, session-level
    inactive, sendrecv, each re-INVITE 0.5 s apart (uas_hold_resume.xml checks our
    answers' directions and the rejected m=video). The prompt stands still while held."""
    sink = sinks[0]
    uas = SippUas(
        HERE / "uas_hold_resume.xml",
        tmp_path,
        keys={"sink1": str(sink.port), "sink2": str(sinks[1].port)},
        max_calls=1,
    )
    uas.start()
    to_wall = time.time() - time.monotonic()
    try:
        report, rc = await call_through(endpoint, uas, 1.5, tmp_path)
    finally:
        uas.stop()
    assert rc == 0, uas.errors()
    assert report.outcome is Outcome.ANSWERED  # type: ignore[attr-defined]
    assert not sinks[1].packets  # the rejected video stream got nothing
    # The a=inactive answer: no RTP until the sendrecv re-INVITE 0.5 s later.
    connected = report.connect_time.timestamp()  # type: ignore[attr-defined]
    first = sink.packets[0].at + to_wall
    assert first - connected >= 0.4, first - connected
    # One hold of about 1.5 s (three held re-INVITEs), and the whole prompt was sent:
    # 1.5 s of 20 ms packets, none skipped by the hold.
    assert len(sink.packets) == 75, len(sink.packets)
    pairs = zip(sink.packets, sink.packets[1:], strict=False)
    gaps = [(b.at - a.at, i + 1) for i, (a, b) in enumerate(pairs)]
    longest, at = max(gaps)
    assert 1.2 <= longest <= 1.9, gaps
    assert sorted(g for g, _ in gaps)[-2] < 0.2  # nothing else paused
    before, after = parse_rtp(sink.packets[at - 1].data), parse_rtp(sink.packets[at].data)
    assert after.marker and after.seq == (before.seq + 1) & 0xFFFF
    held_ts = ((after.timestamp - before.timestamp) & 0xFFFFFFFF) / 8000
    assert abs(held_ts - longest) < 0.1, (held_ts, longest)  # RTP time went on
