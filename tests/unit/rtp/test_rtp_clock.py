"""The shared RtpClock with fake streams (no sockets): pacing, lateness, isolation."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator

import pytest

from ringcast.rtp.clock import RtpClock


class FakeStream:
    def __init__(self, packets: int, *, fail_at: int | None = None) -> None:
        self.sent: list[float] = []
        self.done: list[tuple[bool, BaseException | None]] = []
        self.finished = asyncio.Event()
        self.late_packets = 0
        self.send_errors = 0
        self._next: Callable[[], bytes | bytearray | None] = self._gen(packets, fail_at).__next__
        self._send: Callable[[bytes | bytearray], object] = self._record
        self._loop = asyncio.get_running_loop()

    def _gen(self, packets: int, fail_at: int | None) -> Iterator[bytes | None]:
        for i in range(packets):
            if i == fail_at:
                raise RuntimeError("broken stream")
            yield b"x"

    def _record(self, pkt: bytes | bytearray) -> object:
        self.sent.append(self._loop.time())
        return len(pkt)

    def _clock_done(self, completed: bool, error: BaseException | None) -> None:
        self.done.append((completed, error))
        self.finished.set()


async def wait_done(streams: list[FakeStream]) -> None:
    async with asyncio.timeout(3.0):
        for s in streams:
            await s.finished.wait()


async def test_one_clock_paces_every_stream() -> None:
    clock = RtpClock()
    streams = [FakeStream(15) for _ in range(3)]
    for s in streams:
        clock.add(s)
    assert clock.running
    await wait_done(streams)
    await clock.stop()
    for s in streams:
        assert len(s.sent) == 15
        assert s.done == [(True, None)]
        gaps = [b - a for a, b in zip(s.sent, s.sent[1:], strict=False)]
        assert statistics.median(gaps) == pytest.approx(0.020, abs=0.002)
    # all streams are sent in the same tick
    assert streams[0].sent[5] == pytest.approx(streams[2].sent[5], abs=0.001)
    assert clock.stream_count == 0 and clock.packets_sent == 45


async def test_absolute_deadlines_do_not_drift_and_late_ticks_count() -> None:
    clock = RtpClock()
    s = FakeStream(30)
    clock.add(s)
    await asyncio.sleep(0.1)
    time.sleep(0.08)  # noqa: ASYNC251 - block the loop on purpose: 4 ticks fall due
    await wait_done([s])
    await clock.stop()
    assert clock.late_ticks >= 1 and clock.skipped_ticks == 0
    assert s.late_packets >= 1
    # 30 packets still span 29 ticks of 20 ms: the late ones were caught up
    assert s.sent[-1] - s.sent[0] == pytest.approx(29 * 0.020, abs=0.015)


async def test_far_behind_skips_instead_of_bursting() -> None:
    clock = RtpClock()
    s = FakeStream(40)
    clock.add(s)
    await asyncio.sleep(0.05)
    time.sleep(0.35)  # noqa: ASYNC251 - block the loop on purpose
    await wait_done([s])
    await clock.stop()
    assert clock.skipped_ticks >= 10
    # The skipped ticks are dropped from the stream's timeline, not sent in a
    # burst: its 40 packets span 39 ticks plus every skipped one. (Shorter stalls,
    # such as a loaded machine descheduling the process, are caught up by design,
    # so back-to-back packets alone prove nothing either way.)
    span = s.sent[-1] - s.sent[0]
    assert span >= (39 + clock.skipped_ticks) * 0.020 - 0.010


async def test_broken_stream_does_not_stop_the_others() -> None:
    clock = RtpClock()
    good, bad = FakeStream(10), FakeStream(10, fail_at=3)
    clock.add(bad)
    clock.add(good)
    await wait_done([good, bad])
    await clock.stop()
    assert len(good.sent) == 10 and good.done == [(True, None)]
    assert len(bad.sent) == 3
    ((completed, error),) = bad.done
    assert not completed and isinstance(error, RuntimeError)


async def test_stop_ends_live_streams_not_completed() -> None:
    clock = RtpClock()
    s = FakeStream(1000)
    clock.add(s)
    await asyncio.sleep(0.1)
    await clock.stop()
    assert s.done == [(False, None)] and not clock.running
    n = len(s.sent)
    await asyncio.sleep(0.05)
    assert len(s.sent) == n


def test_ptime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ptime must be > 0 seconds, not 0"):
        RtpClock(0)
