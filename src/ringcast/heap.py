"""Garbage-collector settings for a long-running server process.

A ringcast process holds a few hundred thousand long-lived objects once it
has started (FastAPI, SQLAlchemy, pydantic, numpy and their caches). CPython's
full collections walk all of them: measured at ~200 ms each under call load,
a stall that every RTP stream of the process feels as a late packet. Objects
alive at readiness live as long as the process, so `settle` moves them out of
the collector's sight (gc.freeze).

Finished calls are freed by reference counting (no cycles: issue 14), so the
collector has little to find, but a collection's pause grows with what it
scans, and every RTP stream of the process waits it out. So (measured in
bench/RESULTS.md, "soak" sections): young collections stay small (a young
pause cost 0.3-5 us of CPU per object scanned here), and full collections,
which scan every object a live or recently ended call holds and found almost
nothing, do not run on their own under load: :func:`collect_when_idle` runs one
when no call is live, and the automatic one remains only as a rare backstop.
:data:`STATS` measures every collection's pause through ``gc.callbacks`` and
``/metrics`` reports it, so an operator sees when that stops being true.
"""

from __future__ import annotations

import bisect
import gc
import time
from dataclasses import dataclass, field
from typing import Any

# A young collection scans the young objects still alive, and under call load those are
# mostly live calls' (a call lives longer than a few collections): its pause grows with
# how much it lets accumulate, while the total work stays about the same (each object is
# scanned once per generation it passes). Small, frequent young collections keep every
# pause short: at 1,000/5 generation-1 collections took up to 14 ms of CPU (p99 12-14 ms)
# in a soak of 8,000 calls at 200/s; at 300/2, at most 3-5 ms (p99 1.8-2.5 ms), at
# the same server CPU per call within noise (bench/RESULTS.md, "GC thresholds").
GEN0_THRESHOLD = 300  # allocations between young collections (CPython's default: 700)
GEN1_THRESHOLD = 2  # young collections between generation-1 ones (default: 10)
# generation-1 collections between automatic full ones (default: 10; CPython also
# waits until a quarter of the old objects are new): a backstop, far apart under load
# (generation-1 collections run ~18 times a second at 200 calls/s: ~75 minutes)
GEN2_THRESHOLD = 80_000
IDLE_FULL_AFTER = 100  # generation-1 collections since the last full one, before an idle one
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
    # The same in this thread's CPU time: a collection's own work. A wall-clock pause
    # longer than its CPU time is time the process waited for a core (a loaded machine),
    # which a smaller collection would not have avoided.
    long_cpu_pauses: int = 0
    max_pause_cpu: float = 0.0
    # pauses per PAUSE_BUCKETS bound (the last entry: longer than every bound)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(PAUSE_BUCKETS) + 1))
    _started: float = 0.0
    _started_cpu: float = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_cpu = time.thread_time()
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        cpu = time.thread_time() - self._started_cpu
        generation = int(info.get("generation", 0))
        self.collections[generation] += 1
        self.pause_seconds[generation] += pause
        self.collected += int(info.get("collected", 0))
        self.max_pause = max(self.max_pause, pause)
        self.buckets[bisect.bisect_left(PAUSE_BUCKETS, pause)] += 1
        if pause > LONG_PAUSE:
            self.long_pauses += 1
        self.max_pause_cpu = max(self.max_pause_cpu, cpu)
        if cpu > LONG_PAUSE:
            self.long_cpu_pauses += 1

    def install(self) -> None:
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)


STATS = GcStats()


def settle() -> None:
    """Call once the process is ready to work."""
    STATS.install()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


def collect_when_idle(live_calls: int) -> bool:
    """Run a full collection now if no call is live and enough has aged since the
    last one (no stream waits on an idle process); True if it ran."""
    if live_calls or gc.get_count()[2] < IDLE_FULL_AFTER:
        return False
    gc.collect()
    return True
