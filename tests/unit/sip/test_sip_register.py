"""The REGISTER binding machine (ringcast.sip.register; RFC 3261 §10.2) without
sockets: inputs in, actions and states out, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from ringcast.sip.register import (
    Arm,
    Registration,
    RegState,
    Send,
    backoff,
    refresh_after,
)

S = RegState


def _machine() -> Registration:
    return Registration("carrier", expires=600, retry=2.0, retry_max=60.0)


def ok(granted: int | None) -> tuple[str, Any]:
    return ("on_success", granted)


def fail(status: int, **kw: Any) -> tuple[str, Any]:
    return ("on_failure", (status, kw))


def run(machine: Registration, step: tuple[str, Any] | str) -> list[Any]:
    if isinstance(step, str):
        return list(getattr(machine, step)())
    name, arg = step
    if name == "on_success":
        return machine.on_success(arg)
    status, kw = arg
    return machine.on_failure(status, "Reason", **kw)


# (steps, expected (actions, state) after each step)
TABLE: list[tuple[str, list[Any], list[tuple[list[Any], RegState]]]] = [
    (
        "register, granted less than asked, refresh before expiry",
        ["start", ok(300), "on_timer", ok(300)],
        [
            ([Send(600)], S.REGISTERING),
            ([Arm(240.0)], S.REGISTERED),
            ([Send(600)], S.REFRESHING),
            ([Arm(240.0)], S.REGISTERED),
        ],
    ),
    (
        "no expiry in the 2xx: ours stands",
        ["start", ok(None)],
        [([Send(600)], S.REGISTERING), ([Arm(480.0)], S.REGISTERED)],
    ),
    (
        "a long grant refreshes 10 s before it ends at the latest",
        ["start", ok(30)],
        [([Send(600)], S.REGISTERING), ([Arm(20.0)], S.REGISTERED)],
    ),
    (
        "423 with Min-Expires: ask again with the minimum",
        ["start", fail(423, min_expires=1200), ok(1200)],
        [
            ([Send(600)], S.REGISTERING),
            ([Send(1200)], S.REGISTERING),
            ([Arm(960.0)], S.REGISTERED),
        ],
    ),
    (
        "failures back off, doubling to the ceiling; success resets",
        ["start", fail(503), "on_timer", fail(408), "on_timer", fail(403), "on_timer", ok(600)],
        [
            ([Send(600)], S.REGISTERING),
            ([Arm(2.0)], S.BACKOFF),
            ([Send(600)], S.REGISTERING),
            ([Arm(4.0)], S.BACKOFF),
            ([Send(600)], S.REGISTERING),
            ([Arm(8.0)], S.BACKOFF),
            ([Send(600)], S.REGISTERING),
            ([Arm(480.0)], S.REGISTERED),
        ],
    ),
    (
        "Retry-After longer than the back-off wins",
        ["start", fail(503, retry_after=30)],
        [([Send(600)], S.REGISTERING), ([Arm(30.0)], S.BACKOFF)],
    ),
    (
        "a failed refresh takes the binding down",
        ["start", ok(600), "on_timer", fail(500)],
        [
            ([Send(600)], S.REGISTERING),
            ([Arm(480.0)], S.REGISTERED),
            ([Send(600)], S.REFRESHING),
            ([Arm(2.0)], S.BACKOFF),
        ],
    ),
    (
        "a 2xx that keeps no binding is a failure",
        ["start", ok(0)],
        [([Send(600)], S.REGISTERING), ([Arm(2.0)], S.BACKOFF)],
    ),
    (
        "clean shutdown removes the binding with expires 0",
        ["start", ok(600), "stop", ok(None)],
        [
            ([Send(600)], S.REGISTERING),
            ([Arm(480.0)], S.REGISTERED),
            ([Send(0)], S.UNREGISTERING),
            ([], S.STOPPED),
        ],
    ),
    (
        "shutdown while a REGISTER is out removes what it may create",
        ["start", "stop", fail(408)],
        [([Send(600)], S.REGISTERING), ([Send(0)], S.UNREGISTERING), ([], S.STOPPED)],
    ),
    (
        "shutdown while backing off sends nothing",
        ["start", fail(503), "stop", "on_timer"],
        [
            ([Send(600)], S.REGISTERING),
            ([Arm(2.0)], S.BACKOFF),
            ([], S.STOPPED),
            ([], S.STOPPED),
        ],
    ),
    (
        "late and repeated inputs change nothing",
        ["on_timer", ok(600), "start", "start", ok(600), ok(600)],
        [
            ([], S.IDLE),
            ([], S.IDLE),
            ([Send(600)], S.REGISTERING),
            ([], S.REGISTERING),
            ([Arm(480.0)], S.REGISTERED),
            ([], S.REGISTERED),
        ],
    ),
]


@pytest.mark.parametrize(
    ("steps", "expected"), [(s, e) for _, s, e in TABLE], ids=[t[0] for t in TABLE]
)
def test_registration_table(steps: list[Any], expected: list[tuple[list[Any], RegState]]) -> None:
    machine = _machine()
    got = []
    for step in steps:
        actions = run(machine, step)
        got.append((actions, machine.state))
    assert got == expected


def test_failure_state_is_reported() -> None:
    machine = _machine()
    machine.start()
    machine.on_failure(403, "Forbidden")
    assert (machine.failures, machine.last_error, machine.granted) == (1, "403 Forbidden", None)
    assert not machine.state.bound
    machine.on_timer()
    machine.on_success(120)
    assert (machine.failures, machine.last_error, machine.granted) == (0, None, 120)
    assert machine.state.bound


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [(1, 1.0, 2.0), (2, 1.0, 4.0), (5, 1.0, 32.0), (6, 1.0, 60.0), (30, 1.0, 60.0), (3, 0.5, 4.0)],
)
def test_backoff(failures: int, jitter: float, expected: float) -> None:
    assert backoff(failures, 2.0, 60.0, jitter) == expected


@pytest.mark.parametrize(
    ("granted", "expected"),
    [(3600, 2880.0), (60, 48.0), (30, 20.0), (5, 3.5), (3, 1.5), (2, 1.0), (1, 0.5)],
)
def test_refresh_after(granted: int, expected: float) -> None:
    assert refresh_after(granted) == pytest.approx(expected)


def test_binding_config_never_shows_the_password() -> None:
    from ringcast.sip.registration import BindingConfig

    config = BindingConfig(name="c", registrar="sip:r.example", username="u", password="pw-42")
    assert "pw-42" not in repr(config) + str(config)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:a@h:5>;expires=60", ["<sip:a@h:5>;expires=60"]),
        (
            '"A, B" <sip:a@h>;expires=10, <sip:b@h;x=1,2>;expires=20',
            ['"A, B" <sip:a@h>;expires=10', "<sip:b@h;x=1,2>;expires=20"],
        ),
        ("", []),
    ],
)
def test_contact_entries(value: str, expected: list[str]) -> None:
    from ringcast.sip.registration import _split_contacts

    assert _split_contacts(value) == expected
