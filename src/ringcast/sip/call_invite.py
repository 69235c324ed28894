"""The INVITE of one outbound call and its responses (RFC 3261 §13.2).

Functions of :class:`~ringcast.sip.call.OutboundCall`, its owner: build and
send the INVITE (to the servers :meth:`SipEndpoint.locate` found, RFC 3263),
then apply what :func:`~ringcast.sip.uac_logic.next_invite_step` decides for
each response: provisional (§13.2.2.1), 2xx and its ACK (§13.2.2.4, other
forks ACKed and BYEd), digest (§22.2, §22.3), failover to the next server
(RFC 3263 §4.3), a 3xx's Contacts (§8.1.3.4), or the final outcome.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiosipua.headers import CaseInsensitiveDict
from aiosipua.message import SipRequest, SipResponse

from ringcast.sip import call_dialog, call_refresh, stray_2xx
from ringcast.sip.call_spec import from_header, retry_after
from ringcast.sip.causes import reason_phrase
from ringcast.sip.dialog import Dialog, DialogState, redirect_targets
from ringcast.sip.digest import AuthFailure
from ringcast.sip.message import ALLOW, new_branch, uri_transport
from ringcast.sip.transaction import SyntheticResponse
from ringcast.sip.uac_logic import (
    Attempt,
    CallState,
    CallTimer,
    InviteStep,
    InviteView,
    attempt_after_provisional,
    next_invite_step,
)

if TYPE_CHECKING:
    from ringcast.sip.call import OutboundCall

logger = logging.getLogger(__name__)

MAX_REDIRECT_TARGETS = 4  # Contacts of a 3xx tried in turn (§8.1.3.4)


async def send_first_invite(call: OutboundCall) -> None:
    target = call.spec.proxy or call._request_uri
    try:
        # The URI's ;transport= first (RFC 3263 §4.1), then the call's, then the DNS.
        transport = uri_transport(target) or call.spec.transport
        servers = await call.endpoint.locate(target, transport, tls=call.spec.tls)
    except (OSError, ValueError) as exc:
        if call.state is CallState.ENDED:
            return
        call.error = f"cannot resolve {target}: {exc}"
        call.local_failure = True
        call._finish_unanswered(503, "Service Unavailable", ended_by=None)
        return
    if call.state is CallState.ENDED:  # hung up while the target was looked up
        return
    call._dest, call._next_servers = servers[0], servers[1:]
    local_host = call.endpoint.local_host_for(call._dest)
    from_value, user = from_header(call.spec.from_, local_host)
    call._from_user = user
    call._from_value = f"{from_value};tag={call.local_tag}"
    call._contact = call.endpoint.contact_for(call._dest, user)
    if call._sdp.media.host in ("0.0.0.0", "") or call.endpoint.public_ip:
        call._sdp.set_host(local_host)
    call.attempt = Attempt.SENT
    send_invite(call)
    call._start_timer(CallTimer.RING, call.spec.ring_timeout)


def build_invite(call: OutboundCall, *, same_cseq: bool = False) -> SipRequest:
    if not same_cseq:
        call._cseq += 1
    h = CaseInsensitiveDict()
    h.append("Via", "")  # placeholder: stamp_via fills it, first in order
    h.append("Max-Forwards", "70")
    h.append("From", call._from_value)
    h.append("To", call._to_value)
    h.append("Call-ID", call.call_id)
    h.append("CSeq", f"{call._cseq} INVITE")
    h.append("Contact", call._contact)
    if call.spec.proxy:
        h.append("Route", _loose_route(call.spec.proxy))
    h.append("User-Agent", call.endpoint.user_agent)
    h.append("Allow", ALLOW)
    h.append("Supported", "timer")
    for name, value in call.spec.headers.items():
        h.append(name, value)
    for name, value in call._digest.headers("INVITE", call._request_uri):
        h.append(name, value)  # Proxy-Authorization first, then Authorization
    h.append("Content-Type", "application/sdp")
    body = call._sdp.initial_offer()
    return SipRequest(headers=h, body=body, method="INVITE", uri=call._request_uri)


def send_invite(call: OutboundCall, *, same_cseq: bool = False) -> None:
    assert call._dest is not None  # set by _send_first_invite before any INVITE
    call._invite = build_invite(call, same_cseq=same_cseq)
    call._invite_txn = call.endpoint.send_request(
        call._invite, call._dest, functools.partial(on_response, call)
    )


def invite_view(call: OutboundCall) -> InviteView:
    return InviteView(
        state=call.state,
        attempt=call.attempt,
        has_credentials=call._has_credentials,
        auth_exhausted=call._invite_auth is not None and call._invite_auth.exhausted,
        redirected=call._redirected,
        servers_left=bool(call._next_servers),
        contacts_left=bool(call._redirect_targets),
    )


def on_response(call: OutboundCall, response: SipResponse) -> None:
    """TU callback for every response to the current INVITE transaction."""
    if call._invite is None:
        return
    step = next_invite_step(
        response.status_code,
        synthetic=isinstance(response, SyntheticResponse),
        has_contact=300 <= response.status_code < 400
        and bool(redirect_targets(response, limit=1, skip=call._request_uri)),
        view=invite_view(call),
    )
    if step is InviteStep.PROVISIONAL:
        on_provisional(call, response)
    elif step is InviteStep.ANSWER:
        on_2xx(call, response, keep=True)
    elif step is InviteStep.ANSWER_THEN_BYE:
        on_2xx(call, response, keep=False)
    elif step is InviteStep.AUTHENTICATE:
        authenticate(call, response)
    elif step is InviteStep.REDIRECT:
        redirect(call, response)
    elif step is InviteStep.FAIL_OVER:
        fail_over(call, response)
    elif step is InviteStep.NEXT_CONTACT:
        next_contact(call, response)
    elif step is InviteStep.FINAL:
        on_final(call, response)


def on_provisional(call: OutboundCall, response: SipResponse) -> None:
    status = response.status_code
    before = call.attempt
    call.attempt = attempt_after_provisional(before, status)
    to = response.to_addr
    if status > 100 and to is not None and to.tag and call._invite is not None:
        if call.dialog is None:
            call.dialog = Dialog.from_response(call._invite, response)
        elif call.dialog.remote_tag == to.tag:
            call.dialog.update_early(response)
    if response.body and "sdp" in (response.content_type or "").lower():
        try:
            call._sdp.early_answer = call._sdp.answer_to_us(response.body)
        except ValueError as exc:
            logger.info("call %s: ignoring early SDP: %s", call.call_id, exc)
    if status >= 180 and call.state is CallState.CALLING:
        call._set_state(CallState.RINGING)
    if call.state is CallState.CANCELING and before is Attempt.SENT:
        call._send_cancel()  # §9.1: the CANCEL waited for this first provisional


def on_2xx(call: OutboundCall, response: SipResponse, *, keep: bool) -> None:
    invite = call._invite
    assert invite is not None
    to = response.to_addr
    tag = to.tag if to is not None else None
    if call.dialog is not None and call.dialog.state is DialogState.CONFIRMED:
        on_stray_2xx(call, response)  # our ACK again, or a second fork ACKed and BYEd
        return
    if not tag:
        logger.warning("call %s: 2xx without To tag (RFC 2543 peer)", call.call_id)
    if call.dialog is None or call.dialog.remote_tag != (tag or ""):
        try:
            call.dialog = Dialog.from_response(invite, response)
        except ValueError as exc:  # no To tag: no dialog to ACK or BYE in (§12.1.2)
            on_2xx_unroutable(call, response, f"unusable 2xx: {exc}")
            return
    else:
        call.dialog.confirm(response)
    if call_dialog.dest_for_dialog(call, call.dialog) is None:
        # §13.2.2.4: the ACK goes to the dialog's next hop, a host name not
        # looked up yet (RFC 3263). Retransmitted 2xx find no ACK to resend
        # meanwhile (_ack is None) and wait with this one.
        call_dialog.after_hop(
            call,
            call.dialog,
            then=lambda: on_confirmed(call, response, keep=keep),
            failed=lambda why: on_2xx_unroutable(call, response, why),
        )
        return
    on_confirmed(call, response, keep=keep)


def on_confirmed(call: OutboundCall, response: SipResponse, *, keep: bool) -> None:
    """The 2xx's dialog is confirmed and its next hop known: ACK, then answer or BYE."""
    if call.state is CallState.ENDED:
        return
    keep = keep and call.state is not CallState.CANCELING  # hung up meanwhile
    call.status_code = response.status_code
    call.reason = response.reason_phrase or reason_phrase(response.status_code)
    send_ack(call, response)
    call._stop_timer(CallTimer.RING)
    call_refresh.parse_session_timer(call, response)
    if keep:
        try:
            if response.body:
                call._sdp.answer = call._sdp.answer_to_us(response.body)
            elif call._sdp.early_answer is not None:
                call._sdp.answer = call._sdp.early_answer
            else:
                raise ValueError("2xx carries no SDP answer and no early SDP was seen")
        except ValueError as exc:
            call.error = str(exc)
            keep = False
    if not keep:
        call._set_state(CallState.ENDING)
        call._resolve_setup(False)
        call.endpoint.spawn(call._send_bye(), name=f"sip-bye-crossed-{call.call_id}")
        return
    call.answered_at = datetime.now(UTC)
    call._set_state(CallState.ANSWERED)
    call._resolve_setup(True)
    if call.spec.max_duration is not None:
        call._start_timer(CallTimer.MAX_DURATION, call.spec.max_duration)
    call_refresh.arm_session_refresh(call)


def on_2xx_unroutable(call: OutboundCall, response: SipResponse, why: str) -> None:
    """The 2xx names a next hop we cannot resolve: no ACK can reach the callee.

    Nothing is sent (never to a guessed address); the call fails locally and
    the callee ends its side when its 2xx retransmissions time out (§13.3.1.4).
    """
    if call.state is CallState.ENDED:
        return
    call.error = why
    call.local_failure = True
    call._finish_unanswered(response.status_code, response.reason_phrase, ended_by=None)


def send_ack(call: OutboundCall, response: SipResponse) -> None:
    """The ACK for a 2xx is its own request, not part of the transaction (§13.2.2.4)."""
    dialog = call.dialog
    invite = call._invite
    assert dialog is not None and invite is not None and call._dest is not None
    seq = invite.cseq.seq if invite.cseq else call._cseq
    ack = dialog.create_request("ACK", cseq=seq)
    for name in ("authorization", "proxy-authorization"):
        value = invite.headers.get_first(name)
        if value:
            ack.headers.append(name, value)
    dest = call_dialog.in_dialog_destination(call)
    assert dest is not None  # _on_2xx resolved the next hop first
    call.endpoint.stamp_via(ack, dest, new_branch())
    call._ack = (bytes(ack), dest)
    call.endpoint.send_raw(call._ack[0], dest)


def on_stray_2xx(call: OutboundCall, response: SipResponse) -> None:
    """A 2xx after the INVITE transaction ended: ACK again (and BYE an unknown
    fork), as :mod:`.stray_2xx` decides."""
    what = stray_2xx.resend_for(
        response,
        remote_tag=call.dialog.remote_tag if call.dialog is not None else None,
        initial_seq=call._invite.cseq.seq if call._invite and call._invite.cseq else None,
        ack=call._ack,
        reinvite_acks=call._reinvite_acks,
        forks=call._forks,
    )
    if not stray_2xx.answer(call.endpoint, call.call_id, response, what):
        ack_and_bye_fork(call, response)


def ack_and_bye_fork(call: OutboundCall, response: SipResponse) -> None:
    """§13.2.2.4: every other 2xx gets an ACK, then a BYE; retransmits only the ACK."""
    if call._invite is None:
        return
    known = call._forks.get(stray_2xx.to_tag(response))
    if known is not None:
        call.endpoint.send_raw(*known)
        return
    try:
        fork = Dialog.from_response(call._invite, response)
    except ValueError:
        return
    dest = call_dialog.dest_for_dialog(call, fork)
    if dest is None:
        call_dialog.after_hop(
            call, fork, then=lambda: ack_and_bye_fork(call, response), failed=lambda why: None
        )
        return
    stray_2xx.ack_and_bye(call.endpoint, call.call_id, fork, dest, call._forks)


def authenticate(call: OutboundCall, response: SipResponse) -> None:
    """Answer a 401/407 with digest credentials (§22.2; RFC 7616, RFC 8760).

    Every realm answered so far is answered again on the new INVITE (a
    proxy's 407 and the callee's 401, §22.3); a realm challenged again ends
    the call unless its nonce was merely stale (once). The rounds are bounded
    (:data:`~ringcast.sip.digest.MAX_AUTH_ROUNDS`), so no challenge loop.
    """
    try:
        if call._invite_auth is None:  # the first challenge of this target's INVITEs
            call._invite_auth = call._digest.attempt()
        realms = call._invite_auth.on_challenge(response)
    except AuthFailure as exc:
        call.error = str(exc)  # names realms, never the password
        on_final(call, response)
        return
    logger.info(
        "call %s: answering %s digest challenge for %s as %s",
        call.call_id,
        response.status_code,
        ", ".join(repr(r) for r in realms),
        call.spec.username,
    )
    send_invite(call)


def fail_over(call: OutboundCall, response: SipResponse) -> None:
    """Send the INVITE to the next server of the target (RFC 3263 §4.3).

    §4.3: the new request is the same one with a new Via branch (a new
    transaction), so the CSeq stays. Only before the callee was reached:
    a server that let it ring and then failed is not bypassed, or it could
    ring twice. Bounded by the servers :meth:`SipEndpoint.locate` found
    (at most MAX_TARGETS per target). A 503's Retry-After (§21.5.4) is kept
    for the record when no server answers otherwise.
    """
    assert call._dest is not None
    note_failed_server(call, response)
    call._dest = call._next_servers.pop(0)
    logger.info(
        "call %s: %s, trying the next server %s",
        call.call_id,
        call._failed_servers[-1],
        call._dest,
    )
    call.attempt = Attempt.SENT
    send_invite(call, same_cseq=True)


def note_failed_server(call: OutboundCall, response: SipResponse) -> None:
    """Remember why the current server failed, and the shortest Retry-After (§20.33)."""
    if isinstance(response, SyntheticResponse):
        why = response.detail or f"{response.status_code} {response.reason_phrase}"
    else:
        why = f"{response.status_code} {response.reason_phrase}"
        delay = retry_after(response) if response.status_code == 503 else None
        if delay is not None and (call.retry_after is None or delay < call.retry_after):
            call.retry_after = delay
    call._failed_servers.append(f"{call._dest} {why}")


def redirect(call: OutboundCall, response: SipResponse) -> None:
    """Follow a 3xx once (§8.1.3.4): its Contacts, best ``q`` first.

    The first is called now; the others wait in ``_redirect_targets`` for
    that one to fail (:func:`next_contact`), at most MAX_REDIRECT_TARGETS.
    """
    targets = redirect_targets(response, limit=MAX_REDIRECT_TARGETS, skip=call._request_uri)
    call._redirected = True
    call._redirect_targets = targets[1:]
    logger.info(
        "call %s: %s redirect to %s", call.call_id, response.status_code, ", ".join(targets)
    )
    call_target(call, targets[0])


def next_contact(call: OutboundCall, response: SipResponse) -> None:
    """§8.1.3.4: "When a failure for a particular contact address is received,
    the client SHOULD try the next contact address" (a new transaction)."""
    target = call._redirect_targets.pop(0)
    logger.info(
        "call %s: %s from %s, trying %s",
        call.call_id,
        response.status_code,
        call._request_uri,
        target,
    )
    call_target(call, target)


def call_target(call: OutboundCall, target: str) -> None:
    """A new INVITE (new transaction, CSeq + 1) to a redirect target."""
    call._request_uri = target
    call.dialog = None
    call.attempt = Attempt.LOCATING
    call._digest.reset()
    call._invite_auth = None  # its servers challenge afresh
    call.endpoint.spawn(send_redirected_invite(call, target), name=f"sip-redirect-{call.call_id}")


async def send_redirected_invite(call: OutboundCall, target: str) -> None:
    if call.state is CallState.ENDED:  # hung up (or timed out) meanwhile
        return
    if not call.spec.proxy:
        # The Contact's ;transport= (and maddr) say how to reach it (RFC 3263
        # §4.1, §19.1.1); the call's own transport otherwise.
        transport = uri_transport(target) or call.spec.transport
        try:
            servers = await call.endpoint.locate(target, transport, tls=call.spec.tls)
        except (OSError, ValueError) as exc:
            if call.ended.is_set():  # hung up while the target was looked up
                return
            why = f"cannot resolve redirect target {target}: {exc}"
            if call._redirect_targets:  # §8.1.3.4: a failure too; on to the next Contact
                logger.info("call %s: %s", call.call_id, why)
                call_target(call, call._redirect_targets.pop(0))
                return
            call.error = why
            call.local_failure = True
            call._finish_unanswered(503, "Service Unavailable", ended_by=None)
            return
        if call.ended.is_set():
            return
        call._dest, call._next_servers = servers[0], servers[1:]
        # Via and Contact name the transport the callee answers on (§8.1.1.8).
        call._contact = call.endpoint.contact_for(call._dest, call._from_user)
    call.attempt = Attempt.SENT
    send_invite(call)


def on_final(call: OutboundCall, response: SipResponse) -> None:
    status = response.status_code
    ended_by: str | None = "remote"
    if isinstance(response, SyntheticResponse):
        ended_by = None
        call.local_failure = not call.canceled_by_us
        if call.error is None:
            if status == 408 and response.detail == "Timer B":
                call.error = f"no response from {call._dest} (Timer B)"
            elif status == 408:
                call.error = f"no final response from {call._dest} after CANCEL"
            else:
                call.error = response.detail or f"cannot reach {call._dest}"
    elif call.canceled_by_us and status == 487:
        ended_by = "local"
    elif status in (401, 407) and call.error is None:
        rounds = call._invite_auth.rounds if call._invite_auth is not None else 0
        if rounds:
            call.error = (
                f"authentication failed: still challenged after {rounds} rounds of credentials"
            )
        else:
            call.error = "authentication required but no credentials configured"
    if status == 503 or (call._failed_servers and status == 408):
        note_failed_server(call, response)
        if len(call._failed_servers) > 1 or call.retry_after is not None:
            # RFC 3263 §4.3 / RFC 3261 §21.5.4: every server said no; the
            # record says which, and when to try again.
            call.error = "servers unavailable: " + "; ".join(call._failed_servers)
            if call.retry_after is not None:
                call.error += f" (Retry-After {call.retry_after} s)"
    call._finish_unanswered(status, response.reason_phrase, ended_by=ended_by)


def _loose_route(proxy: str) -> str:
    uri = proxy.strip()
    if uri.startswith("<"):
        uri = uri[1:].split(">", 1)[0]
    if not uri.lower().startswith(("sip:", "sips:")):
        uri = f"sip:{uri}"
    if ";lr" not in uri.lower():
        uri += ";lr"
    return f"<{uri}>"
