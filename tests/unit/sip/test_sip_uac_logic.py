"""The call's decisions as tables, without sockets (ringcast.sip.uac_logic, session_timer)."""

from __future__ import annotations

import pytest
from aiosipua.headers import CaseInsensitiveDict
from aiosipua.message import SipResponse

from ringcast.sip import session_timer
from ringcast.sip.dialog import DialogState
from ringcast.sip.digest import MAX_AUTH_ROUNDS, AuthFailure, DigestSession
from ringcast.sip.uac_logic import (
    Attempt,
    CallState,
    CallTimer,
    HangupStep,
    InDialogStep,
    RequestStep,
    TimerStep,
    attempt_after_provisional,
    hangup_step,
    in_dialog_step,
    request_step,
    timer_step,
)

S = CallState
A = Attempt


@pytest.mark.parametrize(
    ("state", "attempt", "step"),
    [
        (S.IDLE, A.LOCATING, HangupStep.END_UNSENT),
        (S.CALLING, A.LOCATING, HangupStep.END_UNSENT),  # still resolving: nothing sent
        (S.CALLING, A.SENT, HangupStep.CANCEL_LATER),  # §9.1: wait for a provisional
        (S.CALLING, A.TRYING, HangupStep.CANCEL),
        (S.RINGING, A.REACHED, HangupStep.CANCEL),
        (S.RINGING, A.LOCATING, HangupStep.END_UNSENT),  # between a 3xx and its new INVITE
        (S.CANCELING, A.TRYING, HangupStep.WAIT),
        (S.ANSWERED, A.REACHED, HangupStep.BYE),
        (S.ENDING, A.REACHED, HangupStep.WAIT),
        (S.ENDED, A.REACHED, HangupStep.NOTHING),
    ],
)
def test_hangup(state: CallState, attempt: Attempt, step: HangupStep) -> None:
    assert hangup_step(state, attempt) is step


def test_provisionals_move_the_attempt_forward_only() -> None:
    assert attempt_after_provisional(A.SENT, 100) is A.TRYING
    assert attempt_after_provisional(A.SENT, 180) is A.REACHED
    assert attempt_after_provisional(A.TRYING, 183) is A.REACHED
    assert attempt_after_provisional(A.REACHED, 100) is A.REACHED  # a late 100 changes nothing


@pytest.mark.parametrize(
    ("state", "timer", "step"),
    [
        (S.CALLING, CallTimer.RING, TimerStep.CANCEL),
        (S.RINGING, CallTimer.RING, TimerStep.CANCEL),
        (S.CANCELING, CallTimer.RING, TimerStep.IGNORE),  # already hanging up
        (S.ANSWERED, CallTimer.RING, TimerStep.IGNORE),  # answered as it fired
        (S.CANCELING, CallTimer.CANCEL_GUARD, TimerStep.GIVE_UP_INVITE),
        (S.ENDED, CallTimer.CANCEL_GUARD, TimerStep.IGNORE),
        (S.ANSWERED, CallTimer.MAX_DURATION, TimerStep.BYE),
        (S.ENDING, CallTimer.MAX_DURATION, TimerStep.IGNORE),
        (S.ANSWERED, CallTimer.REFRESH, TimerStep.REFRESH),
        (S.ENDING, CallTimer.REFRESH, TimerStep.IGNORE),
        (S.ANSWERED, CallTimer.SESSION_EXPIRY, TimerStep.BYE),
    ],
)
def test_timers(state: CallState, timer: CallTimer, step: TimerStep) -> None:
    assert timer_step(state, timer) is step


CONFIRMED = DialogState.CONFIRMED


@pytest.mark.parametrize(
    ("method", "kwargs", "step"),
    [
        ("OPTIONS", {"dialog": None}, RequestStep.NO_DIALOG),
        ("BYE", {"dialog": None}, RequestStep.BYE),  # BYE before the dialog (§15)
        ("BYE", {"dialog": None, "state": S.ENDED}, RequestStep.NO_DIALOG),
        ("INFO", {"dialog": DialogState.TERMINATED}, RequestStep.NO_DIALOG),
        ("INFO", {"cseq_in_order": False}, RequestStep.CSEQ_OUT_OF_ORDER),
        ("BYE", {}, RequestStep.BYE),
        ("bye", {"refresh_pending": "INVITE"}, RequestStep.BYE),
        ("INVITE", {}, RequestStep.REINVITE),
        ("INVITE", {"refresh_pending": "UPDATE"}, RequestStep.GLARE),
        ("UPDATE", {"refresh_pending": "INVITE", "has_body": True}, RequestStep.GLARE),
        ("UPDATE", {"refresh_pending": "INVITE"}, RequestStep.UPDATE),  # no offer: no glare
        ("UPDATE", {"refresh_pending": "UPDATE", "has_body": True}, RequestStep.UPDATE),
        ("OPTIONS", {}, RequestStep.OPTIONS),
        ("INFO", {}, RequestStep.INFO),
        ("CANCEL", {}, RequestStep.CANCEL),
        ("NOTIFY", {}, RequestStep.NOTIFY),
        ("REFER", {}, RequestStep.DECLINE),  # REFER is in our Allow: 603, not 405
        ("REFER", {"dialog": None}, RequestStep.NO_DIALOG),
        ("MESSAGE", {}, RequestStep.NOT_ALLOWED),
    ],
)
def test_requests_from_the_callee(
    method: str, kwargs: dict[str, object], step: RequestStep
) -> None:
    args: dict[str, object] = {
        "state": S.ANSWERED,
        "dialog": CONFIRMED,
        "cseq_in_order": True,
        "refresh_pending": None,
        "has_body": False,
    }
    args.update(kwargs)
    assert request_step(method, **args) is step  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "status", "synthetic", "can_auth", "step"),
    [
        ("BYE", 100, False, True, InDialogStep.WAIT),
        ("BYE", 200, False, True, InDialogStep.DONE),
        ("BYE", 401, False, True, InDialogStep.AUTHENTICATE),
        ("BYE", 407, False, False, InDialogStep.FAILED),  # no credentials, or rounds used up
        ("BYE", 408, True, True, InDialogStep.FAILED),  # Timer F: the session ended anyway
        ("BYE", 481, False, True, InDialogStep.FAILED),
        ("INVITE", 401, False, True, InDialogStep.AUTHENTICATE),
        ("UPDATE", 407, False, True, InDialogStep.AUTHENTICATE),
        ("UPDATE", 407, True, True, InDialogStep.FAILED),  # made up locally: no challenge
        ("INVITE", 408, True, True, InDialogStep.SESSION_GONE),  # RFC 4028 §10
        ("UPDATE", 481, False, True, InDialogStep.SESSION_GONE),
        ("INVITE", 491, False, True, InDialogStep.GLARE_RETRY),
        ("UPDATE", 501, False, True, InDialogStep.FAILED),
    ],
)
def test_responses_to_our_requests_in_the_dialog(
    method: str, status: int, synthetic: bool, can_auth: bool, step: InDialogStep
) -> None:
    got = in_dialog_step(method, status, synthetic=synthetic, can_authenticate=can_auth)
    assert got is step


@pytest.mark.parametrize(
    ("raw", "we_refresh", "timer", "delay"),
    [
        ("90;refresher=uac", True, CallTimer.REFRESH, 45.0),
        ("90", True, CallTimer.REFRESH, 45.0),  # §7.2: no refresher named: the UAC
        ("90;refresher=uas", False, CallTimer.SESSION_EXPIRY, 60.0),  # 90 - min(32, 30)
        ("1800;refresher=uas", False, CallTimer.SESSION_EXPIRY, 1768.0),
        ("1;refresher=uac", True, CallTimer.REFRESH, 1.0),  # never more often than 1 s
    ],
)
def test_session_timer_from_our_answer(
    raw: str, we_refresh: bool, timer: CallTimer, delay: float
) -> None:
    parsed = session_timer.from_response(raw)
    assert parsed is not None and parsed.we_refresh is we_refresh
    assert session_timer.next_timer(parsed) == (timer, delay)


def test_session_timer_asked_by_the_callee_is_named_from_its_side() -> None:
    """§9: in the callee's request, "uac" is the callee itself."""
    asked = session_timer.from_callee_request("120;refresher=uac")
    assert asked is not None and asked.we_refresh is False
    assert session_timer.answer_header(asked) == "120;refresher=uac"
    ours = session_timer.from_callee_request("120;refresher=uas")
    assert ours is not None and ours.we_refresh is True
    assert session_timer.answer_header(ours) == "120;refresher=uas"
    assert session_timer.from_callee_request(None) is None
    assert session_timer.parse_session_expires("soon") == (1800, None)


def challenge(status: int, realm: str, nonce: str, *, stale: bool = False) -> SipResponse:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
    if stale:
        value += ", stale=true"
    h = CaseInsensitiveDict()
    h.append(header, value)
    return SipResponse(headers=h, status_code=status, reason_phrase="")


def test_each_request_gets_its_own_rounds_over_the_calls_credentials() -> None:
    """§22.3: the INVITE's realm is answered again on the BYE (cached), and a BYE
    challenged with a new nonce of that realm is answered, not taken as refused."""
    session = DigestSession("alice", "pw")
    invite = session.attempt()
    assert invite.on_challenge(challenge(407, "proxy", "n1")) == ["proxy"]
    with pytest.raises(AuthFailure, match="challenged again"):
        invite.on_challenge(challenge(407, "proxy", "n2"))  # refused on the same request
    assert [name for name, _ in session.headers("BYE", "sip:bob@h")] == ["Proxy-Authorization"]
    bye = session.attempt()
    assert bye.on_challenge(challenge(407, "proxy", "n3")) == ["proxy"]  # a new request
    assert bye.on_challenge(challenge(407, "proxy", "n4", stale=True)) == ["proxy"]  # once
    with pytest.raises(AuthFailure, match="stale again"):
        bye.on_challenge(challenge(407, "proxy", "n5", stale=True))


def test_rounds_of_one_request_are_bounded() -> None:
    attempt = DigestSession("alice", "pw").attempt()
    for n in range(MAX_AUTH_ROUNDS):
        assert not attempt.exhausted
        attempt.on_challenge(challenge(401, f"r{n}", f"n{n}"))
    assert attempt.exhausted
