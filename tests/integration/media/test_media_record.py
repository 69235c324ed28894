"""A playlist's `record` item in MediaSession over real sockets on 127.0.0.1 (no SIP):
the callee's audio passes the kernel filter only while recording, a digit ends it
(`finish_on`) without barging into a later gather, and a stop mid-recording (the
call hung up) keeps what was said."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
from integration.media.test_media_listen import allocator, callee, clock, packets, send  # noqa: F401

from ringcast.media import prepare_prompt
from ringcast.media.recorder import StopReason
from ringcast.rtp import MediaSession, PortAllocator, RtpClock


def voice(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.rint(8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


async def test_finish_on_digit_ends_the_recording_not_the_gather(
    clock: RtpClock,  # noqa: F811
    allocator: PortAllocator,  # noqa: F811
    callee: socket.socket,  # noqa: F811
) -> None:
    prompt = await prepare_prompt(
        [
            {"record": {"max": 10, "silence": 0, "finish_on": "#", "beep": False}},
            {"gather": {"digits": 1, "timeout": 0.3}},
        ],
        codecs=["PCMU"],
    )
    async with await MediaSession.open(clock, allocator, bind_host="127.0.0.1") as media:
        host, port = callee.getsockname()
        media.start(host, port, 0, "PCMU", 101, 101)
        play = asyncio.create_task(media.play(prompt))
        await asyncio.sleep(0.1)
        await send(callee, media.local_port, packets(voice(0.6)))
        media.on_digit("5")  # not a finish_on digit: kept, no barge-in into the gather
        await asyncio.sleep(0.1)
        assert not play.done() and not media.recordings[0].done
        media.on_digit("#")
        result = await asyncio.wait_for(play, 5)
    (rec,) = media.recordings
    assert rec.reason is StopReason.DIGIT
    assert 0.4 <= rec.duration <= 0.62  # the packets that passed the filter once connected
    assert result.dtmf == "5#" and result.completed  # the gather timed out on its own
    assert np.abs(rec.pcm()).max() > 4000


async def test_a_stop_mid_recording_keeps_the_audio(
    clock: RtpClock,  # noqa: F811
    allocator: PortAllocator,  # noqa: F811
    callee: socket.socket,  # noqa: F811
) -> None:
    prompt = await prepare_prompt([{"record": {"max": 10, "beep": False}}], codecs=["PCMU"])
    async with await MediaSession.open(clock, allocator, bind_host="127.0.0.1") as media:
        host, port = callee.getsockname()
        media.start(host, port, 0, "PCMU", 101, 101)
        play = asyncio.create_task(media.play(prompt))
        await asyncio.sleep(0.1)
        await send(callee, media.local_port, packets(voice(0.5)))
        play.cancel()  # the callee hung up: the dialer cancels the play task
        await asyncio.gather(play, return_exceptions=True)
        (rec,) = media.recordings
        assert rec.reason is StopReason.HANGUP and rec.duration >= 0.3
        # nobody listens any more: later audio is not read (the filter is back)
        received = media.packets_received
        await send(callee, media.local_port, packets(voice(0.2), seq=500))
        assert media.packets_received == received
