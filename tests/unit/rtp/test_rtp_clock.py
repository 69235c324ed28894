"""The shared RtpClock with fake streams (no sockets): pacing, lateness, isolation.

Each test runs on an event loop with a virtual clock (:class:`VirtualTimeLoop`):
waiting moves the clock by exactly the wait, and a stalled loop is simulated by
moving it on purpose, so the timings asserted are the clock's own arithmetic,
never how busy the machine running the tests was."""

from __future__ import annotations

import asyncio
import functools
import selectors
import statistics
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from ringcast.rtp.clock import RtpClock


class _InstantSelector(selectors.DefaultSelector):
    """Never waits: a wait for `timeout` seconds moves the loop's virtual clock instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready and timeout:
            self._loop.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_InstantSelector(self))

    def time(self) -> float:
        return self.now


def virtual_time(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        loop = VirtualTimeLoop()
        try:
            loop.run_until_complete(test())
        finally:
            loop.close()

    return run


def stall(seconds: float) -> None:
    """What blocking the event loop for `seconds` looks like to the clock."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop.now += seconds


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


@virtual_time
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
        assert statistics.median(gaps) == pytest.approx(0.020, abs=1e-9)
    # all streams are sent in the same tick
    assert streams[0].sent[5] == streams[2].sent[5]
    assert clock.stream_count == 0 and clock.packets_sent == 45


@virtual_time
async def test_absolute_deadlines_do_not_drift_and_late_ticks_count() -> None:
    clock = RtpClock()
    s = FakeStream(30)
    clock.add(s)
    await asyncio.sleep(0.1)
    stall(0.08)  # the loop blocked: 4 ticks fall due
    await wait_done([s])
    await clock.stop()
    # the ticks that fell due while the loop was blocked run late, at once
    assert clock.late_ticks >= 3 and clock.skipped_ticks == 0
    assert s.late_packets == clock.late_ticks
    # 30 packets still span 29 ticks of 20 ms: the late ones were caught up
    assert s.sent[-1] - s.sent[0] == pytest.approx(29 * 0.020, abs=1e-9)


@virtual_time
async def test_far_behind_skips_instead_of_bursting() -> None:
    clock = RtpClock()
    s = FakeStream(40)
    clock.add(s)
    await asyncio.sleep(0.05)
    stall(0.35)  # the loop blocked
    await wait_done([s])
    await clock.stop()
    assert clock.skipped_ticks >= 15  # 0.35 s behind: about 17 ticks of 20 ms
    # The skipped ticks are dropped from the stream's timeline, not sent in a
    # burst: its 40 packets span 39 ticks plus every skipped one. (Shorter stalls,
    # such as a loaded machine descheduling the process, are caught up by design,
    # so back-to-back packets alone prove nothing either way.)
    span = s.sent[-1] - s.sent[0]
    assert span >= (39 + clock.skipped_ticks) * 0.020 - 0.010


@virtual_time
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


@virtual_time
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


@virtual_time
async def test_half_tick_hooks_run_between_ticks_and_a_late_tick_skips_its_half() -> None:
    loop = asyncio.get_running_loop()
    clock = RtpClock()
    start = loop.time()  # the clock's ticks fall due at start + k * 20 ms
    s = FakeStream(1000)
    clock.add(s)
    halves: list[float] = []

    def broken() -> None:
        raise RuntimeError("broken hook")

    def hook() -> None:
        halves.append(round(loop.time() - start, 6))

    clock.add_half_tick(hook)
    clock.add_half_tick(broken)
    await asyncio.sleep(0.112)  # after the half-tick at 110 ms, before the tick at 120
    assert halves == [0.03, 0.05, 0.07, 0.09, 0.11]  # 10 ms after each tick (from the next)
    assert broken not in clock._half_ticks and hook in clock._half_ticks  # taken off alone
    stall(0.019)  # the tick due at 120 ms runs at 131: past its half (130)
    await asyncio.sleep(0.03)
    ticks = [round(t - start, 6) for t in s.sent]
    assert ticks[-3:] == [0.131, 0.14, 0.16] and halves[5:] == [0.15]  # none at 130
    clock.remove_half_tick(hook)
    await asyncio.sleep(0.1)
    assert halves[5:] == [0.15]
    await clock.stop()


def test_ptime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ptime must be > 0 seconds, not 0"):
        RtpClock(0)
