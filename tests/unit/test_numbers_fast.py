"""The fast path of numbers.e164 (strict E.164, metadata looked up once per
country code and length) answers exactly as phonenumbers.parse does: the same
E.164 string for every number it takes, and every other one (refusals
included) left to parse."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringcast import numbers

CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def slow(text: str, country: str | None = None) -> str:
    """The answer (or the refusal's text) of the parse() path alone."""
    try:
        return numbers._e164_parsed(text, numbers.number_text(text), country)
    except numbers.NumberError as exc:
        return f"error: {exc}"


def answer(text: str, country: str | None = None) -> str:
    numbers._e164.cache_clear()
    try:
        return numbers.e164(text, country)
    except numbers.NumberError as exc:
        return f"error: {exc}"


@st.composite
def written_numbers(draw: st.DrawFn) -> str:
    cc = draw(st.sampled_from(CODES))
    national = draw(st.text("0123456789", min_size=0, max_size=18))
    text = f"+{cc}{national}"
    if draw(st.booleans()):  # RFC 3966 visual separators or blanks somewhere
        cuts = sorted(draw(st.lists(st.integers(2, max(2, len(text))), max_size=3)))
        for cut in reversed(cuts):
            text = text[:cut] + draw(st.sampled_from("-. ")) + text[cut:]
    if draw(st.booleans()):
        text = "tel:" + text + draw(st.sampled_from(["", ";ext=1", ";phone-context=x"]))
    return text


@settings(max_examples=3000, deadline=None)
@given(written_numbers(), st.sampled_from([None, "US", "GB", "DE"]))
def test_fast_path_answers_as_parse_does(text: str, country: str | None) -> None:
    assert answer(text, country) == slow(text, country)


@pytest.mark.parametrize(
    "text",
    [
        "+15550100001",  # NANPA: no national prefix at the start
        "+11550100001",  # NANPA with a leading 1: parse's national prefix rules decide
        "+390612345678",  # Italy: a leading zero kept in the national number
        "+442079460000",
        "+4402079460000",  # a trunk 0 after the country code
        "+8005550100",  # non-geographic code 800
        "+99912345",  # no such country code
        "+1555",  # too short
        "+1555010000199999",  # too long
        "tel:+1-555-010-0001",
        "+1 555 010 0001 ",
        "+١٥٥٥٠١٠٠٠٠١",  # Arabic-Indic digits: parse() reads them
    ],
)
def test_known_cases(text: str) -> None:
    assert answer(text) == slow(text)


def test_fast_path_takes_the_common_forms() -> None:
    assert numbers._fast_e164("+15550100001") == "+15550100001"
    assert numbers._fast_e164("+1-555-010-0001") == "+15550100001"
    assert numbers._fast_e164("+11550100001") is None  # left to parse()
    assert numbers._fast_e164("+390612345678") is None
