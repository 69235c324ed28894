"""Rate and concurrency limits for one dialer node.

`Pacer` spaces new calls at a steady rate against an absolute clock (the n-th
call of a pacer is due at start + n / rate), so bursts never exceed the
carrier's calls-per-second and delays never accumulate. `Limits` combines the
node's limits with each request's own `max_concurrent` and `cps`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Pacer:
    """Calls-per-second limiter: a token bucket of depth 1 on a monotonic clock."""

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
        """Record one call start: the next one is due one interval later.

        Idle time is not banked: after a pause the next call is due now, not
        a burst of the calls that "could have" started.
        """
        self._next = max(self._next, self._clock()) + self.interval


@dataclass
class RequestLimit:
    max_concurrent: int | None
    pacer: Pacer | None
    active: int = 0


@dataclass
class Limits:
    """Node limits (`max_calls`, `cps`) and per-request limits, in memory."""

    max_calls: int
    cps: float
    clock: Callable[[], float] = time.monotonic
    active: int = 0
    _node_pacer: Pacer = field(init=False)
    _requests: dict[str, RequestLimit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._node_pacer = Pacer(self.cps, self.clock)

    def free_channels(self) -> int:
        return max(0, self.max_calls - self.active)

    def node_ready_in(self) -> float:
        return self._node_pacer.ready_in()

    def request(self, request_id: str, body: dict[str, object]) -> RequestLimit:
        lim = self._requests.get(request_id)
        if lim is None:
            mc = body.get("max_concurrent")
            cps = body.get("cps")
            lim = RequestLimit(
                max_concurrent=int(mc) if isinstance(mc, int | float) else None,
                pacer=Pacer(float(cps), self.clock) if isinstance(cps, int | float) else None,
            )
            self._requests[request_id] = lim
        return lim

    def blocked_requests(self) -> list[str]:
        """Requests that may not start a call right now (at their own limits)."""
        out = []
        for rid, lim in self._requests.items():
            full = lim.max_concurrent is not None and lim.active >= lim.max_concurrent
            paced = lim.pacer is not None and lim.pacer.ready_in() > 0
            if full or paced:
                out.append(rid)
        return out

    def may_start(self, request_id: str) -> bool:
        lim = self._requests.get(request_id)
        if self.active >= self.max_calls or self._node_pacer.ready_in() > 0:
            return False
        if lim is None:
            return True
        if lim.max_concurrent is not None and lim.active >= lim.max_concurrent:
            return False
        return lim.pacer is None or lim.pacer.ready_in() <= 0

    def started(self, request_id: str) -> None:
        self.active += 1
        self._node_pacer.take()
        lim = self._requests.get(request_id)
        if lim is not None:
            lim.active += 1
            if lim.pacer is not None:
                lim.pacer.take()

    def finished(self, request_id: str) -> None:
        self.active -= 1
        lim = self._requests.get(request_id)
        if lim is not None:
            lim.active -= 1
            if lim.active <= 0 and (lim.pacer is None or lim.pacer.ready_in() <= 0):
                del self._requests[request_id]
