"""The flood gate's global budget and its bounded table, with a fake clock (no sockets)."""

from __future__ import annotations

import logging

import pytest

from ringcast.sip.flood import FLOOD_LOG_WINDOW, FloodGate, exempt
from ringcast.sip.stateless import header_tag


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_global_budget_bounds_many_sources() -> None:
    clock = FakeClock()
    gate = FloodGate(50.0, 100, total_rate=200.0, clock=clock)
    assert gate.total_burst == 200.0  # one second's worth
    admitted = [gate.admit(f"127.0.{n // 250}.{n % 250}") for n in range(1000)]
    assert admitted == [True] * 200 + [False] * 800  # each source sent once: all global drops
    assert (gate.dropped, gate.dropped_total) == (800, 800)
    clock.now += 0.5  # 100 global tokens back
    assert sum(gate.admit(f"10.0.0.{n}") for n in range(150)) == 100
    assert gate.dropped_total == 850


def test_source_budget_is_checked_first() -> None:
    """A loud source is stopped by its own bucket and does not spend the others' share."""
    clock = FakeClock()
    gate = FloodGate(10.0, 5, total_rate=20.0, clock=clock)
    assert [gate.admit("198.51.100.1") for _ in range(50)] == [True] * 5 + [False] * 45
    assert (gate.dropped, gate.dropped_total) == (45, 0)
    assert sum(gate.admit(f"198.51.100.{n}") for n in range(2, 40)) == 15  # 20 - 5 spent
    assert gate.dropped_total == 38 - 15


def test_no_global_budget() -> None:
    gate = FloodGate(1.0, 1, clock=FakeClock())
    assert gate.total_rate is None
    assert all(gate.admit(f"192.0.2.{n}") for n in range(250))


def test_global_drops_are_warned_about_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    gate = FloodGate(50.0, 5, total_rate=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="ringcast.sip.flood"):
        assert sum(gate.admit(f"203.0.113.{n}") for n in range(100)) == 10
        clock.now += FLOOD_LOG_WINDOW  # the bucket refills to its burst (10)
        assert sum(gate.admit(f"203.0.114.{n}") for n in range(200)) == 10
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "SIP flood: dropped 1 requests unanswered since the last warning"
        " (limit 10.0/s from all sources together; 11 sources seen lately)",
        "SIP flood: dropped 90 requests unanswered since the last warning"
        " (limit 10.0/s from all sources together; 111 sources seen lately)",
    ]
    assert gate.dropped_total == 90 + 190


def test_table_stays_bounded_under_spoofed_sources() -> None:
    gate = FloodGate(50.0, 100, total_rate=1e9, size=1000, clock=FakeClock())
    for n in range(40_000):
        gate.admit(f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert len(gate) == 1000


@pytest.mark.parametrize(
    ("rate", "burst", "total", "message"),
    [
        (0.0, 1, None, "flood_rate must be > 0, not 0.0"),
        (1.0, 0, None, "flood_burst must be >= 1, not 0"),
        (1.0, 1, 0.0, "flood_total_rate must be > 0, not 0.0"),
    ],
)
def test_bad_limits(rate: float, burst: int, total: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        FloodGate(rate, burst, total_rate=total)


@pytest.mark.parametrize(
    ("data", "exempted"),
    [
        (b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", True),  # responses are never limited
        (b"BYE sip:a@b SIP/2.0\r\nCall-ID: ours@ringcast\r\n\r\n", True),
        (b"BYE sip:a@b SIP/2.0\r\ni: ours@ringcast\r\n\r\n", True),  # compact form
        (b"BYE sip:a@b SIP/2.0\r\nCall-ID: theirs\r\n\r\n", False),
        (b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", False),
    ],
)
def test_exempt(data: bytes, exempted: bool) -> None:
    assert exempt(data, {"ours@ringcast"}) is exempted


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("<sip:a@b>;tag=abc", "abc"),
        ("<sip:a@b> ; TAG = x-1 ;other=2", "x-1"),
        ('"x;tag=no" <sip:a@b;tag=no>', None),  # inside the display name / URI: not a tag
        ("sip:a@b;tag=t9", "t9"),
        ("<sip:a@b>", None),
        ("", None),
    ],
)
def test_header_tag(value: str, tag: str | None) -> None:
    assert header_tag(value) == tag
