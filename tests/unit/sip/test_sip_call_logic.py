"""The pure parts of an outbound call: INVITE response decisions, INFO DTMF, digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiosipua.auth import SipDigestAuth, answer_challenge
from aiosipua.headers import CaseInsensitiveDict, parse_auth
from aiosipua.message import SipMessage, SipResponse

from ringcast.sip.call_spec import CallSpec, glare_retry_delay, parse_dtmf_info, retry_after
from ringcast.sip.sdp import MediaOffer
from ringcast.sip.uac_logic import CallState, InviteStep, InviteView, next_invite_step

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def step(
    status: int,
    *,
    synthetic: bool = False,
    state: CallState = CallState.CALLING,
    canceling: bool = False,
    has_credentials: bool = False,
    auth_tried: bool = False,
    redirected: bool = False,
    has_contact: bool = False,
    can_fail_over: bool = False,
    contacts_left: bool = False,
) -> InviteStep:
    """The INVITE decision, from the facts as the old keyword interface named them."""
    view = InviteView(
        state=CallState.CANCELING if canceling else state,
        has_credentials=has_credentials,
        auth_exhausted=auth_tried,
        redirected=redirected,
        servers_left=can_fail_over,
        contacts_left=contacts_left,
    )
    return next_invite_step(status, synthetic=synthetic, has_contact=has_contact, view=view)


def test_provisional_and_answer() -> None:
    assert step(100) is InviteStep.PROVISIONAL
    assert step(183, state=CallState.RINGING) is InviteStep.PROVISIONAL
    assert step(200) is InviteStep.ANSWER
    assert step(200, canceling=True) is InviteStep.ANSWER_THEN_BYE
    assert step(200, state=CallState.ENDED) is InviteStep.IGNORE


def test_digest_once_then_final() -> None:
    assert step(401, has_credentials=True) is InviteStep.AUTHENTICATE
    assert step(407, has_credentials=True) is InviteStep.AUTHENTICATE
    assert step(401) is InviteStep.FINAL  # no credentials
    assert step(407, has_credentials=True, auth_tried=True) is InviteStep.FINAL


def test_redirect_once_then_final() -> None:
    assert step(302, has_contact=True) is InviteStep.REDIRECT
    assert step(302) is InviteStep.FINAL
    assert step(301, has_contact=True, redirected=True) is InviteStep.FINAL


def test_next_redirect_contact_after_a_failure_but_not_a_global_one() -> None:
    """§8.1.3.4: a failed redirect target moves on to the next Contact; 6xx stops (§21.6)."""
    for status in (486, 404, 480, 500, 302):
        assert step(status, redirected=True, contacts_left=True) is InviteStep.NEXT_CONTACT
    assert step(408, synthetic=True, redirected=True, contacts_left=True) is InviteStep.NEXT_CONTACT
    assert step(503, synthetic=True, contacts_left=True) is InviteStep.NEXT_CONTACT
    assert (
        step(503, can_fail_over=True, contacts_left=True) is InviteStep.FAIL_OVER
    )  # servers first
    assert step(603, redirected=True, contacts_left=True) is InviteStep.FINAL
    assert step(487, canceling=True, contacts_left=True) is InviteStep.FINAL
    assert step(486, redirected=True) is InviteStep.FINAL  # no Contact left
    assert step(401, has_credentials=True, contacts_left=True) is InviteStep.AUTHENTICATE


def test_timeouts_and_cancel_are_final() -> None:
    assert step(408, synthetic=True) is InviteStep.FINAL
    assert step(503, synthetic=True) is InviteStep.FINAL
    assert step(487, canceling=True) is InviteStep.FINAL
    assert step(486) is InviteStep.FINAL


def test_fail_over_on_503_transport_error_and_timeout_only_when_a_server_is_left() -> None:
    """RFC 3263 §4.3: 503, a transport failure or Timer B move to the next server."""
    assert step(503, can_fail_over=True) is InviteStep.FAIL_OVER
    assert step(503, synthetic=True, can_fail_over=True) is InviteStep.FAIL_OVER
    assert step(408, synthetic=True, can_fail_over=True) is InviteStep.FAIL_OVER
    assert step(503) is InviteStep.FINAL  # no other server
    assert step(503, can_fail_over=True, canceling=True) is InviteStep.FINAL
    assert step(408, can_fail_over=True) is InviteStep.FINAL  # a real 408: the callee's
    assert step(486, can_fail_over=True) is InviteStep.FINAL
    assert step(500, can_fail_over=True) is InviteStep.FINAL


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("120", 120), (" 18000;duration=3600", 18000), ("5 (maintenance)", 5), ("soon", None)],
)
def test_retry_after_seconds(raw: str, seconds: int | None) -> None:
    response = SipResponse(headers=CaseInsensitiveDict(), status_code=503, reason_phrase="")
    response.headers.append("Retry-After", raw)
    assert retry_after(response) == seconds


@pytest.mark.parametrize(
    ("ctype", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"signal= #\nDuration=100", "#"),
        ("application/dtmf-relay", b"Signal=11\r\n", "#"),
        ("application/dtmf-relay", b"Signal=10\r\n", "*"),
        ("Application/DTMF-Relay; charset=x", b"Signal=*", "*"),
        ("application/dtmf", b"7", "7"),
        ("application/dtmf-relay", b"Duration=160", None),
        ("application/dtmf-relay", b"Signal=Z", None),
        ("text/plain", b"Signal=5", None),
    ],
)
def test_info_dtmf(ctype: str, body: bytes, digit: str | None) -> None:
    assert parse_dtmf_info(ctype, body) == digit


def test_sha256_digest_in_captured_invite_is_right() -> None:
    """RFC 7616 §3.4.1 with SHA-256, recomputed by hand from the captured bytes."""
    invite = SipMessage.parse((DATA / "ringcast_invite_sha256_auth.sip").read_bytes())
    creds = parse_auth(invite.headers.get_first("proxy-authorization") or "", credentials=True)
    p = creds.params
    assert p["algorithm"] == "SHA-256" and p["qop"] == "auth"

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h(f"alice:{p['realm']}:pw")
    ha2 = h(f"INVITE:{p['uri']}")
    expected = h(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
    assert p["response"] == expected


def test_sha256_challenge_from_captured_407() -> None:
    challenge = SipMessage.parse((DATA / "sipp_407_sha256.sip").read_bytes())
    assert isinstance(challenge, SipResponse)
    answer = answer_challenge(
        SipDigestAuth("alice", "pw"), challenge, 407, "INVITE", "sip:alice@127.0.0.1"
    )
    assert answer is not None
    name, value = answer
    assert name == "Proxy-Authorization"
    assert "algorithm=SHA-256" in value and "qop=auth" in value and "pw" not in value.split(",")


def test_spec_repr_hides_password() -> None:
    spec = CallSpec(
        to="sip:bob@127.0.0.1",
        from_="me",
        media=MediaOffer("127.0.0.1", 4000),
        username="u",
        password="hunter2",
    )
    assert "hunter2" not in repr(spec) and "***" in repr(spec)


def test_glare_retry_delay_is_the_call_id_owners_range() -> None:
    """RFC 3261 §14.1: 2.1-4 s in units of 10 ms for the owner of the Call-ID."""
    delays = {glare_retry_delay() for _ in range(500)}
    assert all(2.1 <= d <= 4.0 for d in delays)
    assert all(abs(d * 100 - round(d * 100)) < 1e-9 for d in delays)
    assert len(delays) > 20  # random, not one fixed value
