"""Webhook retry schedule, event ids and payloads, the install secret file, how
many rows a claim takes."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ringcast.config import Settings
from ringcast.errors import ConfigError
from ringcast.store.outbox import (
    WEBHOOK_ID_MAX,
    Due,
    Settlement,
    build_payload,
    call_event_id,
    iso_timestamp,
    origin_of,
    request_completed_id,
)
from ringcast.webhooks.ahead import MAX_AHEAD, SLOW_CLAIM, AheadPolicy, claim_size
from ringcast.webhooks.attempt import Attempt, decide, encode_body
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.secret import install_secret
from ringcast.webhooks.sign import decode_secret, generate_secret

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_schedule_without_jitter() -> None:
    b = Backoff()
    waits = [b.delay(n, rand=0.5) for n in range(1, 10)]
    assert waits == [5, 30, 120, 600, 1800, 3600, 7200, 7200, 7200]


@pytest.mark.parametrize("rand", [0.0, 0.999999])
def test_jitter_stays_within_twenty_percent(rand: float) -> None:
    b = Backoff()
    for n in range(1, 12):
        base = b.delay(n, rand=0.5)
        assert base * 0.8 - 1e-9 <= b.delay(n, rand=rand) <= base * 1.2 + 1e-9


def test_attempts_stop_24h_after_creation() -> None:
    b = Backoff()
    now, failures, times = T0, 0, []
    for _ in range(100):
        failures += 1
        nxt = b.next_attempt(created_at=T0, now=now, failures=failures, rand=0.5)
        if nxt is None:
            break
        times.append(nxt)
        now = nxt
    else:
        pytest.fail("never gave up")
    assert times == sorted(times)
    assert times[-1] == T0 + timedelta(hours=24)  # the last attempt is at the deadline
    assert now == T0 + timedelta(hours=24)
    assert 15 <= len(times) <= 20, len(times)
    assert [(t - T0).total_seconds() for t in times[:3]] == [5, 35, 155]


def test_give_up_at_or_after_the_window() -> None:
    b = Backoff()
    end = T0 + timedelta(hours=24)
    assert b.next_attempt(created_at=T0, now=end, failures=3) is None
    assert b.next_attempt(created_at=T0, now=end + timedelta(hours=1), failures=1) is None
    late = b.next_attempt(created_at=T0, now=end - timedelta(seconds=1), failures=1)
    assert late == end  # clamped: one last attempt at the deadline


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    b = Backoff()
    assert b.next_attempt(created_at=T0, now=T0, failures=1, retry_after=90) == T0 + timedelta(
        seconds=90
    )
    assert b.next_attempt(created_at=T0, now=T0, failures=1, retry_after=1) == T0 + timedelta(
        seconds=5
    )
    capped = b.next_attempt(created_at=T0, now=T0, failures=1, retry_after=10**6)
    assert capped == T0 + timedelta(seconds=b.cap)


def test_event_ids_are_stable_bounded_and_dot_free() -> None:
    call_id = "0b8f7c2e-3a1d-4f55-9a8e-0c1d2e3f4a5b"
    a = call_event_id(call_id, 1, "call.completed")
    assert a == call_event_id(call_id, 1, "call.completed")
    assert a != call_event_id(call_id, 2, "call.completed")
    assert a != call_event_id(call_id, 1, "call.failed")
    digits = call_event_id(call_id, 1, "call.digits")
    assert digits == call_event_id(call_id, 1, "call.digits", 1)  # the first gather's
    assert digits != call_event_id(call_id, 1, "call.digits", 2)  # a second gather's
    assert "." not in a and len(a) <= WEBHOOK_ID_MAX
    long = call_event_id(call_id, 123456789, "call.completed")
    assert long.startswith("msg_") and len(long) <= WEBHOOK_ID_MAX and "." not in long
    rid = request_completed_id(call_id)
    assert rid == request_completed_id(call_id) and len(rid) <= WEBHOOK_ID_MAX


def test_payload_shape_and_body_bytes() -> None:
    p = build_payload("call.ringing", {"id": "c1", "to": "sip:\u00e9@x"}, at=T0)
    assert p == {
        "type": "call.ringing",
        "timestamp": "2026-11-26T12:00:00.000000Z",
        "data": {"id": "c1", "to": "sip:\u00e9@x"},
    }
    assert (
        encode_body(p)
        == (
            '{"type":"call.ringing","timestamp":"2026-11-26T12:00:00.000000Z",'
            '"data":{"id":"c1","to":"sip:\u00e9@x"}}'
        ).encode()
    )
    assert iso_timestamp(T0 + timedelta(microseconds=5)).endswith(".000005Z")
    with pytest.raises(ValueError, match="unknown webhook event type 'call.exploded'"):
        build_payload("call.exploded", {})


def test_install_secret_from_the_settings_wins() -> None:
    secret = generate_secret()
    settings = Settings.from_sources(env={"RINGCAST_WEBHOOK_SECRET": secret})
    assert settings.webhook_secret == secret
    assert secret not in repr(settings)
    assert install_secret("postgresql://u@db/rc", settings.webhook_secret) == secret
    with pytest.raises(ConfigError, match="RINGCAST_WEBHOOK_SECRET: webhook secret is not"):
        install_secret("sqlite:///x.db", "whsec_%%%")


def test_install_secret_file_beside_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "ringcast.db"
    url = f"sqlite:///{db}"
    first = install_secret(url)
    assert first is not None and len(decode_secret(first)) == 32
    path = Path(str(db) + ".webhook-secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert install_secret(url) == first  # every later process reads the same
    path.write_text("garbage\n")
    with pytest.raises(ConfigError, match="webhook secret file .*webhook-secret"):
        install_secret(url)


def test_no_install_secret_for_postgresql_or_memory() -> None:
    assert install_secret("postgresql://u@db/rc") is None
    assert install_secret("sqlite:///:memory:") is None


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://app.example.com/hooks/ringcast?t=1", "https://app.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:80?x=/y", "http://127.0.0.1:80"),
        ("http://[::1]:9000#frag", "http://[::1]:9000"),
        ("http://u:p@h:1/p", "http://u:p@h:1"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def _due(event_type: str = "call.completed", attempts: int = 0, key_missing: bool = False) -> Due:
    data = {"request_id": "r1", "id": "c1"}
    return Due(
        id=7,
        webhook_id="msg_x",
        api_key_id=None,
        url="https://example.com/h",
        event_type=event_type,
        payload=build_payload(event_type, data),
        created_at=T0,
        attempts=attempts,
        key_missing=key_missing,
    )


def test_decide_delivered_names_the_request_of_a_final_event() -> None:
    now = T0 + timedelta(seconds=3)
    got = decide(_due(), Attempt(204, None), now=now, backoff=Backoff(), rand=0.5)
    assert got == Settlement(7, now, delivered=True, request_id="r1")
    ringing = decide(_due("call.ringing"), Attempt(200, None), now=now, backoff=Backoff(), rand=0.5)
    assert ringing == Settlement(7, now, delivered=True)


def test_decide_retries_on_the_backoff_and_honours_retry_after() -> None:
    now = T0 + timedelta(seconds=3)
    got = decide(_due(attempts=1), Attempt(500, None), now=now, backoff=Backoff(), rand=0.5)
    assert got == Settlement(7, now, next_attempt_at=now + timedelta(seconds=30), error="HTTP 500")
    later = decide(
        _due(), Attempt(503, None, retry_after=90.0), now=now, backoff=Backoff(), rand=0.5
    )
    assert later.next_attempt_at == now + timedelta(seconds=90)
    timed_out = decide(
        _due(), Attempt(None, "timed out after 10s"), now=now, backoff=Backoff(), rand=0.5
    )
    assert timed_out.error == "timed out after 10s" and not timed_out.gave_up


def test_decide_gives_up_on_410_a_lost_key_or_past_the_window() -> None:
    now = T0 + timedelta(seconds=3)
    gone = decide(_due(), Attempt(410, None), now=now, backoff=Backoff(), rand=0.5)
    assert gone == Settlement(7, now, gave_up=True, error="HTTP 410", request_id="r1")
    lost = decide(
        _due(key_missing=True), Attempt(None, "no key"), now=now, backoff=Backoff(), rand=0.5
    )
    assert lost.gave_up and lost.error == "no key"
    late = T0 + timedelta(hours=24)
    expired = decide(_due(), Attempt(500, None), now=late, backoff=Backoff(), rand=0.5)
    assert expired.gave_up and expired.at == late


# --- how many rows a claim takes (webhooks/ahead.py) --------------------------------------

QUICK, SLOW = SLOW_CLAIM / 2, SLOW_CLAIM * 2

# (floor, cap, rows ahead before, seconds the last settle-and-claim took, rows ahead after)
AHEAD_CASES = [
    (20, 500, 20, QUICK, 20),  # quick at the floor: stays there
    (20, 500, 20, SLOW, 40),  # slow: doubles
    (20, 500, 40, SLOW, 80),
    (20, 500, 320, SLOW, 500),  # ... up to the cap
    (20, 500, 500, SLOW, 500),
    (20, 500, 500, QUICK, 375),  # quick: a quarter less
    (20, 500, 80, QUICK, 60),
    (20, 500, 24, QUICK, 20),  # ... down to the floor, not below
    (20, 500, 20, SLOW_CLAIM, 20),  # exactly `slow` is not slow
    (4, 500, 4, SLOW, 8),
    (4, 500, 5, QUICK, 4),
    (1, 1, 1, SLOW, 1),  # floor == cap: fixed
    (20, 500, 3, QUICK, 20),  # below the floor (a policy changed underway): back to it
    (20, 500, 3, SLOW, 20),
    (20, 500, 900, QUICK, 500),  # above the cap: back under it
]


@pytest.mark.parametrize(("floor", "cap", "before", "took", "after"), AHEAD_CASES)
def test_rows_ahead_after_a_settle_and_claim(
    floor: int, cap: int, before: int, took: float, after: int
) -> None:
    assert AheadPolicy(floor=floor, cap=cap).after(before, took) == after


def test_rows_ahead_climb_to_the_cap_and_back_to_the_floor() -> None:
    policy = AheadPolicy(floor=20)
    ahead, climb = 20, []
    for _ in range(6):
        ahead = policy.after(ahead, SLOW)
        climb.append(ahead)
    assert climb == [40, 80, 160, 320, MAX_AHEAD, MAX_AHEAD]
    for _ in range(20):
        ahead = policy.after(ahead, QUICK)
    assert ahead == 20


@pytest.mark.parametrize(("floor", "cap"), [(0, 500), (10, 5), (-1, 1)])
def test_an_ahead_policy_needs_one_to_cap(floor: int, cap: int) -> None:
    with pytest.raises(ValueError, match="floor"):
        AheadPolicy(floor=floor, cap=cap)


# (free delivery slots, rows ahead, rows to claim)
CLAIM_CASES = [(0, 20, 0), (0, 500, 0), (1, 20, 21), (20, 20, 40), (20, 500, 520), (-1, 20, 0)]


@pytest.mark.parametrize(("free", "ahead", "size"), CLAIM_CASES)
def test_claim_size(free: int, ahead: int, size: int) -> None:
    assert claim_size(free, ahead) == size
