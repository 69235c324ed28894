"""Garbage-collector settings for a long-running server process.

A ringcast process holds a few hundred thousand long-lived objects once it
has started (FastAPI, SQLAlchemy, pydantic, numpy and their caches). CPython's
full collections walk all of them: measured at ~200 ms each under call load,
a stall that every RTP stream of the process feels as a late packet. Objects
alive at readiness live as long as the process, so `settle` moves them out of
the collector's sight (gc.freeze) and makes young collections rarer, as
calls allocate many short-lived containers.

Finished calls are freed by reference counting (no cycles: issue 14), so the
collector has little to find; :data:`STATS` measures every collection's pause
through ``gc.callbacks`` and ``/metrics`` reports it, so an operator sees when
that stops being true.
"""

from __future__ import annotations

import bisect
import gc
import time
from dataclasses import dataclass, field
from typing import Any

GEN0_THRESHOLD = 10_000  # CPython's default is 700
LONG_PAUSE = 0.020  # seconds: one RTP packet interval; a longer pause delays every stream
PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0)  # seconds, histogram bounds


@dataclass
class GcStats:
    """Pauses of the cyclic garbage collector in this process (``gc.callbacks``)."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])  # per generation
    pause_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    collected: int = 0  # objects found in reference cycles
    long_pauses: int = 0  # collections that took longer than LONG_PAUSE
    max_pause: float = 0.0
    # pauses per PAUSE_BUCKETS bound (the last entry: longer than every bound)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(PAUSE_BUCKETS) + 1))
    _started: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.pause_seconds[generation] += pause
        self.collected += int(info.get("collected", 0))
        self.max_pause = max(self.max_pause, pause)
        self.buckets[bisect.bisect_left(PAUSE_BUCKETS, pause)] += 1
        if pause > LONG_PAUSE:
            self.long_pauses += 1

    def install(self) -> None:
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)


STATS = GcStats()


def settle() -> None:
    """Call once the process is ready to work."""
    STATS.install()
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
