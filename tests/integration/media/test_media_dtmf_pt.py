"""RFC 4733 payload types are per direction (RFC 3264 §5.1): a real SIPp callee
answers telephone-event as 96 to our offer of 101.

We must send events with 96 (the callee's type) and recognise the callee's
events on 101 (ours), through the kernel socket filter too.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from media_stream_lib import RtpSink, job_to
from sipp import SippUas

from ringcast.dialer.call import CallContext, place_call
from ringcast.domain import Outcome
from ringcast.media import prepare_prompt
from ringcast.rtp import PortAllocator, RtpClock
from ringcast.rtp.packet import build_rtp
from ringcast.sip import SipEndpoint

pytestmark = pytest.mark.sipp

HERE = Path(__file__).parent


async def test_events_received_on_our_type_sent_on_theirs(
    endpoint: SipEndpoint, tmp_path: Path
) -> None:
    sink = RtpSink.open()
    uas = SippUas(
        HERE / "uas_answer_te96.xml", tmp_path, keys={"rtp_sink_port": str(sink.port)}, max_calls=1
    )
    uas.start()
    clock = RtpClock()
    base = random.randrange(40000, 59000, 2)
    ctx = CallContext(
        sip=endpoint,
        clock=clock,
        ports=PortAllocator(base, base + 20),
        rtp_bind_host="127.0.0.1",
    )
    prompt = await prepare_prompt([{"dtmf": "1"}, {"pause": 1.5}])
    job = job_to(uas.uri("alice"))
    try:
        call = asyncio.create_task(place_call(job, prompt, ctx))
        ours = await sink.first_sender_port()  # ringcast's RTP port (the offer's m=audio)
        # One audio packet first: ringcast latches on it (symmetric RTP), connects
        # and attaches its socket filter, which must then let PT 101 through.
        sink.rtp.sendto(
            build_rtp(b"\xff" * 160, payload_type=0, seq=1, timestamp=1, ssrc=0x5EED),
            ("127.0.0.1", ours),
        )
        await asyncio.sleep(0.1)
        sink.send_event(ours, 5, ts=1000, seq=2)  # PT 101: the type ringcast offered
        report = await asyncio.wait_for(call, 10)
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
    finally:
        uas.stop()
        await clock.stop()
        sink.close()
    assert report.outcome is Outcome.ANSWERED
    assert report.dtmf == "5"
    sent = {d for _ts, d, _end, _dur in sink.events(96)}
    assert sent == {"1"} and not sink.events(101)  # sent with the callee's type
