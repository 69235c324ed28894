"""The one status -> outcome table (after FreeSWITCH's sofia cause table)."""

from __future__ import annotations

import pytest

from ringcast.domain import Outcome
from ringcast.sip.causes import outcome_for, q850_cause, reason_phrase, record_text


@pytest.mark.parametrize(
    ("status", "canceled", "outcome"),
    [
        (200, False, Outcome.ANSWERED),
        (202, False, Outcome.ANSWERED),
        (486, False, Outcome.BUSY),
        (600, False, Outcome.BUSY),
        (480, False, Outcome.NO_ANSWER),
        (408, False, Outcome.NO_ANSWER),
        (487, True, Outcome.NO_ANSWER),
        (200, True, Outcome.NO_ANSWER),  # a 200 that crossed our CANCEL
        (603, False, Outcome.DECLINED),
        (403, False, Outcome.REJECTED),
        (404, False, Outcome.REJECTED),
        (401, False, Outcome.REJECTED),
        (407, False, Outcome.REJECTED),
        (302, False, Outcome.REJECTED),
        (488, False, Outcome.REJECTED),
        (604, False, Outcome.REJECTED),
        (487, False, Outcome.FAILED),
        (500, False, Outcome.FAILED),
        (502, False, Outcome.FAILED),
        (503, False, Outcome.FAILED),
        (599, False, Outcome.FAILED),
        (499, False, Outcome.REJECTED),
        (699, False, Outcome.REJECTED),
    ],
)
def test_outcome_table(status: int, canceled: bool, outcome: Outcome) -> None:
    assert outcome_for(status, canceled_by_us=canceled) is outcome


def test_reason_phrases() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(408) == "Request Timeout"
    assert reason_phrase(487) == "Request Terminated"
    assert reason_phrase(503) == "Service Unavailable"
    assert reason_phrase(499) == "Bad Request"  # class default
    assert q850_cause(486) == "USER_BUSY"
    assert q850_cause(299) == "NORMAL_UNSPECIFIED"


def test_record_text_uses_the_articles_words() -> None:
    assert record_text(486) == "User Busy"
    assert record_text(200) == "OK"
