"""Plain data shared by every layer: results, outcomes, and time formats. No I/O."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

RECORD_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the article's "2018-05-02 12:15:32", always UTC


class Result(enum.StrEnum):
    """A call record's `result`: where the call is in its life."""

    QUEUED = "queued"
    DIALING = "dialing"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_RESULTS


# Bounds of every configurable concurrency and call-rate limit (node, trunk,
# request): wide enough for any real trunk, narrow enough that no arithmetic on
# them (token buckets, retry times, database integers) can overflow.
MAX_CALLS_LIMIT = 100_000  # concurrent calls
CPS_MIN, CPS_MAX = 0.001, 10_000.0  # new calls per second

FINAL_RESULTS = frozenset({Result.COMPLETED, Result.FAILED, Result.CANCELED})
LIVE_RESULTS = frozenset({Result.DIALING, Result.RINGING, Result.IN_PROGRESS})


class Outcome(enum.StrEnum):
    """How a finished call ended, in the words an operator uses."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    DECLINED = "declined"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"
    SUPPRESSED = "suppressed"  # on the do-not-call list: never dialed


def utcnow() -> datetime:
    """Now, in UTC, to the second (records carry whole seconds)."""
    return datetime.now(UTC).replace(microsecond=0)


def now_precise() -> datetime:
    """Now, in UTC, to the microsecond: for scheduling (retry delays, windows,
    heartbeats), where rounding down to the second would fire early."""
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """A record time as the article writes it: UTC `YYYY-MM-DD HH:MM:SS`."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(RECORD_TIME_FORMAT)
