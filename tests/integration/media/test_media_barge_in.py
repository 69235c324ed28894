"""Barge-in and opt-out while a prompt plays, over real UDP on 127.0.0.1.

The callee's RFC 4733 digits come from a test socket; SIP INFO and in-band
digits enter through the same MediaSession.on_digit. Packet counts (not
times) show whether the prompt was cut: a 10 s pause is 500 packets.
"""

from __future__ import annotations

import asyncio

from media_stream_lib import RtpSink

from ringcast.media import prepare_prompt
from ringcast.rtp import MediaSession, PortAllocator, RtpClock

TEN_SECONDS = 500  # packets of 20 ms


async def _session(clock: RtpClock, allocator: PortAllocator, sink: RtpSink) -> MediaSession:
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    return session


async def test_a_digit_during_the_prompt_stops_it_and_answers_the_gather(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt(
        [{"pause": 10}, {"gather": {"digits": 1, "timeout": 60}}, {"pause": 0.2}]
    )
    session = await _session(clock, allocator, sink)
    play = asyncio.create_task(session.play(prompt), name="test-barge-in")
    await asyncio.sleep(0.3)
    sink.send_event(session.local_port, 1, ts=500, seq=1)
    result = await asyncio.wait_for(play, 20)
    assert result.dtmf == "1" and result.completed and not result.optout
    assert session.packets_sent < TEN_SECONDS  # the 10 s pause was cut short
    await session.close()


async def test_the_optout_key_during_the_prompt_opts_out(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt(
        [
            {"pause": 10},
            {"gather": {"digits": 1, "timeout": 60, "optout": "9", "barge_in": False}},
        ]
    )
    session = await _session(clock, allocator, sink)
    play = asyncio.create_task(session.play(prompt), name="test-optout-in-prompt")
    await asyncio.sleep(0.3)
    sink.send_event(session.local_port, 9, ts=700, seq=1)
    await asyncio.sleep(0.1)
    assert session.optout  # at once, though the prompt plays on (barge_in: false)
    result = await asyncio.wait_for(play, 20)
    assert result.optout and result.dtmf == "9"
    assert session.packets_sent >= TEN_SECONDS  # not cut; the gather then did not wait
    assert session.packets_sent < TEN_SECONDS + 60 / 0.020
    await session.close()


async def test_barge_in_false_digits_do_not_answer_the_gather(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt(
        [{"pause": 1}, {"gather": {"digits": 1, "timeout": 1, "barge_in": False}}]
    )
    session = await _session(clock, allocator, sink)
    play = asyncio.create_task(session.play(prompt), name="test-no-barge-in")
    await asyncio.sleep(0.3)
    session.on_digit("4")  # as SIP INFO delivers it
    result = await asyncio.wait_for(play, 20)
    assert result.dtmf == "4"
    assert session.packets_sent >= 100  # the pause and the whole gather timeout
    await session.close()
