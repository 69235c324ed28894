"""Numbers as recipients and caller IDs, and the trunk's Request-URI for them
(ringcast.numbers; DESIGN.md "Phone numbers and carriers")."""

from __future__ import annotations

import pytest

from ringcast import numbers
from ringcast.numbers import NumberError


@pytest.mark.parametrize(
    ("to", "country", "expected"),
    [
        ("+15550100001", None, "+15550100001"),
        ("tel:+15550100001", None, "+15550100001"),
        ("tel:+1-555-010-0001;ext=7", None, "+15550100001"),
        ("+1 (555) 010-0001", None, "+15550100001"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("020 7946 0018", "gb", "+442079460018"),
        ("+44 20 7946 0018", "US", "+442079460018"),  # a + number ignores the country
    ],
)
def test_e164(to: str, country: str | None, expected: str) -> None:
    assert numbers.e164(to, country) == expected


@pytest.mark.parametrize(
    ("to", "country", "message"),
    [
        ("+123", None, "'+123' is not a possible phone number in +1"),
        ("2015550123", None, "'2015550123' is not in E.164 (+CC...): give a country"),
        ("sip:alice@example.com", None, "'sip:alice@example.com' is not a phone number"),
        ("+1 555 abc", None, "'+1 555 abc' is not a phone number"),
        ("12", "US", "'12' is not a possible phone number in US"),
    ],
)
def test_not_a_number(to: str, country: str | None, message: str) -> None:
    with pytest.raises(NumberError) as caught:
        numbers.e164(to, country)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("+15550100001", True),
        ("tel:+15550100001", True),
        ("(201) 555-0123", True),
        ("sip:+15550100001@gw", False),
        ("alice", False),
        ("+", False),
        ("1+2", False),
        ("", False),
    ],
)
def test_looks_like_number(to: str, expected: bool) -> None:
    assert numbers.looks_like_number(to) is expected


@pytest.mark.parametrize(
    ("trunk", "expected"),
    [
        ({"proxy": "sip:127.0.0.1:5070"}, "sip:+15550100001@127.0.0.1:5070"),
        ({"proxy": "sip:gw.example;lr"}, "sip:+15550100001@gw.example"),
        ({"proxy": "sip:gw.example", "strip": "+"}, "sip:15550100001@gw.example"),
        ({"proxy": "sip:gw.example", "strip": "+1", "prefix": "9"}, "sip:95550100001@gw.example"),
        ({"proxy": "sip:gw.example", "strip": "+44", "prefix": "0"}, "sip:+15550100001@gw.example"),
        ({"proxy": "sip:gw.example", "prefix": "00", "strip": "+"}, "sip:0015550100001@gw.example"),
        (
            {"proxy": "sip:gw.example:5080;transport=tcp", "user_phone": True},
            "sip:+15550100001@gw.example:5080;transport=tcp;user=phone",
        ),
        ({"proxy": "sips:acct@gw.example"}, "sips:+15550100001@gw.example"),
    ],
)
def test_request_uri(trunk: dict[str, object], expected: str) -> None:
    assert numbers.request_uri("+15550100001", trunk) == expected


def test_caller_id_and_asserted_identity() -> None:
    assert numbers.caller_id("+1 555 010 0002") == "+15550100002"
    assert numbers.caller_id("me") is None
    assert numbers.caller_id("+12") is None
    trunk = {"proxy": "sip:gw.example:5070;transport=tcp"}
    assert numbers.asserted_identity("+15550100002", trunk) == "<sip:+15550100002@gw.example>"


def test_dnc_entry_and_dialled_number_agree() -> None:
    """The do-not-call entry of a number is the E.164 form it is dialled as."""
    for written in ("tel:+1-555-010-0001", "+1 (555) 010-0001", "sip:+15550100001@gw:5070"):
        assert numbers.dnc_entry(written) == "+15550100001"
    assert numbers.dnc_entry("(201) 555-0123", "US") == numbers.e164("(201) 555-0123", "US")
