"""A finished call is freed by reference counting: no cycle is left for the collector.

A full collection of a heap holding thousands of finished calls stalled the
shared RTP clock of every live call (issue 14: 2.6 s pauses). Calls through the
dialer's ``place_call`` (SIP, RTP session, prompt) to a real SIPp callee must
leave nothing behind once the endpoint stops remembering them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_stream_lib import job_to
from sipp import SippUas

from ringcast.dialer.call import CallContext, place_call
from ringcast.domain import Outcome
from ringcast.media import prepare_prompt
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.sip import OutboundCall, SipEndpoint

pytestmark = pytest.mark.sipp

CALLS = 20


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cycle collector stopped, so what it would find is still there to count."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_finished_calls_leave_no_garbage(
    endpoint: SipEndpoint, tmp_path: Path, collector_off: None
) -> None:
    uas = SippUas("uas_answer_load.xml", tmp_path, trace=False).start()
    clock = RtpClock()
    base = random.randrange(40000, 58000, 2)
    ctx = CallContext(
        sip=endpoint, clock=clock, ports=PortAllocator(base, base + 200), rtp_bind_host="127.0.0.1"
    )
    try:
        prompt = await prepare_prompt([{"pause": 0.2}])

        async def one(n: int) -> Outcome:
            job = dataclasses.replace(job_to(uas.uri("alice")), call_id=f"gc{n}")
            return (await place_call(job, prompt, ctx)).outcome

        # The endpoint forgets a call 64*T1 after it ends; its BYE transaction
        # lingers for Timer K (T4) to absorb retransmitted 200s.
        linger = max(endpoint.timers.b, endpoint.timers.t4) + 0.5
        await asyncio.gather(*(one(n) for n in range(3)))  # warm-up: caches, first imports
        await asyncio.sleep(linger)
        gc.collect()
        # Calls and sessions of earlier tests in this process are not this test's to judge.
        earlier = weakref.WeakSet(
            o for o in gc.get_objects() if isinstance(o, OutboundCall | MediaSession)
        )
        outcomes = await asyncio.gather(*(one(n) for n in range(3, 3 + CALLS)))
        assert outcomes == [Outcome.ANSWERED] * CALLS
        await asyncio.sleep(linger)
        alive = [
            o
            for o in gc.get_objects()
            if isinstance(o, OutboundCall | MediaSession) and o not in earlier
        ]
        assert not alive, f"{len(alive)} calls or media sessions still referenced: {alive[:3]}"
        found = gc.collect()
        assert found < CALLS, f"{found} objects in reference cycles after {CALLS} calls"
    finally:
        await clock.stop()
        uas.stop()
