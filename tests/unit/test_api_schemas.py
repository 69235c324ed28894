"""Request validation rules that need no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from ringcast.api.fields import check_from, check_http_url, check_sip_uri, private_host
from ringcast.api.schemas import PlayRequest, Schedule


@pytest.mark.parametrize(
    "uri",
    [
        "sip:123456@192.168.1.1:5060",
        "sip:alice@example.com",
        "sips:bob@example.com",
        "sip:gw.example.com:5060",
        "sip:+15551234567@carrier.example;user=phone",
        "sip:alice@[2001:db8::1]:5060",
        "sip:alice@example.com;transport=tcp",
        "SIP:alice@EXAMPLE.com",
    ],
)
def test_good_sip_uris(uri: str) -> None:
    assert check_sip_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "sip:",
        "sip:@",
        "alice@example.com",
        "tel:+15551234567",
        "http://example.com",
        "sip:alice@example.com:0",
        "sip:alice@example.com:65536",
        "sip:alice@exa mple.com",
        " sip:alice@example.com",
        "sip:alice@example.com\r\nVia: x",
        "sip:alice@-bad-.com",
        '"Alice" <sip:alice@example.com>',
    ],
)
def test_bad_sip_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        check_sip_uri(uri)


@pytest.mark.parametrize(
    "value",
    [
        "me",
        "+15551234567",
        "sip:me@example.com",
        '"Front Desk" <sip:desk@example.com>',
        "Desk <sip:desk@example.com>",
    ],
)
def test_good_from(value: str) -> None:
    assert check_from(value) == value


@pytest.mark.parametrize(
    "value", ["", "two words", "me\r\n", '"A" <tel:1>', "<sip:x@y", "a" * 600, "me@"]
)
def test_bad_from(value: str) -> None:
    with pytest.raises(ValueError):
        check_from(value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://server.domain.com/voices/hello.wav", True),
        ("https://cdn.example.com/a.mp3?x=1", True),
        ("ftp://x/y", False),
        ("http://", False),
        ("http://host:99999/x", False),
        ("file:///etc/passwd", False),
    ],
)
def test_http_urls(url: str, ok: bool) -> None:
    if ok:
        assert check_http_url(url) == url
    else:
        with pytest.raises(ValueError):
            check_http_url(url)


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("http://127.0.0.1/a", True),
        ("http://localhost:8000/a", True),
        ("http://10.1.2.3/a", True),
        ("http://169.254.169.254/latest", True),
        ("http://[::1]/a", True),
        ("http://192.168.1.1/a", True),
        ("http://8.8.8.8/a", False),
        ("http://server.domain.com/a", False),
    ],
)
def test_private_hosts(url: str, private: bool) -> None:
    assert private_host(url) is private


def test_defaults_are_filled() -> None:
    m = PlayRequest.model_validate({"to": "sip:a@b.com", "playlist": [{"say": "hi"}]})
    assert (m.ring_timeout, m.max_duration) == (30, 3600)
    assert m.retry.attempts == 0 and m.retry.on == ["busy", "no-answer"]
    assert m.playlist[0].model_dump(exclude_none=True) == {"say": "hi", "loop": 1}


def test_strict_types() -> None:
    base: dict[str, Any] = {"to": "sip:a@b.com", "playlist": [{"pause": 1}]}
    for bad in ({"ring_timeout": "30"}, {"ring_timeout": True}, {"ring_timeout": 30.5}):
        with pytest.raises(ValidationError):
            PlayRequest.model_validate({**base, **bad})
    assert PlayRequest.model_validate({**base, "cps": 2}).cps == 2.0


def test_schedule_not_before_in_timezone() -> None:
    s = Schedule.model_validate({"not_before": "2030-07-01T09:00:00", "timezone": "Europe/Riga"})
    assert s.not_before_utc() == datetime(2030, 7, 1, 6, 0, tzinfo=UTC)
    s = Schedule.model_validate({"not_before": "2030-07-01T09:00:00+02:00"})
    assert s.not_before_utc() == datetime(2030, 7, 1, 7, 0, tzinfo=UTC)
    assert Schedule.model_validate({}).not_before_utc() is None


@pytest.mark.parametrize(
    ("item", "ok"),
    [
        ({"record": {"max": 30, "silence": 3, "finish_on": "#", "beep": True}}, True),
        ({"record": True}, True),
        ({"record": {}}, True),
        ({"record": {"finish_on": ""}}, True),
        ({"record": False}, False),
        ({"record": {"max": 0}}, False),
        ({"record": {"max": 3601}}, False),
        ({"record": {"silence": -1}}, False),
        ({"record": {"finish_on": "x"}}, False),
        ({"record": {"beep": "yes"}}, False),
        ({"record": {"maximum": 3}}, False),
        ({"record": True, "say": "hi"}, False),
    ],
)
def test_record_items(item: dict[str, Any], ok: bool) -> None:
    body = {"to": "sip:alice@example.com", "playlist": [item]}
    if ok:
        PlayRequest.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            PlayRequest.model_validate(body)


def test_an_item_kind_is_its_one_kind_key_options_aside() -> None:
    """A key that is another kind's option (a transfer's "record") does not make a
    second kind; two kind keys that are nobody's options stay ambiguous."""
    from ringcast.api.schemas import _action_kind, _playlist_kind

    assert _action_kind({"transfer": "sip:a@h", "record": True}) == "transfer"
    assert _action_kind({"record": True}) == "record"
    assert _action_kind({"play": "https://h/a.wav", "say": "hi"}) is None
    assert _action_kind({"hangup": True, "transfer": "sip:a@h"}) is None
    assert _playlist_kind({"transfer": "sip:a@h"}) is None  # not a playlist kind
