"""What a call dials (ringcast.dialer.carrier.route): SIP URIs as given, numbers
as their trunk's Request-URI, and why a call cannot be routed."""

from __future__ import annotations

from typing import Any

import pytest

from ringcast.config import Settings
from ringcast.dialer.carrier import NotRoutable, Route, region_of, route

SETTINGS = Settings(
    trunks={
        "carrier": {"proxy": "sip:gw.example:5070", "asserted_identity": True},
        "uk": {"proxy": "sip:uk.example", "country": "GB", "strip": "+44", "prefix": "0"},
    },
    default_trunk="carrier",
)
NO_DEFAULT = Settings(trunks={"carrier": {"proxy": "sip:gw.example:5070"}})


@pytest.mark.parametrize(
    ("body", "to", "from_", "expected"),
    [
        ({}, "sip:alice@h.example", "me", Route("sip:alice@h.example", None)),
        (
            {},
            "+15550100001",
            "me",
            Route("sip:+15550100001@gw.example:5070", "carrier"),
        ),
        (
            {},
            "tel:+15550100001",
            "+15550100099",
            Route(
                "sip:+15550100001@gw.example:5070",
                "carrier",
                {"P-Asserted-Identity": "<sip:+15550100099@gw.example>"},
            ),
        ),
        (
            {"sip": {"trunk": "uk"}},
            "020 7946 0018",
            "+15550100099",
            Route("sip:02079460018@uk.example", "uk"),  # no asserted_identity on uk
        ),
        (
            {"sip": {"trunk": "uk"}, "country": "US"},
            "(201) 555-0123",
            "me",
            Route("sip:+12015550123@uk.example", "uk"),  # strip +44 applies to UK numbers only
        ),
        (
            {"sip": {"trunk": "uk"}},
            "sip:bob@h.example",
            "me",
            Route("sip:bob@h.example", "uk"),
        ),
    ],
)
def test_route(body: dict[str, Any], to: str, from_: str, expected: Route) -> None:
    assert route(body, to, from_, SETTINGS) == expected


@pytest.mark.parametrize(
    ("body", "to", "settings", "message"),
    [
        ({}, "+15550100001", NO_DEFAULT, "+15550100001 is a number and needs a trunk"),
        ({"sip": {"trunk": "gone"}}, "+15550100001", SETTINGS, "trunk 'gone' is not in the"),
        ({}, "(201) 555-0123", SETTINGS, "is not in E.164 (+CC...): give a country"),
    ],
)
def test_not_routable(body: dict[str, Any], to: str, settings: Settings, message: str) -> None:
    with pytest.raises(NotRoutable) as caught:
        route(body, to, "me", settings)
    assert message in caught.value.message


def test_region_of() -> None:
    assert region_of({"country": "US", "sip": {"trunk": "uk"}}, SETTINGS) == "US"
    assert region_of({"sip": {"trunk": "uk"}}, SETTINGS) == "GB"
    assert region_of({}, SETTINGS) is None  # the default trunk has no country
