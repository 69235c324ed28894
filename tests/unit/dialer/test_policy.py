from datetime import UTC, datetime

import pytest

from ringcast.dialer.policy import RetryDecision, RetryPolicy, Window, earliest_dial_time
from ringcast.domain import Outcome


def test_retry_policy_retries_listed_outcomes_up_to_the_cap() -> None:
    policy = RetryPolicy.from_body({"attempts": 2, "delay": 30, "on": ["busy", "no-answer"]})
    assert policy.decide(Outcome.BUSY, 1) == RetryDecision(attempt=2, delay=30.0)
    assert policy.decide(Outcome.NO_ANSWER, 2) == RetryDecision(attempt=3, delay=30.0)
    assert policy.decide(Outcome.BUSY, 3) is None  # two extra attempts used
    assert policy.decide(Outcome.DECLINED, 1) is None
    assert policy.decide(Outcome.ANSWERED, 1) is None


def test_no_retry_by_default() -> None:
    assert RetryPolicy.from_body(None).decide(Outcome.BUSY, 1) is None


def test_window_open_now_and_next_opening() -> None:
    sched = {
        "window": {"start": "09:00", "end": "20:00", "days": ["mon", "tue"]},
        "timezone": "Europe/Riga",
    }
    # Monday 2026-11-23 10:00 Riga (UTC+2) = 08:00 UTC: open
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert earliest_dial_time(monday, sched) == monday
    # Tuesday 21:00 Riga: closed until next Monday 09:00 Riga = 07:00 UTC
    tuesday_late = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
    assert earliest_dial_time(tuesday_late, sched) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def test_recipient_timezone_overrides_request_timezone() -> None:
    sched = {"window": {"start": "09:00", "end": "17:00"}, "timezone": "UTC"}
    now = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)  # 08:30 UTC, 17:30 in Tokyo
    assert earliest_dial_time(now, sched) == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert earliest_dial_time(now, sched, "Asia/Tokyo") == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def test_not_before_and_window_combine() -> None:
    sched = {
        "not_before": "2026-11-25T21:00:00Z",
        "window": {"start": "09:00", "end": "20:00"},
        "timezone": "UTC",
    }
    now = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
    assert earliest_dial_time(now, sched) == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_window_across_midnight() -> None:
    w = Window.from_schedule({"window": {"start": "22:00", "end": "02:00"}})
    assert w is not None
    late = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert w.next_open(late) == late
    midday = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert w.next_open(midday) == datetime(2026, 11, 23, 22, 0, tzinfo=UTC)


def test_window_without_days_is_an_error() -> None:
    w = Window.from_schedule({"window": {"start": "09:00", "end": "10:00", "days": []}})
    assert w is not None
    # empty list means "every day" (falls back to all days)
    assert w.days == frozenset(range(7))
    bad = Window(start=w.start, end=w.end, days=frozenset(), tz=w.tz)
    with pytest.raises(ValueError, match="calling window has no days"):
        bad.next_open(datetime(2026, 11, 23, tzinfo=UTC))
