"""The lean recipients path of `validate_play` gives pydantic's verdict, values and errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ringcast.api.schemas import (
    PlayRequest,
    RecipientIn,
    check_sip_uri,
    lean_recipients,
    sip_uri_ok,
    validate_play,
)

PLAY = [{"pause": 1}]

RECIPIENTS: list[Any] = [
    {"to": "sip:a@example.com"},
    {"to": "sip:a@example.com", "from": "me"},
    {"to": "sip:a@example.com", "from": None, "variables": None, "timezone": None},
    {"to": "sips:b@10.0.0.1:5061;transport=tcp", "from": '"Zoë" <sip:z@example.com>'},
    {"to": "sip:a@example.com", "from": "sip:me@example.com:5060"},
    {"to": "sip:a@example.com", "variables": {"name": "Alice", "n": ""}},
    {"to": "sip:a@example.com", "variables": {"name": "Zoë"}},
    {"to": "sip:a@example.com", "variables": {}},
    {"to": "sip:a@example.com", "timezone": "Europe/Riga"},
    {"to": "sip:a@example.com", "from_": "me"},  # populate_by_name
    {"to": "sip:a@example.com", "from": "x", "from_": "y"},
    {"to": "sip:a@example.com", "timezone": "Mars/Olympus"},
    {"to": "sip:a@example.com", "timezone": "../../etc/passwd"},
    {"to": "sip:a@example.com", "timezone": "x" * 65},
    {"to": "sip:a@example.com", "variables": {"n": 1}},
    {"to": "sip:a@example.com", "variables": {"": "x"}},
    {"to": "sip:a@example.com", "variables": {"k" * 65: "x"}},
    {"to": "sip:a@example.com", "variables": {"k": "v" * 1025}},
    {"to": "sip:a@example.com", "variables": {f"k{i}": "v" for i in range(101)}},
    {"to": "sip:a@example.com", "variables": {f"k{i}": "v" for i in range(100)}},
    {"to": "sip:a@example.com", "variables": {"\ud800": "x"}},
    {"to": "sip:a@example.com", "variables": {"n": "\udfff"}},
    {"to": "sip:a@example.com", "variables": ["n"]},
    {"to": "sip:a@example.com", "from": "not a user"},
    {"to": "sip:a@example.com", "from": "me\r\nX: 1"},
    {"to": "sip:a@example.com", "from": 5},
    {"to": "sip:a@example.com", "from": "m" * 513},
    {"to": "sip:a@example.com", "phone": "1"},
    {"to": "sip:" + "a" * 500 + "@example.com"},
    {"to": "sip:a@example.com:99999"},
    {"to": "sip:a@example.com "},
    {"to": " sip:a@example.com"},
    {"to": "sip:a@example.com\n"},
    {"to": "sip:a@exämple.com"},
    {"to": "sip:\ud800@example.com"},
    {"to": "tel:+123"},
    {"to": None},
    {"to": 123},
    {"from": "me"},
    {},
    "sip:a@example.com",
    None,
    ["sip:a@example.com"],
]


def _verdict(data: dict[str, Any]) -> tuple[str, Any]:
    try:
        payload = PlayRequest.model_validate(data)
    except ValidationError as exc:
        return "error", exc.errors(include_input=False, include_context=False)
    recipients = payload.recipients
    return "ok", (
        payload.model_copy(update={"recipients": None}),
        None
        if recipients is None
        else [RecipientIn(r.to, r.from_, r.variables, r.timezone) for r in recipients],
    )


def _lean_verdict(data: dict[str, Any]) -> tuple[str, Any]:
    try:
        parsed = validate_play(data)
    except ValidationError as exc:
        return "error", exc.errors(include_input=False, include_context=False)
    return "ok", (parsed.payload, parsed.recipients)


@pytest.mark.parametrize("recipient", RECIPIENTS, ids=repr)
def test_each_recipient_gets_the_models_verdict(recipient: Any) -> None:
    good = {"to": "sip:first@example.com"}
    for recipients in ([recipient], [good, recipient], [recipient, good, recipient]):
        data = {"recipients": recipients, "from": "me", "playlist": PLAY}
        assert _lean_verdict(data) == _verdict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"recipients": [], "playlist": PLAY},
        {"recipients": None, "to": "sip:a@b.c", "playlist": PLAY},
        {"recipients": {"to": "sip:a@b.c"}, "playlist": PLAY},
        {"recipients": [{"to": "sip:a@b.c"}], "to": "sip:a@b.c", "playlist": PLAY},
        {"recipients": [{"to": "sip:a@b.c"}], "playlist": []},
        {"recipients": [{"to": "tel:1"}], "playlist": [], "ring_timeout": 0},
        {"recipients": [{"to": "sip:a@b.c"}], "playlist": PLAY, "from": "bad from"},
        {"recipients": [{"to": "sip:a@b.c"}], "playlist": PLAY, "extra": 1},
        {"to": "sip:a@b.c", "playlist": PLAY},
        {"playlist": PLAY},
    ],
    ids=repr,
)
def test_whole_bodies_get_the_models_verdict(data: dict[str, Any]) -> None:
    assert _lean_verdict(data) == _verdict(data)


def test_lean_path_keeps_values_and_order() -> None:
    items: list[dict[str, Any]] = [{"to": f"sip:{i}@example.com"} for i in range(1000)]
    items[500] = {"to": "sip:x@example.com", "from": "boss", "variables": {"a": "é"}}
    got = lean_recipients(items)
    assert got is not None and len(got) == 1000
    assert got[0] == RecipientIn("sip:0@example.com")
    assert got[500] == RecipientIn("sip:x@example.com", "boss", {"a": "é"}, None)
    items[999] = {"to": "sip:x@example.com", "timezone": "Nowhere/Land"}
    assert lean_recipients(items) is None


def _check(value: str) -> bool:
    try:
        check_sip_uri(value)
    except ValueError:
        return False
    return True


@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"sips?:[a-z0-9.%;=\[\]:@ -]{0,30}", fullmatch=True),
        st.from_regex(
            r"sip:[a-z]{1,5}@[a-z]{1,8}\.com(:[0-9]{1,6})?(;[a-z]=[a-z])?", fullmatch=True
        ),
    )
)
def test_sip_uri_ok_is_check_sip_uri(value: str) -> None:
    assert sip_uri_ok(value) == _check(value)
