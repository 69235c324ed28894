"""This node's own limits: concurrent calls (`--max-calls`) and new calls per
second (`--cps`).

`Pacer` spaces new calls at a steady rate against an absolute clock, so bursts
never exceed the carrier's calls-per-second and delays never accumulate.
Limits shared by the whole fleet (a request's `max_concurrent` / `cps`, a
trunk's) live in the database: see `ringcast.store.limiter`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CATCH_UP = 0.020  # seconds of lateness a pacer makes up (a busy event loop wakes late)


class Pacer:
    """Calls-per-second limiter on a monotonic clock: call starts follow a fixed
    schedule one interval apart. A start up to CATCH_UP late keeps the schedule
    (the next one comes that much sooner), so a loop that wakes a little late
    does not lose rate at high CPS; after a longer pause the schedule restarts
    from now, so idle time is never banked into a burst. Over any second the
    rate never exceeds `rate` (+ one call), and two starts are never closer than
    `interval - CATCH_UP`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate  # seconds between two call starts
        self._clock = clock
        self._next = clock()

    def ready_in(self) -> float:
        """Seconds until the next call may start (0 when it may start now)."""
        return max(0.0, self._next - self._clock())

    def take(self) -> None:
        """Record one call start: the next one is due one interval after this
        one's scheduled time (or after now, if this one is more than CATCH_UP late)."""
        now = self._clock()
        on_schedule = self._next if now - self._next <= CATCH_UP else now
        self._next = on_schedule + self.interval


@dataclass
class NodeLimits:
    """`max_calls` concurrent calls and `cps` new calls per second on this node."""

    max_calls: int
    cps: float
    clock: Callable[[], float] = time.monotonic
    active: int = 0
    _pacer: Pacer = field(init=False)

    def __post_init__(self) -> None:
        self._pacer = Pacer(self.cps, self.clock)

    def free_channels(self) -> int:
        return max(0, self.max_calls - self.active)

    def ready_in(self) -> float:
        """Seconds until a call may start here (inf while every channel is busy)."""
        if self.active >= self.max_calls:
            return float("inf")
        return self._pacer.ready_in()

    def started(self) -> None:
        self.active += 1
        self._pacer.take()

    def finished(self) -> None:
        self.active -= 1


@dataclass
class Backoff:
    """Scopes (requests) refused by a fleet limit, and until when (monotonic)."""

    clock: Callable[[], float] = time.monotonic
    _until: dict[str, float] = field(default_factory=dict)

    def hold(self, key: str, seconds: float) -> None:
        self._until[key] = self.clock() + seconds

    def held(self) -> list[str]:
        now = self.clock()
        for key in [k for k, t in self._until.items() if t <= now]:
            del self._until[key]
        return list(self._until)
