"""The retry policy of webhook deliveries: when to try a failed attempt again,
and when to give up (Standard Webhooks' schedule, with jitter and a window)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a failed delivery again, and when to give up.

    `delays` are the waits after the 1st, 2nd, ... failed attempt (seconds);
    after them every wait is `cap`. Each wait is scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``. Nothing is scheduled later than `window`
    seconds after the event was created; a failure at or after that moment
    gives up.
    """

    delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    cap: float = 7200.0  # seconds between attempts once `delays` are used up
    window: float = 24 * 3600.0  # seconds after creation during which attempts are made
    jitter: float = 0.2  # ± fraction of each delay

    def delay(self, failures: int, rand: float = 0.5) -> float:
        """The wait after `failures` failed attempts (>= 1); `rand` in [0, 1)."""
        base = self.delays[failures - 1] if failures <= len(self.delays) else self.cap
        base = min(base, self.cap)
        return base * (1.0 - self.jitter + 2.0 * self.jitter * rand)

    def next_attempt(
        self,
        *,
        created_at: datetime,
        now: datetime,
        failures: int,
        rand: float = 0.5,
        retry_after: float | None = None,
    ) -> datetime | None:
        """The time of the next attempt after a failure, or None to give up."""
        deadline = created_at + timedelta(seconds=self.window)
        if now >= deadline:
            return None
        wait = self.delay(failures, rand)
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.cap)
        return min(now + timedelta(seconds=wait), deadline)
