"""The lean recipients path of `validate_play` gives pydantic's verdict, values and errors."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ringcast.api.fields import check_sip_uri, sip_uri_ok
from ringcast.api.play import body_hash
from ringcast.api.recipients import (
    PlayInput,
    RecipientIn,
    lean_recipients,
    plain_recipient_uris,
    validate_play,
)
from ringcast.api.schemas import PlayRequest

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


_URIS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[sS][iI][pP][sS]?:[a-z0-9.%;=\[\]:@? -]{0,30}", fullmatch=True),
    st.from_regex(r"sip:[a-z]{1,5}@[a-z]{1,8}\.com(:[0-9]{1,6})?(;[a-z]=[a-z])?", fullmatch=True),
)


@given(st.lists(_URIS, min_size=1, max_size=5))
def test_plain_recipient_uris_vouches_only_for_valid_uris(values: list[str]) -> None:
    items: list[Any] = [{"to": v} for v in values]
    plain = plain_recipient_uris(items)
    if plain is not None:
        assert plain == values
        assert all(sip_uri_ok(v) and len(v) <= 512 for v in values)
    data = {"recipients": items, "from": "me", "playlist": PLAY}
    assert _lean_verdict(data) == _verdict(data)


@pytest.mark.parametrize(
    ("to", "vouched"),
    [
        ("sip:a@example.com", True),
        ("SIPS:a@example.com:1", True),
        ("sip:a@example.com:65535", True),
        ("sip:a@example.com:65536", False),
        ("sip:a@example.com:0", False),
        ("sip:a@example.com:05060", False),  # valid, but left to the per-item check
        ("sip:a@example.com\n", False),
        ("sip:a@example.com\nsip:b@example.com", False),
        ("sip:a@example.com\r", False),
        ("sip:" + "a" * 500 + "@example.com", False),
        ("sip:a@exämple.com", False),
    ],
)
def test_plain_recipient_uris_cases(to: str, vouched: bool) -> None:
    items: list[Any] = [{"to": "sip:first@example.com"}, {"to": to}]
    assert (plain_recipient_uris(items) is not None) == vouched
    data = {"recipients": items, "playlist": PLAY}
    assert _lean_verdict(data) == _verdict(data)


@pytest.mark.parametrize(
    "items",
    [[], [{"to": "sip:a@b.c", "from": "me"}], [{"to": 1}], [{"to": None}], ["sip:a@b.c"]],
    ids=repr,
)
def test_plain_recipient_uris_only_bare_to_strings(items: list[Any]) -> None:
    assert plain_recipient_uris(items) is None


def _reference_hash(parsed: PlayInput) -> str:
    """body_hash as first written: json.dumps of the whole dump."""
    dump = parsed.payload.model_dump(mode="json", by_alias=True)
    if parsed.recipients is not None:
        dump["recipients"] = [
            {"to": to, "from": from_, "variables": variables, "timezone": timezone}
            for to, from_, variables, timezone in parsed.recipients
        ]
    canonical = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "data",
    [
        {"to": "sip:a@example.com", "playlist": PLAY},
        {"recipients": [{"to": f"sip:{i}@example.com"} for i in range(50)], "playlist": PLAY},
        {
            "recipients": [
                r for r in RECIPIENTS[:10] if r != {"to": "sip:a@example.com", "from_": "me"}
            ],
            "playlist": [
                {"say": 'Zoë "hi" \u2028', "voice": "en"},
                {"play": "https://example.org/a.wav", "loop": 2},
            ],
            "from": '"Zoë" <sip:z@example.com>',
            "retry": {"attempts": 2},
            "schedule": {"not_before": "2099-01-01T00:00:00Z"},
            "callback_url": "https://example.org/cb",
            "cps": 1.5,
        },
    ],
    ids=["to", "plain", "mixed"],
)
def test_body_hash_is_the_canonical_json_hash(data: dict[str, Any]) -> None:
    parsed = validate_play(data)
    assert body_hash(parsed) == _reference_hash(parsed)


@pytest.mark.parametrize("recipient", RECIPIENTS, ids=repr)
def test_the_msgspec_decoder_gives_the_models_verdict_or_passes(recipient: Any) -> None:
    """decode_play_lean (msgspec, no dict per recipient) answers the model's values
    for a valid body, and None (the json + pydantic path decides) otherwise."""
    from ringcast.api.recipients import decode_play_lean

    good = {"to": "sip:first@example.com"}
    for recipients in ([recipient], [good, recipient], [recipient, good, recipient], [good]):
        data = {"recipients": recipients, "from": "me", "playlist": PLAY, "priority": 7}
        lean = decode_play_lean(json.dumps(data).encode())
        verdict = _verdict(data)
        if lean is None:
            assert verdict[0] == "error" or recipients != [good], recipients
            continue
        assert verdict == ("ok", (lean.payload, lean.recipients))
    assert decode_play_lean(b'{"to": "sip:a@b.c", "playlist": [{"pause": 1}]}') is None
    assert decode_play_lean(b'{"recipients": [{"to": "sip:a@b.c"}], "playlist": []}') is None
    assert decode_play_lean(b'{"recipients": [') is None
