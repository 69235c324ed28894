"""Our side of RFC 4028 session timers for one outbound call.

Functions of :class:`~ringcast.sip.call.OutboundCall`, its owner: read the
interval from the 2xx (pure: :mod:`ringcast.sip.session_timer`), arm the one
timer it names (§10), send the refresh (UPDATE when the callee allows it, else
a re-INVITE with our unchanged SDP), ACK a refresh re-INVITE's 2xx with its
CSeq (§13.2.2.4, kept for retransmissions after Timer M, RFC 6026), and apply
:func:`~ringcast.sip.uac_logic.in_dialog_step`'s decision on its response.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip import call_dialog, session_timer
from ringcast.sip.call_spec import glare_retry_delay
from ringcast.sip.message import Destination, new_branch
from ringcast.sip.uac_logic import CallState, CallTimer, InDialogStep

if TYPE_CHECKING:
    from ringcast.sip.call import OutboundCall

logger = logging.getLogger(__name__)

MAX_REINVITE_ACKS = 4  # ACKs of our re-INVITEs' 2xx kept to answer late retransmissions


def session_expires_header(message: SipRequest | SipResponse) -> str | None:
    """Session-Expires, or its compact form ``x`` (RFC 4028 §4)."""
    return message.headers.get_first("session-expires") or message.headers.get_first("x")


def parse_session_timer(call: OutboundCall, response: SipResponse) -> None:
    allow = ",".join(response.headers.get("allow")).upper()
    call._peer_allows_update = "UPDATE" in allow
    timer = session_timer.from_response(session_expires_header(response))
    if timer is not None:
        call._session_timer = timer


def arm_session_refresh(call: OutboundCall) -> None:
    """RFC 4028 §10: the one session timer :func:`session_timer.next_timer` names."""
    call._stop_timer(CallTimer.REFRESH)
    call._stop_timer(CallTimer.SESSION_EXPIRY)
    if call._session_timer is None or call.state is not CallState.ANSWERED:
        return
    timer, delay = session_timer.next_timer(call._session_timer)
    call._start_timer(timer, delay)


def send_refresh(call: OutboundCall) -> None:
    if call.state is not CallState.ANSWERED or call.dialog is None:
        return
    dest = call_dialog.in_dialog_destination(call)
    if dest is None:  # a target refresh named a host not looked up yet
        call_dialog.after_hop(
            call,
            call.dialog,
            then=functools.partial(send_refresh, call),
            failed=functools.partial(call_dialog.on_hop_lost, call),
        )
        return
    assert call._session_timer is not None  # REFRESH is only armed with one
    extra = {
        "Contact": call._contact,
        "Supported": "timer",
        "Session-Expires": call._session_timer.header,
    }
    method = "UPDATE" if call._peer_allows_update else "INVITE"
    logger.info("call %s: session refresh with %s", call.call_id, method)
    call._refresh_pending = method
    call_dialog.send_in_dialog(
        call,
        method,
        dest,
        functools.partial(on_refresh_response, call, dest),
        sdp=call._sdp.local_sdp if method == "INVITE" else None,
        extra=extra,
    )


def on_refresh_response(
    call: OutboundCall,
    dest: Destination,
    request: SipRequest,
    response: SipResponse,
    step: InDialogStep,
) -> None:
    if step is InDialogStep.WAIT:
        return
    call._refresh_pending = None
    if call.state is not CallState.ANSWERED:
        return
    if step is InDialogStep.DONE:
        if request.method == "INVITE" and call.dialog is not None:
            ack_refresh(call, request, dest)
            call._apply_remote_answer(response.body, "SDP in refresh answer")
        timer = session_timer.from_response(session_expires_header(response))
        if timer is not None:
            call._session_timer = timer
        arm_session_refresh(call)
    elif step is InDialogStep.SESSION_GONE:  # RFC 4028 §10: the session is gone
        logger.info(
            "call %s: session refresh got %s, ending call", call.call_id, response.status_code
        )
        call.endpoint.spawn(call._send_bye(), name=f"sip-bye-refresh-{call.call_id}")
    elif step is InDialogStep.GLARE_RETRY:
        # §14.1: our request crossed one of the callee's; try again after a
        # random 2.1-4 s (we own the Call-ID), the same method.
        delay = glare_retry_delay()
        logger.info("call %s: session refresh got 491, retrying in %.2f s", call.call_id, delay)
        call._start_timer(CallTimer.REFRESH, delay)
    else:
        if request.method == "UPDATE":
            call._peer_allows_update = False  # fall back to re-INVITE next time
        arm_session_refresh(call)


def ack_refresh(call: OutboundCall, request: SipRequest, dest: Destination) -> None:
    """ACK the 2xx to our refresh re-INVITE with its CSeq (§13.2.2.4), kept for
    that 2xx's retransmissions after Timer M (RFC 6026)."""
    assert call.dialog is not None
    seq = request.cseq.seq if request.cseq else call.dialog.local_seq
    ack = call.dialog.create_request("ACK", cseq=seq)
    for name in ("authorization", "proxy-authorization"):
        for value in request.headers.get(name):
            ack.headers.append(name, value)
    call.endpoint.stamp_via(ack, dest, new_branch())
    call._reinvite_acks[seq] = (bytes(ack), dest)
    while len(call._reinvite_acks) > MAX_REINVITE_ACKS:
        del call._reinvite_acks[min(call._reinvite_acks)]
    call.endpoint.send_raw(bytes(ack), dest)
