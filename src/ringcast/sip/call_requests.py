"""Requests the callee sends inside the dialog, answered for the call (§12.2.2).

Functions of :class:`~ringcast.sip.call.OutboundCall`, its owner:
:func:`~ringcast.sip.uac_logic.request_step` decides, these apply. BYE ends
the call (§15.1.2); re-INVITE and UPDATE get our (unchanged) media with SDP
version + 1, 488 when their offer lacks the codec in use (§14.2), or 491 when
they cross our session refresh; OPTIONS and INFO get 200 (INFO DTMF is
recorded, RFC 6086); NOTIFY reports our REFER (RFC 3515 §2.4.4); a REFER is
declined (603). The ACK of our 2xx to a re-INVITE without SDP brings the
answer (§13.2.1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip import call_refresh, session_timer
from ringcast.sip.call_spec import parse_dtmf_info
from ringcast.sip.message import ALLOW, Destination, build_response
from ringcast.sip.sdp import MediaAnswer
from ringcast.sip.uac_logic import CallState, RequestStep, request_step

if TYPE_CHECKING:
    from ringcast.sip.call import OutboundCall

logger = logging.getLogger(__name__)


def answer(call: OutboundCall, request: SipRequest, source: Destination) -> SipResponse:
    """Answer an in-dialog request from the callee (§12.2.2): :func:`request_step`
    decides, this applies it.

    The endpoint sends what is returned. BYE ends the call; re-INVITE and
    UPDATE get our (unchanged) media with SDP version + 1, 488 when their
    offer lacks the codec in use, or 491 when they cross our own session
    refresh; OPTIONS and INFO get 200 (INFO DTMF is recorded).
    """
    dialog = call.dialog
    step = request_step(
        request.method,
        state=call.state,
        dialog=dialog.state if dialog is not None else None,
        cseq_in_order=dialog.check_remote_cseq(request) if dialog is not None else True,
        refresh_pending=call._refresh_pending,
        has_body=bool(request.body),
    )
    if step is RequestStep.NO_DIALOG:
        return build_response(request, 481)
    if step is RequestStep.CSEQ_OUT_OF_ORDER:
        return build_response(request, 500, headers={"Retry-After": "1"})
    if step is RequestStep.BYE:
        return on_remote_bye(call, request)
    if step is RequestStep.GLARE:
        logger.info(
            "call %s: %s crossed our %s: 491",
            call.call_id,
            request.method,
            call._refresh_pending,
        )
        return build_response(request, 491)
    if step is RequestStep.REINVITE:
        return on_reinvite(call, request, source)
    if step is RequestStep.UPDATE:
        return session_response(call, request, with_sdp=bool(request.body))
    if step is RequestStep.OPTIONS:
        return build_response(request, 200, headers={"Allow": ALLOW, "Accept": "application/sdp"})
    if step is RequestStep.INFO:
        on_info(call, request)
        return build_response(request, 200)
    if step is RequestStep.CANCEL:
        return build_response(request, 200)
    if step is RequestStep.NOTIFY:  # no REFER of ours: no subscription (RFC 6665 §4.1.3)
        return build_response(request, call.on_notify(request) if call.on_notify else 481)
    if step is RequestStep.DECLINE:
        return build_response(request, 603)
    return build_response(request, 405, headers={"Allow": ALLOW})


def on_info(call: OutboundCall, request: SipRequest) -> None:
    digit = parse_dtmf_info(request.content_type or "", request.body)
    if digit is None:
        return
    call.dtmf_info.append(digit)
    logger.info("call %s: DTMF %s via INFO", call.call_id, digit)
    if call.on_dtmf is not None:
        try:
            call.on_dtmf(digit)
        except Exception:
            logger.exception("on_dtmf callback failed for call %s", call.call_id)


def on_remote_bye(call: OutboundCall, request: SipRequest) -> SipResponse:
    logger.info("call %s: callee sent BYE", call.call_id)
    if call.state in (CallState.CALLING, CallState.RINGING, CallState.CANCELING):
        call._finish_unanswered(487, "Request Terminated", ended_by="remote")
    elif call._bye_done is None:
        call._end("remote")
    return build_response(request, 200)


def session_response(call: OutboundCall, request: SipRequest, *, with_sdp: bool) -> SipResponse:
    """200 to a re-INVITE/UPDATE, or 488 when its offer is unacceptable.

    §14.2: a UAS that cannot accept the new offer answers 488 and the
    session goes on unchanged (no target refresh, no session timer change).
    """
    offered: MediaAnswer | None = None
    if with_sdp and request.body:
        try:
            offered = call._sdp.read_remote(request.body, offer=True)
        except ValueError as exc:
            logger.info("call %s: refusing %s offer (488): %s", call.call_id, request.method, exc)
            return build_response(
                request, 488, headers={"Warning": '305 ringcast "Incompatible media format"'}
            )
    if call.dialog is not None:
        call.dialog.refresh_target(request)
    extra: dict[str, str] = {"Contact": call._contact, "Allow": ALLOW}
    asked = session_timer.from_callee_request(call_refresh.session_expires_header(request))
    if asked is not None:
        extra["Session-Expires"] = session_timer.answer_header(asked)
        extra["Require"] = "timer"
        call._session_timer = asked
        call_refresh.arm_session_refresh(call)
    body = b""
    if offered is not None:
        call._set_remote_media(offered)
    if with_sdp:
        body = call._sdp.local_sdp(offered)
    return build_response(request, 200, headers=extra, body=body, content_type="application/sdp")


def on_reinvite(call: OutboundCall, request: SipRequest, source: Destination) -> SipResponse:
    assert call.dialog is not None
    response = session_response(call, request, with_sdp=True)
    # The 2xx is re-sent until its ACK by the endpoint's INVITE server transaction.
    cseq = request.cseq.seq if request.cseq else 0
    if 200 <= response.status_code < 300:
        # No SDP in the re-INVITE: our 2xx is the offer and the ACK brings the answer.
        call._offer_in_2xx = None if request.body else cseq
    return response


def on_ack(call: OutboundCall, request: SipRequest) -> None:
    """The ACK for our 2xx to the callee's re-INVITE (its retransmission stops in the
    endpoint's server transaction).

    When that 2xx carried our offer (a re-INVITE without SDP), the ACK
    carries the answer (RFC 3261 §13.2.1, §14.2): it is applied like an offer.
    """
    cseq = request.cseq
    if cseq is None or call._offer_in_2xx != cseq.seq or call.state is not CallState.ANSWERED:
        return
    call._offer_in_2xx = None
    call._apply_remote_answer(request.body, "SDP answer in ACK")
