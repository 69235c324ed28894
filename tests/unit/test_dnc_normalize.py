"""A do-not-call entry is a number or a user, however the recipient is written."""

from __future__ import annotations

import pytest

from ringcast.store.dnc import normalize


@pytest.mark.parametrize(
    ("given", "entry"),
    [
        ("sip:+1 (555) 010-0001@gw:5070", "+15550100001"),
        ("tel:+15550100001", "+15550100001"),
        ("tel:+1-555-010-0001;phone-context=example.com", "+15550100001"),
        ("+15550100001", "+15550100001"),
        ("+1 555.010.0001", "+15550100001"),
        ("sip:+15550100001@127.0.0.1:5070;user=phone", "+15550100001"),
        ("sips:+15550100001@carrier.example", "+15550100001"),
        ("sip:%2B15550100001@gw", "+15550100001"),
        ("sip:+371 2000 0000@gw", "+37120000000"),
        ("sip:5550100001@gw", "5550100001"),  # no country known: its digits
        ("(555) 010-0001", "5550100001"),
        ("sip:optme@127.0.0.1:34066", "optme"),
        ("sip:optme:secret@127.0.0.1", "optme"),  # a password part is not the user
        ("alice", "alice"),
        ("Alice", "Alice"),  # user parts are case-sensitive (RFC 3261 §19.1.4)
        ("sip:127.0.0.1:5070", "127.0.0.1"),  # no user: the host
        ("sip:[::1]:5070", "[::1]"),
        ("+", ""),
        ("  ", ""),
    ],
)
def test_normalize(given: str, entry: str) -> None:
    assert normalize(given) == entry


def test_a_national_number_with_a_country() -> None:
    assert normalize("(555) 010-0001", region="US") == "+15550100001"
