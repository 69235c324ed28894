"""Policies the claim loop consults: retry after an outcome, and calling windows.

Both are pure functions of their inputs (STYLE habit 7): the loop that dials
never decides these itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ringcast.domain import Outcome

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class RetryDecision:
    """Dial the recipient again, `delay` seconds from now, as attempt `attempt`."""

    attempt: int
    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    """`retry` of a request: up to `attempts` extra attempts for outcomes in `on`.

    `attempts` counts re-dials, so attempts=1 means at most two INVITE
    transactions for a recipient; the cap is per recipient, not per request.
    """

    attempts: int = 0
    delay: float = 60.0
    on: frozenset[str] = frozenset()

    @classmethod
    def from_body(cls, retry: Mapping[str, Any] | None) -> RetryPolicy:
        if not retry:
            return cls()
        return cls(
            attempts=int(retry.get("attempts", 0)),
            delay=float(retry.get("delay", 60.0)),
            on=frozenset(str(x) for x in retry.get("on", ("busy", "no-answer"))),
        )

    def decide(self, outcome: Outcome | str, attempt: int) -> RetryDecision | None:
        """What to do after `attempt` (1-based) ended with `outcome`."""
        if str(outcome) not in self.on or attempt > self.attempts:
            return None
        return RetryDecision(attempt=attempt + 1, delay=self.delay)


@dataclass(frozen=True)
class Window:
    """A daily calling window in a time zone: [start, end) on the listed days.

    A window whose end is before its start spans midnight (e.g. 22:00-02:00);
    the day that counts is the day the window opened.
    """

    start: time
    end: time
    days: frozenset[int]  # 0 = Monday
    tz: ZoneInfo

    @classmethod
    def from_schedule(
        cls, schedule: Mapping[str, Any] | None, timezone: str | None = None
    ) -> Window | None:
        if not schedule or not schedule.get("window"):
            return None
        w = schedule["window"]
        days: Sequence[str] = w.get("days") or DAY_NAMES
        return cls(
            start=time.fromisoformat(w["start"]),
            end=time.fromisoformat(w["end"]),
            days=frozenset(DAY_NAMES.index(d.lower()[:3]) for d in days),
            tz=ZoneInfo(timezone or schedule.get("timezone") or "UTC"),
        )

    def _open_span(self, day: datetime) -> tuple[datetime, datetime]:
        start = datetime.combine(day.date(), self.start, self.tz)
        end = datetime.combine(day.date(), self.end, self.tz)
        if end <= start:
            end += timedelta(days=1)
        return start, end

    def next_open(self, now: datetime) -> datetime:
        """`now` if the window is open at `now`, else when it next opens (UTC)."""
        local = now.astimezone(self.tz)
        for offset in range(-1, 8):
            day = local + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            start, end = self._open_span(day)
            if start <= local < end:
                return now
            if start > local:
                return start.astimezone(UTC)
        raise ValueError("calling window has no days")


def earliest_dial_time(
    now: datetime,
    schedule: Mapping[str, Any] | None,
    timezone: str | None = None,
) -> datetime:
    """When a call may be dialed: not before `not_before`, and inside its window.

    `timezone` is the recipient's own zone, which overrides the request's.
    """
    at = now
    if schedule and schedule.get("not_before"):
        nb = datetime.fromisoformat(str(schedule["not_before"]).replace("Z", "+00:00"))
        if nb.tzinfo is None:
            tz = ZoneInfo(timezone or schedule.get("timezone") or "UTC")
            nb = nb.replace(tzinfo=tz)
        at = max(at, nb.astimezone(UTC))
    window = Window.from_schedule(schedule, timezone)
    if window is not None:
        at = window.next_open(at)
    return at
