"""One outbound call, UAC side: INVITE -> 1xx -> final -> ACK -> BYE / CANCEL.

The owner of the call: it holds the state (:class:`CallState`, changed only by
``_set_state``), the dialog (:mod:`ringcast.sip.dialog`), its named timers,
the offer/answer state (:mod:`ringcast.sip.offer_answer`) and the end of the
call. Every decision (a response, a callee's request, a timer, a hang-up) is
taken by a pure function of :mod:`ringcast.sip.uac_logic`; the call applies it
(STYLE habit 4), through the modules of its parts, each a set of functions of
the call:

- :mod:`ringcast.sip.call_invite`: the INVITE, its responses, ACK, forks,
  digest, RFC 3263 failover and 3xx redirects (§13.2, §22.2, §8.1.3.4);
- :mod:`ringcast.sip.call_requests`: requests the callee sends in the dialog
  (BYE, re-INVITE, UPDATE, INFO, NOTIFY, OPTIONS; §12.2.2, §14, RFC 6086);
- :mod:`ringcast.sip.call_refresh`: our side of RFC 4028 session timers;
- :mod:`ringcast.sip.call_dialog`: the dialog's next hop and our requests in
  it, with their digest rounds (§12.2.1.1, §22.3).

RFC 3261 §9.1 (CANCEL), §15.1.1 (BYE) are here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiosipua.headers import (
    CaseInsensitiveDict,
    parse_address,
    stringify_address,
    stringify_uri,
)
from aiosipua.message import SipRequest, SipResponse

from ringcast.domain import Outcome
from ringcast.sip import call_dialog, call_invite, call_refresh, call_requests, session_timer
from ringcast.sip.call_spec import CallSpec, validate_headers
from ringcast.sip.causes import outcome_for, reason_phrase
from ringcast.sip.dialog import Dialog
from ringcast.sip.digest import AuthAttempt, DigestSession
from ringcast.sip.ended import EndedCall
from ringcast.sip.flag import Flag
from ringcast.sip.hops import Hops
from ringcast.sip.message import Destination, new_tag
from ringcast.sip.offer_answer import OfferAnswer
from ringcast.sip.sdp import MediaAnswer
from ringcast.sip.transaction import ClientTransaction, SyntheticResponse
from ringcast.sip.uac_logic import (
    Attempt,
    CallState,
    CallTimer,
    HangupStep,
    InDialogStep,
    TimerStep,
    hangup_step,
    timer_step,
)

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

__all__ = ["CallSpec", "CallState", "OutboundCall"]

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class OutboundCall:
    """One outbound call; it joins ``endpoint``'s dialog index as it is made.

    ``await setup()`` returns True once answered (ACK sent) and False when the
    call ended unanswered; it never raises for SIP outcomes. ``status_code``/
    ``reason`` hold the final response to the INVITE (200 for answered calls,
    also after BYE; synthetic 408 for Timer B; 503 when the transport failed;
    487 after our CANCEL). When the target has several servers (RFC 3263), a
    503, a transport failure or Timer B moves the INVITE to the next one
    (§4.3); ``retry_after`` keeps the shortest Retry-After of the 503s, and
    ``error`` names every server tried when none answered otherwise.
    ``ended`` is set when the call is over for any reason; ``ended_at`` is
    when the session ended: for our BYE, when it was sent (§15.1.1), not when
    (or whether) the callee answered it.

    ``on_media`` hears every remote media description accepted after the
    answer (a re-INVITE or UPDATE offer, or the answer in the ACK of a
    re-INVITE we answered with an offer, RFC 3264 §8): the owner re-aims its
    RTP stream there. ``answer`` always holds the latest one.

    Besides ``state`` (:class:`CallState`) and ``attempt`` (:class:`Attempt`,
    how far the current INVITE got), the call keeps facts for the record
    only: ``canceled_by_us`` (we sent or meant a CANCEL), ``local_failure``
    (the final status was made up locally: Timer B, a transport error) and
    ``ended_by``. Once ended, it drops its listeners, timers and transactions,
    so nothing refers back to it and reference counting frees it.
    """

    # A few thousand live at once: their fields in slots, not a dict of ~1.6 KB each
    # (bench/dialer.py memory)
    # fmt: off
    __slots__ = (
        "answered_at", "attempt", "call_id", "canceled_by_us", "dialog", "dtmf_info", "ended",
        "ended_at", "ended_by", "endpoint", "error", "hangup_reason", "invite_sent_at",
        "local_failure", "local_tag", "on_dtmf", "on_media", "on_notify", "on_state", "reason",
        "retry_after", "spec", "state", "status_code", "_ack", "_bye_done", "_contact", "_cseq",
        "_dest", "_digest", "_failed_servers", "_forks", "_from_user", "_from_value", "_hops",
        "_invite", "_invite_auth", "_invite_txn", "_next_servers", "_offer_in_2xx",
        "_peer_allows_update", "_redirect_targets", "_redirected", "_refresh_pending",
        "_reinvite_acks", "_request_uri", "_sdp", "_session_timer", "_setup_done", "_timers",
        "_to_value", "__weakref__",
    )
    # fmt: on

    def __init__(
        self,
        endpoint: SipEndpoint,
        spec: CallSpec,
        *,
        on_state: Callable[[CallState], None] | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        on_media: Callable[[MediaAnswer], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self.on_state = on_state
        self.on_dtmf = on_dtmf
        self.on_media = on_media
        self.on_notify: Callable[[SipRequest], int] | None = None  # REFER progress: a status
        self.call_id = endpoint.new_call_id()
        self.local_tag = new_tag()
        self.state = CallState.IDLE
        self.attempt = Attempt.LOCATING
        self.dialog: Dialog | None = None
        self.ended = Flag()  # no deque until someone waits (.flag)
        self.invite_sent_at: datetime | None = None
        self.answered_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.status_code = 0
        self.reason = ""
        self.canceled_by_us = False
        self.ended_by: str | None = None
        self.error: str | None = None
        self.hangup_reason: str | None = None
        self.local_failure = False
        self.dtmf_info: list[str] = []
        self.retry_after: int | None = None  # seconds, from the 503s (RFC 3261 §21.5.4)

        self._sdp = OfferAnswer(spec.media)
        to = parse_address(spec.to)  # not kept: the two texts below are what is used
        if not _SIP_URI.search(spec.to):
            raise ValueError(f"to must be a sip: or sips: URI, not {spec.to!r}")
        if not to.uri.host:
            raise ValueError(f"to has no host: {spec.to!r}")
        to.params.pop("tag", None)
        self._request_uri = stringify_uri(to.uri)
        self._to_value = stringify_address(to)
        self._cseq = 0
        self._invite: SipRequest | None = None
        self._invite_txn: ClientTransaction | None = None
        self._dest: Destination | None = None
        self._next_servers: list[Destination] = []  # RFC 3263 §4.3: tried after _dest fails
        self._failed_servers: list[str] = []  # "host:port why", for the error
        self._redirected = False  # a 3xx was followed (only one is, §8.1.3.4)
        self._redirect_targets: list[str] = []  # Contacts of the 3xx followed, not tried yet
        self._from_user: str | None = None
        self._digest = DigestSession(spec.username or "", spec.password or "")
        self._invite_auth: AuthAttempt | None = None  # the INVITE's rounds, from a 401/407
        self._ack: tuple[bytes, Destination] | None = None
        self._timers: dict[CallTimer, asyncio.TimerHandle] = {}
        self._session_timer: session_timer.SessionTimer | None = None
        self._refresh_pending: str | None = None  # method of our session refresh in flight
        self._setup_done: asyncio.Future[bool] = endpoint.loop.create_future()
        self._bye_done: asyncio.Future[None] | None = None  # our BYE, once sent
        self._forks: dict[str, tuple[bytes, Destination]] = {}  # other 2xx tags -> our ACK
        self._hops = Hops(endpoint, self.call_id, tls=spec.tls)  # dialog next hops (RFC 3263)
        self._peer_allows_update = False
        # CSeq of our re-INVITE -> the ACK sent for its 2xx (§13.2.2.4), re-sent
        # when that 2xx is retransmitted after Timer M ended the transaction.
        self._reinvite_acks: dict[int, tuple[bytes, Destination]] = {}
        self._offer_in_2xx: int | None = None  # CSeq of a re-INVITE whose 2xx carried our offer
        self._from_value = ""
        self._contact = ""
        validate_headers(spec.headers)
        endpoint.add_call(self)

    def __repr__(self) -> str:
        return f"<OutboundCall {self.call_id} {self.state.value} {self.status_code}>"

    # --- public surface ---------------------------------------------------------

    @property
    def outcome(self) -> Outcome:
        """The operator's outcome, through the cause table (:mod:`ringcast.sip.causes`)."""
        if self.status_code == 0 or self.local_failure:
            return Outcome.FAILED  # no answer from the network at all: unreachable
        if 200 <= self.status_code < 300 and self.answered_at is None and not self.canceled_by_us:
            return Outcome.FAILED  # 2xx with an unusable SDP answer: ACKed and BYEd
        return outcome_for(self.status_code, canceled_by_us=self.canceled_by_us)

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    @property
    def answer(self) -> MediaAnswer | None:
        """The callee's current media description (None until answered)."""
        return self._sdp.answer

    @property
    def early_answer(self) -> MediaAnswer | None:
        return self._sdp.early_answer

    @property
    def signalling_host(self) -> str | None:
        """The IP the call's INVITE went to (the callee, or the proxy or SBC in front
        of it): an RTP source the media plane may latch to behind NAT."""
        return self._dest.host if self._dest is not None else None

    @property
    def session_expires(self) -> int | None:
        """The RFC 4028 session interval in force (seconds), if any."""
        return self._session_timer.interval if self._session_timer is not None else None

    @property
    def session_refresher(self) -> str | None:
        """Who refreshes the session, in RFC 4028 terms of our INVITE: uac (us) or uas."""
        if self._session_timer is None:
            return None
        return "uac" if self._session_timer.we_refresh else "uas"

    async def setup(self) -> bool:
        """Send the INVITE and wait for the outcome (§13.2).

        True when answered; False when the call ended without an answer
        (rejected, busy, timed out, canceled, unreachable). Cancelling the
        awaiting task cancels the call (CANCEL or BYE in the background).
        """
        try:
            if self.state is CallState.IDLE:
                self.invite_sent_at = _now()
                self._set_state(CallState.CALLING)
                await call_invite.send_first_invite(self)
            return await asyncio.shield(self._setup_done)
        except asyncio.CancelledError:
            if not self.ended.is_set():
                self.endpoint.spawn(
                    self.hangup("setup cancelled"), name=f"sip-abort-{self.call_id}"
                )
            raise

    async def hangup(self, reason: str = "normal") -> None:
        """End the call: BYE when answered, CANCEL while ringing (§9.1, §15.1.1).

        Idempotent; returns when the BYE/CANCEL transaction is over (bounded by
        Timer F, and by 64*T1 for the INVITE's final after a CANCEL).
        """
        if self.hangup_reason is None:
            self.hangup_reason = reason
        step = hangup_step(self.state, self.attempt)
        if step is HangupStep.NOTHING:
            return
        if step is HangupStep.BYE:
            await self._send_bye()
            return
        if step is not HangupStep.WAIT:
            self._cancel_unanswered(step)
        if not self.ended.is_set():
            await self._wait_ended()

    def uses_tcp_peer(self, addr: tuple[str, int]) -> bool:
        """Whether this call's requests go to ``addr`` over TCP."""
        dest = self._dest
        if dest is None:
            return False
        if dest.transport in ("tcp", "tls") and dest.addr == addr:
            return True
        hop = call_dialog.in_dialog_destination(self) if self.dialog is not None else None
        return hop is not None and hop.transport in ("tcp", "tls") and hop.addr == addr

    def abort(self, why: str) -> None:
        """End the call locally without signalling (the endpoint is going away)."""
        if self.state is CallState.ENDED:
            return
        if self.error is None:
            self.error = why
        if self.answered_at is None:
            self.local_failure = True
        self._end("local")

    async def cancel(self) -> None:
        """Alias of :meth:`hangup` while the call is not answered."""
        await self.hangup("canceled")

    # --- state and timers -------------------------------------------------------

    def _set_state(self, new: CallState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        if logger.isEnabledFor(logging.INFO):  # the .value look-ups cost on every change
            logger.info(
                "call %s: %s -> %s to=%s status=%s",
                self.call_id,
                old.value,
                new.value,
                self._request_uri,
                self.status_code or "-",
            )
        if self.on_state is not None:
            try:
                self.on_state(new)
            except Exception:  # a listener bug must not break signalling
                logger.exception("on_state callback failed for call %s", self.call_id)

    def _start_timer(self, timer: CallTimer, delay: float) -> None:
        self._stop_timer(timer)
        self._timers[timer] = self.endpoint.loop.call_later(delay, self._on_timer, timer)

    def _stop_timer(self, timer: CallTimer) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _on_timer(self, timer: CallTimer) -> None:
        """A call timer fired: :func:`timer_step` decides, this applies."""
        self._timers.pop(timer, None)
        step = timer_step(self.state, timer)
        if step is TimerStep.CANCEL:
            logger.info("call %s: ring timeout after %s s", self.call_id, self.spec.ring_timeout)
            if self.hangup_reason is None:
                self.hangup_reason = "ring-timeout"
            self._cancel_unanswered(hangup_step(self.state, self.attempt))
        elif step is TimerStep.GIVE_UP_INVITE:
            if self._invite_txn is not None:
                self.endpoint.transaction_give_up(self._invite_txn)
        elif step is TimerStep.BYE:
            why = "max-duration" if timer is CallTimer.MAX_DURATION else "session-expired"
            if timer is CallTimer.MAX_DURATION:
                logger.info(
                    "call %s: max duration %s s reached", self.call_id, self.spec.max_duration
                )
            else:
                logger.info("call %s: session expired without a refresh (RFC 4028)", self.call_id)
            self.hangup_reason = self.hangup_reason or why
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-{why}-{self.call_id}")
        elif step is TimerStep.REFRESH:
            call_refresh.send_refresh(self)

    async def _wait_ended(self) -> None:
        bound = self.endpoint.timers.b * 2 + 1.0
        try:
            await asyncio.wait_for(self.ended.wait(), bound)
        except TimeoutError:
            logger.warning("call %s did not end within %.1f s", self.call_id, bound)
            self._end("local")

    # --- the end of the call ----------------------------------------------------

    @property
    def _has_credentials(self) -> bool:
        return bool(self.spec.username and self.spec.password is not None)

    def _finish_unanswered(self, status: int, reason: str, *, ended_by: str | None) -> None:
        self.status_code = status
        self.reason = reason or reason_phrase(status)
        self._resolve_setup(False)
        self._end(ended_by)

    def _resolve_setup(self, value: bool) -> None:
        if not self._setup_done.done():
            self._setup_done.set_result(value)

    def _end(self, ended_by: str | None) -> None:
        """The call is over: stop its timers, drop what refers back to it (so reference
        counting frees it, no cycle left for the collector), tell the owner, forget it."""
        if self.state is CallState.ENDED:
            return
        self.ended_by = ended_by
        if self.ended_at is None:  # our BYE set it when it was sent (§15.1.1)
            self.ended_at = _now()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.dialog is not None:
            self.dialog.terminate()
        self._resolve_setup(False)
        self._set_state(CallState.ENDED)
        self.on_state = self.on_dtmf = self.on_media = None
        self.ended.set()
        remains = self._remains()
        if self._invite_txn is not None:  # it passes retransmitted 2xx up until Timer M
            self.endpoint.transactions.hand_over(self._invite_txn, remains.on_stray_2xx)
        self.endpoint.forget_call(self, remains=remains)

    def _remains(self) -> EndedCall:
        """What the endpoint keeps of the ended call for 64*T1 (:mod:`.ended`)."""
        return EndedCall(
            self.endpoint,
            self.call_id,
            self.local_tag,
            remote_tag=self.dialog.remote_tag if self.dialog is not None else None,
            invite=self._invite,
            transport=self._dest.transport if self._dest is not None else "udp",
            ack=self._ack,
            reinvite_acks=self._reinvite_acks,
            forks=self._forks,
            hops=self._hops,
        )

    # --- hanging up before the answer: CANCEL ----------------------------------

    def _cancel_unanswered(self, step: HangupStep) -> None:
        """Apply a :func:`hangup_step` taken before the answer (§9.1)."""
        self.canceled_by_us = True
        if step is HangupStep.END_UNSENT:  # nothing sent: end as if 487 had come
            self._finish_unanswered(487, "Request Terminated", ended_by="local")
            return
        self._stop_timer(CallTimer.RING)
        self._set_state(CallState.CANCELING)
        if step is HangupStep.CANCEL:
            self._send_cancel()
        # CANCEL_LATER: _on_provisional sends it at the first provisional

    def _send_cancel(self) -> None:
        invite = self._invite
        assert invite is not None and self._dest is not None  # an INVITE went out
        h = CaseInsensitiveDict()
        h.append("Via", (invite.headers.get("via") or [""])[0])  # same branch (§9.1)
        h.append("Max-Forwards", "70")
        h.append("From", invite.headers.get_first("from") or "")
        h.append("To", invite.headers.get_first("to") or "")
        h.append("Call-ID", self.call_id)
        h.append("CSeq", f"{invite.cseq.seq if invite.cseq else self._cseq} CANCEL")
        for route in invite.headers.get("route"):
            h.append("Route", route)
        h.append("User-Agent", self.endpoint.user_agent)
        cancel = SipRequest(headers=h, method="CANCEL", uri=invite.uri)
        self.endpoint.start_transaction(cancel, self._dest, None, branch=_branch(invite))
        # §9.1: no final within 64*T1 of the CANCEL -> give up on the INVITE.
        self._start_timer(CallTimer.CANCEL_GUARD, self.endpoint.timers.b)

    # --- BYE --------------------------------------------------------------------

    async def _send_bye(self) -> None:
        if self.dialog is None or self.state is CallState.ENDED:
            self._end("local")
            return
        if self._bye_done is not None:
            await self._wait_ended()
            return
        self._set_state(CallState.ENDING)
        self._bye_done = self.endpoint.loop.create_future()
        dest = await call_dialog.in_dialog_hop(self)
        if dest is None:  # unresolvable next hop: end here rather than BYE a wrong address
            self._end("local")
            self._bye_done.set_result(None)
            return
        # §15.1.1: the session is over once the BYE is handed to its transaction,
        # whether or when the callee answers it (it may never: Timer F).
        self.ended_at = _now()
        call_dialog.send_in_dialog(self, "BYE", dest, self._on_bye_response)
        await asyncio.shield(self._bye_done)

    def _on_bye_response(
        self, request: SipRequest, response: SipResponse, step: InDialogStep
    ) -> None:
        if step is InDialogStep.WAIT:
            return
        if step is not InDialogStep.DONE:
            logger.info(
                "call %s: BYE got %s %s", self.call_id, response.status_code, response.reason_phrase
            )
        if response.status_code == 408 or isinstance(response, SyntheticResponse):
            # No answer to our BYE (Timer F, a lost transport): the call ended
            # when the BYE was sent, but the record says the callee never confirmed.
            detail = response.detail if isinstance(response, SyntheticResponse) else ""
            self.error = self.error or (
                f"no answer to our BYE: {response.status_code} {response.reason_phrase}"
                + (f" ({detail})" if detail else "")
            )
        if self.ended_by is None:
            self._end("local")
        if self._bye_done is not None and not self._bye_done.done():
            self._bye_done.set_result(None)

    # --- the far end's messages, and ours inside the dialog -----------------------

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx after the INVITE transaction ended (:func:`.call_invite.on_stray_2xx`)."""
        call_invite.on_stray_2xx(self, response)

    def on_request(self, request: SipRequest, source: Destination) -> SipResponse:
        """The response to the callee's request in the dialog (:mod:`.call_requests`)."""
        return call_requests.answer(self, request, source)

    def on_ack(self, request: SipRequest) -> None:
        """The ACK of our 2xx to the callee's re-INVITE (:mod:`.call_requests`)."""
        call_requests.on_ack(self, request)

    async def send_request(
        self, method: str, extra: dict[str, str], on_final: Callable[[SipResponse], None]
    ) -> bool:
        """Send ``method`` (a REFER, :mod:`ringcast.sip.refer`) inside the answered
        dialog; ``on_final`` hears its final response. False when there is no dialog."""
        if self.dialog is None or self.state is not CallState.ANSWERED:
            return False
        dest = await call_dialog.in_dialog_hop(self)
        if dest is None:
            return False

        def handler(request: SipRequest, response: SipResponse, step: InDialogStep) -> None:
            if step is not InDialogStep.WAIT:
                on_final(response)

        # a REFER creates a subscription usage: it carries our Contact (RFC 3515 §2.4.1)
        call_dialog.send_in_dialog(
            self, method, dest, handler, extra={"Contact": self._contact, **extra}
        )
        return True

    def _set_remote_media(self, answer: MediaAnswer) -> None:
        """Adopt a new remote media description and tell the owner (RFC 3264 §8)."""
        old = self._sdp.answer
        if old is not None and (answer.host, answer.port) != (old.host, old.port):
            logger.info(
                "call %s: callee moved media to %s:%s", self.call_id, answer.host, answer.port
            )
        self._sdp.answer = answer
        if self.on_media is not None:
            try:
                self.on_media(answer)
            except Exception:  # a listener bug must not break signalling
                logger.exception("on_media callback failed for call %s", self.call_id)

    def _apply_remote_answer(self, body: bytes | None, what: str) -> None:
        """Take the callee's SDP answer to our offer, if any; a bad one is ignored.

        The answer may change the direction (a held callee resuming, RFC 3264
        §8.4) or the address: applied like a callee's offer."""
        if not body:
            return
        try:
            answer = self._sdp.read_remote(body, offer=False)
        except ValueError as exc:
            logger.info("call %s: ignoring %s: %s", self.call_id, what, exc)
            return
        self._set_remote_media(answer)


_SIP_URI = re.compile(r"^\s*(?:\"[^\"]*\"\s*|[^<\"]*)?<?\s*sips?:[^\s]", re.I)


def _branch(request: SipRequest) -> str:
    via = request.headers.get_first("via") or ""
    idx = via.find("branch=")
    if idx == -1:
        return ""
    rest = via[idx + 7 :]
    return rest.split(";", 1)[0].split(",", 1)[0].strip()
