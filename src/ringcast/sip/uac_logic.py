"""The decisions of one outbound call (UAC), as pure functions over explicit states.

:class:`~ringcast.sip.call.OutboundCall` owns the sockets, timers and the
dialog; for every event (a response, a request from the callee, a timer, the
owner's hang-up) it asks one function here what to do and applies the answer
(STYLE habits 4 and 13). Nothing here does I/O or mutates anything, so the
call's logic is tested as tables (tests/unit/sip/test_sip_uac_logic.py).

RFC 3261 §13.2 (INVITE), §9.1 (CANCEL), §15.1.1 (BYE), §12.2.2 (requests in
a dialog), §14 (re-INVITE, 491), §22 (digest), §8.1.3.4 (3xx); RFC 3263 §4.3
(failover); RFC 4028 (session timers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ringcast.sip.dialog import DialogState


class CallState(enum.Enum):
    """Where one outbound call is; ``on_state`` hears every change.

    A call moves forward only: IDLE -> CALLING -> [RINGING] -> ANSWERED ->
    ENDING -> ENDED, or from CALLING/RINGING to CANCELING (we hung up first)
    and ENDED; any state may end at once (a final response, a lost transport).
    """

    IDLE = "idle"  # created; setup() not called yet
    CALLING = "calling"  # locating the target or INVITE sent; nothing above 100 yet
    RINGING = "ringing"  # a 101-199 came: the callee is alerted
    CANCELING = "canceling"  # we hung up before the answer: CANCEL out, or due at the 1st 1xx
    ANSWERED = "answered"  # 2xx ACKed, dialog confirmed
    ENDING = "ending"  # our BYE is out: the session ended when it was handed over (§15.1.1)
    ENDED = "ended"


class Attempt(enum.Enum):
    """How far the current INVITE (one server of the target, or one 3xx Contact) got."""

    LOCATING = "locating"  # resolving the target (RFC 3263): nothing sent yet
    SENT = "sent"  # INVITE sent, no provisional yet: a CANCEL must wait for one (§9.1)
    TRYING = "trying"  # 100 seen: a CANCEL may go; another server may still be tried
    REACHED = "reached"  # a 101-199 came: the callee was alerted, never fail over (§4.3)


def attempt_after_provisional(attempt: Attempt, status: int) -> Attempt:
    """The attempt after a provisional response (§9.1, RFC 3263 §4.3)."""
    if status > 100:
        return Attempt.REACHED
    return Attempt.TRYING if attempt is not Attempt.REACHED else attempt


# --- responses to our INVITE ----------------------------------------------------


class InviteStep(enum.Enum):
    """What to do with a response to our INVITE."""

    PROVISIONAL = "provisional"
    ANSWER = "answer"
    ANSWER_THEN_BYE = "answer-then-bye"  # a 2xx crossed our CANCEL / hangup
    AUTHENTICATE = "authenticate"
    REDIRECT = "redirect"
    FAIL_OVER = "fail-over"  # RFC 3263 §4.3: the same INVITE to the next server
    NEXT_CONTACT = "next-contact"  # §8.1.3.4: the next Contact of the 3xx followed
    FINAL = "final"
    IGNORE = "ignore"


@dataclass(frozen=True)
class InviteView:
    """What the INVITE decision reads of the call (a snapshot, not the call)."""

    state: CallState
    attempt: Attempt = Attempt.SENT
    has_credentials: bool = False
    auth_exhausted: bool = False  # the digest rounds of this INVITE are used up
    redirected: bool = False  # a 3xx was already followed (only one is, §8.1.3.4)
    servers_left: bool = False  # RFC 3263: another server of the target is left
    contacts_left: bool = False  # another Contact of the 3xx followed is left


def next_invite_step(
    status: int, *, synthetic: bool, has_contact: bool, view: InviteView
) -> InviteStep:
    """Decide what a response to our INVITE means.

    - 1xx: provisional (§13.2.2.1); 2xx: answer, or ACK+BYE when we already
      canceled (§9.1: a 200 may cross the CANCEL);
    - 401/407 with credentials: retry with digest (§22.2, §22.3) until the
      rounds are used up; which challenges can be answered (a new realm, a
      stale nonce) is :class:`~ringcast.sip.digest.AuthAttempt`'s call;
    - 3xx with a Contact, once: follow its best Contact (§8.1.3.4); when that
      target fails (3xx-5xx, a transport error or timeout) and contacts are
      left, the next Contact; a 6xx is final (global failure, §21.6);
    - 503, a transport failure (synthetic 503) or Timer B (synthetic 408),
      while another server is left and the callee was not reached (no
      101-199): the next server (RFC 3263 §4.3);
    - everything else >= 300: final.
    """
    if view.state is CallState.ENDED:
        return InviteStep.IGNORE
    if status < 200:
        return InviteStep.IGNORE if synthetic else InviteStep.PROVISIONAL
    canceling = view.state is CallState.CANCELING
    if status < 300:
        return InviteStep.ANSWER_THEN_BYE if canceling else InviteStep.ANSWER
    if canceling:
        return InviteStep.FINAL
    can_fail_over = view.servers_left and view.attempt is not Attempt.REACHED
    if can_fail_over and (status == 503 or (synthetic and status == 408)):
        return InviteStep.FAIL_OVER
    if not synthetic and status in (401, 407) and view.has_credentials:
        if not view.auth_exhausted:
            return InviteStep.AUTHENTICATE
    if not synthetic and 300 <= status < 400 and has_contact and not view.redirected:
        return InviteStep.REDIRECT
    if view.contacts_left and status < 600:
        return InviteStep.NEXT_CONTACT
    return InviteStep.FINAL


# --- the owner hangs up ---------------------------------------------------------


class HangupStep(enum.Enum):
    """What ``hangup()`` does in each state (§9.1, §15.1.1)."""

    END_UNSENT = "end-unsent"  # nothing was sent: end here as if 487 came
    CANCEL = "cancel"  # CANCEL now (a provisional was seen)
    CANCEL_LATER = "cancel-later"  # CANCEL at the first provisional (§9.1)
    BYE = "bye"
    WAIT = "wait"  # a CANCEL or BYE is already out: wait for the end
    NOTHING = "nothing"


def hangup_step(state: CallState, attempt: Attempt) -> HangupStep:
    if state is CallState.ENDED:
        return HangupStep.NOTHING
    if state is CallState.IDLE:
        return HangupStep.END_UNSENT
    if state in (CallState.CALLING, CallState.RINGING):
        if attempt is Attempt.LOCATING:
            return HangupStep.END_UNSENT
        if attempt is Attempt.SENT:
            return HangupStep.CANCEL_LATER
        return HangupStep.CANCEL
    if state is CallState.ANSWERED:
        return HangupStep.BYE
    return HangupStep.WAIT


# --- timers ---------------------------------------------------------------------


class CallTimer(enum.StrEnum):
    """The call's own timers; the transactions keep theirs (A B D E F K)."""

    RING = "ring"  # ring_timeout: CANCEL, outcome no-answer
    CANCEL_GUARD = "cancel-guard"  # §9.1: 64*T1 after CANCEL without a final: give up
    MAX_DURATION = "max-duration"  # the request's max_duration after answer: BYE
    REFRESH = "refresh"  # RFC 4028 §10: our session refresh is due (or a 491 retry, §14.1)
    SESSION_EXPIRY = "session-expiry"  # RFC 4028 §10: the callee's refresh did not come


class TimerStep(enum.Enum):
    IGNORE = "ignore"
    CANCEL = "cancel"  # the ring timeout: hang up as the owner would
    GIVE_UP_INVITE = "give-up-invite"  # end the INVITE transaction (synthetic 408)
    BYE = "bye"
    REFRESH = "refresh"


def timer_step(state: CallState, timer: CallTimer) -> TimerStep:
    """What a call timer firing in ``state`` means (stale firings are ignored)."""
    if timer is CallTimer.RING:
        ringing = state in (CallState.CALLING, CallState.RINGING)
        return TimerStep.CANCEL if ringing else TimerStep.IGNORE
    if timer is CallTimer.CANCEL_GUARD:
        return TimerStep.GIVE_UP_INVITE if state is CallState.CANCELING else TimerStep.IGNORE
    if state is not CallState.ANSWERED:
        return TimerStep.IGNORE
    if timer is CallTimer.REFRESH:
        return TimerStep.REFRESH
    return TimerStep.BYE  # MAX_DURATION, SESSION_EXPIRY


# --- requests from the callee ---------------------------------------------------


class RequestStep(enum.Enum):
    """How to answer a request inside (or racing) our dialog (§12.2.2)."""

    NO_DIALOG = "481"  # no such dialog (any more)
    CSEQ_OUT_OF_ORDER = "500"  # §12.2.2: a lower CSeq than seen: 500 with Retry-After
    BYE = "bye"
    GLARE = "491"  # crosses our own offer in flight (§14.2, RFC 3311 §5.2)
    REINVITE = "reinvite"
    UPDATE = "update"
    OPTIONS = "options"
    INFO = "info"
    CANCEL = "cancel"  # a CANCEL that matched nothing of ours to cancel: 200 (§9.2)
    NOTIFY = "notify"  # the progress of our REFER (RFC 3515 §2.4.4)
    DECLINE = "603"  # a callee's REFER: we transfer, we are never transferred (RFC 3515 §2.4.2)
    NOT_ALLOWED = "405"


def request_step(
    method: str,
    *,
    state: CallState,
    dialog: DialogState | None,
    cseq_in_order: bool,
    refresh_pending: str | None,
    has_body: bool,
) -> RequestStep:
    """Decide how to answer ``method`` from the callee.

    A BYE in an early dialog (or before any dialog) ends the call (§15); any
    other request needs a live dialog. Our refresh in flight makes a re-INVITE,
    or an UPDATE with an offer while our re-INVITE (with its offer) is pending,
    a glare: 491 (our UPDATE carries no SDP, so an UPDATE offer does not cross it).
    """
    method = method.upper()
    if dialog is None or dialog is DialogState.TERMINATED:
        if method == "BYE" and state is not CallState.ENDED:
            return RequestStep.BYE
        return RequestStep.NO_DIALOG
    if not cseq_in_order:
        return RequestStep.CSEQ_OUT_OF_ORDER
    if method == "BYE":
        return RequestStep.BYE
    glare = refresh_pending is not None and (
        method == "INVITE" or (method == "UPDATE" and has_body and refresh_pending == "INVITE")
    )
    if glare:
        return RequestStep.GLARE
    steps = {
        "INVITE": RequestStep.REINVITE,
        "UPDATE": RequestStep.UPDATE,
        "OPTIONS": RequestStep.OPTIONS,
        "INFO": RequestStep.INFO,
        "CANCEL": RequestStep.CANCEL,
        "NOTIFY": RequestStep.NOTIFY,
        "REFER": RequestStep.DECLINE,
    }
    return steps.get(method, RequestStep.NOT_ALLOWED)


# --- responses to our requests inside the dialog --------------------------------


class InDialogStep(enum.Enum):
    """What a response to our BYE, re-INVITE or UPDATE means."""

    WAIT = "wait"  # provisional
    AUTHENTICATE = "authenticate"  # 401/407: the same request again with credentials
    DONE = "done"  # 2xx
    SESSION_GONE = "session-gone"  # RFC 4028 §10 / RFC 5057: 408 or 481 to a refresh
    GLARE_RETRY = "glare-retry"  # 491 to our refresh: again after 2.1-4 s (§14.1)
    FAILED = "failed"  # any other final


def in_dialog_step(
    method: str, status: int, *, synthetic: bool, can_authenticate: bool
) -> InDialogStep:
    """One digest path for every request after the INVITE (§22.2): a 401/407 that
    can be answered is answered; otherwise a refresh's 408/481 ends the session,
    its 491 is retried later, and a BYE's failure is final (the session ended
    when the BYE was sent)."""
    if status < 200:
        return InDialogStep.WAIT
    if status < 300:
        return InDialogStep.DONE
    if status in (401, 407) and not synthetic and can_authenticate:
        return InDialogStep.AUTHENTICATE
    if method.upper() == "BYE":
        return InDialogStep.FAILED
    if status in (408, 481):
        return InDialogStep.SESSION_GONE
    if status == 491:
        return InDialogStep.GLARE_RETRY
    return InDialogStep.FAILED
