"""One outbound call, UAC side: INVITE -> 1xx -> final -> ACK -> BYE / CANCEL.

The owner of the call: it holds the dialog (:mod:`ringcast.sip.dialog`), the
client transactions it starts (:mod:`ringcast.sip.transaction`), its named
timers and the offer/answer state (:mod:`ringcast.sip.offer_answer`). Every
decision (a response, a callee's request, a timer, a hang-up) is taken by a
pure function of :mod:`ringcast.sip.uac_logic`; this class applies it (STYLE
habit 4), and its state changes go through one ``_set_state``.

RFC 3261 §13.2 (UAC INVITE), §9.1 (CANCEL), §15.1.1 (BYE), §22.2 (digest),
§8.1.3.4 (3xx redirect); RFC 3263 §4.3 (failover to the next server); RFC 4028
session timers; RFC 6086 INFO.
"""

from __future__ import annotations

import asyncio
import functools
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
from ringcast.sip import session_timer
from ringcast.sip.call_spec import (
    CallSpec,
    from_header,
    glare_retry_delay,
    parse_dtmf_info,
    retry_after,
    validate_headers,
)
from ringcast.sip.causes import outcome_for, reason_phrase
from ringcast.sip.dialog import Dialog, DialogState, redirect_targets
from ringcast.sip.digest import AuthAttempt, AuthFailure, DigestSession
from ringcast.sip.hops import Hops
from ringcast.sip.message import (
    ALLOW,
    Destination,
    build_response,
    new_branch,
    new_tag,
    uri_transport,
)
from ringcast.sip.offer_answer import OfferAnswer
from ringcast.sip.sdp import MediaAnswer
from ringcast.sip.transaction import ClientTransaction, SyntheticResponse
from ringcast.sip.uac_logic import (
    Attempt,
    CallState,
    CallTimer,
    HangupStep,
    InDialogStep,
    InviteStep,
    InviteView,
    RequestStep,
    TimerStep,
    attempt_after_provisional,
    hangup_step,
    in_dialog_step,
    next_invite_step,
    request_step,
    timer_step,
)

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

__all__ = ["CallSpec", "CallState", "OutboundCall"]

logger = logging.getLogger(__name__)

MAX_REDIRECT_TARGETS = 4  # Contacts of a 3xx tried in turn (§8.1.3.4)
MAX_REINVITE_ACKS = 4  # ACKs of our re-INVITEs' 2xx kept to answer late retransmissions


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
        self.ended = asyncio.Event()
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
        self._to = parse_address(spec.to)
        if not _SIP_URI.search(spec.to):
            raise ValueError(f"to must be a sip: or sips: URI, not {spec.to!r}")
        if not self._to.uri.host:
            raise ValueError(f"to has no host: {spec.to!r}")
        self._to.params.pop("tag", None)
        self._request_uri = stringify_uri(self._to.uri)
        self._to_value = stringify_address(self._to)
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
        self._invite_auth: AuthAttempt = self._digest.attempt()
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
                await self._send_first_invite()
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
        hop = self._in_dialog_destination() if self.dialog is not None else None
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
            self._send_refresh()

    async def _wait_ended(self) -> None:
        bound = self.endpoint.timers.b * 2 + 1.0
        try:
            await asyncio.wait_for(self.ended.wait(), bound)
        except TimeoutError:
            logger.warning("call %s did not end within %.1f s", self.call_id, bound)
            self._end("local")

    # --- INVITE -----------------------------------------------------------------

    async def _send_first_invite(self) -> None:
        target = self.spec.proxy or self._request_uri
        try:
            # The URI's ;transport= first (RFC 3263 §4.1), then the call's, then the DNS.
            transport = uri_transport(target) or self.spec.transport
            servers = await self.endpoint.locate(target, transport, tls=self.spec.tls)
        except (OSError, ValueError) as exc:
            if self.state is CallState.ENDED:
                return
            self.error = f"cannot resolve {target}: {exc}"
            self.local_failure = True
            self._finish_unanswered(503, "Service Unavailable", ended_by=None)
            return
        if self.state is CallState.ENDED:  # hung up while the target was looked up
            return
        self._dest, self._next_servers = servers[0], servers[1:]
        local_host = self.endpoint.local_host_for(self._dest)
        from_value, user = from_header(self.spec.from_, local_host)
        self._from_user = user
        self._from_value = f"{from_value};tag={self.local_tag}"
        self._contact = self.endpoint.contact_for(self._dest, user)
        if self._sdp.media.host in ("0.0.0.0", "") or self.endpoint.public_ip:
            self._sdp.set_host(local_host)
        self.attempt = Attempt.SENT
        self._send_invite()
        self._start_timer(CallTimer.RING, self.spec.ring_timeout)

    def _build_invite(self, *, same_cseq: bool = False) -> SipRequest:
        if not same_cseq:
            self._cseq += 1
        h = CaseInsensitiveDict()
        h.append("Via", "")  # placeholder: stamp_via fills it, first in order
        h.append("Max-Forwards", "70")
        h.append("From", self._from_value)
        h.append("To", self._to_value)
        h.append("Call-ID", self.call_id)
        h.append("CSeq", f"{self._cseq} INVITE")
        h.append("Contact", self._contact)
        if self.spec.proxy:
            h.append("Route", _loose_route(self.spec.proxy))
        h.append("User-Agent", self.endpoint.user_agent)
        h.append("Allow", ALLOW)
        h.append("Supported", "timer")
        for name, value in self.spec.headers.items():
            h.append(name, value)
        for name, value in self._digest.headers("INVITE", self._request_uri):
            h.append(name, value)  # Proxy-Authorization first, then Authorization
        h.append("Content-Type", "application/sdp")
        body = self._sdp.initial_offer()
        return SipRequest(headers=h, body=body, method="INVITE", uri=self._request_uri)

    def _send_invite(self, *, same_cseq: bool = False) -> None:
        assert self._dest is not None  # set by _send_first_invite before any INVITE
        self._invite = self._build_invite(same_cseq=same_cseq)
        self._invite_txn = self.endpoint.send_request(
            self._invite, self._dest, self._on_invite_response
        )

    def _invite_view(self) -> InviteView:
        return InviteView(
            state=self.state,
            attempt=self.attempt,
            has_credentials=self._has_credentials,
            auth_exhausted=self._invite_auth.exhausted,
            redirected=self._redirected,
            servers_left=bool(self._next_servers),
            contacts_left=bool(self._redirect_targets),
        )

    @property
    def _has_credentials(self) -> bool:
        return bool(self.spec.username and self.spec.password is not None)

    def _on_invite_response(self, response: SipResponse) -> None:
        """TU callback for every response to the current INVITE transaction."""
        if self._invite is None:
            return
        step = next_invite_step(
            response.status_code,
            synthetic=isinstance(response, SyntheticResponse),
            has_contact=300 <= response.status_code < 400
            and bool(redirect_targets(response, limit=1, skip=self._request_uri)),
            view=self._invite_view(),
        )
        if step is InviteStep.PROVISIONAL:
            self._on_provisional(response)
        elif step is InviteStep.ANSWER:
            self._on_2xx(response, keep=True)
        elif step is InviteStep.ANSWER_THEN_BYE:
            self._on_2xx(response, keep=False)
        elif step is InviteStep.AUTHENTICATE:
            self._authenticate(response)
        elif step is InviteStep.REDIRECT:
            self._redirect(response)
        elif step is InviteStep.FAIL_OVER:
            self._fail_over(response)
        elif step is InviteStep.NEXT_CONTACT:
            self._next_contact(response)
        elif step is InviteStep.FINAL:
            self._on_final(response)

    def _on_provisional(self, response: SipResponse) -> None:
        status = response.status_code
        before = self.attempt
        self.attempt = attempt_after_provisional(before, status)
        to = response.to_addr
        if status > 100 and to is not None and to.tag and self._invite is not None:
            if self.dialog is None:
                self.dialog = Dialog.from_response(self._invite, response)
            elif self.dialog.remote_tag == to.tag:
                self.dialog.update_early(response)
        if response.body and "sdp" in (response.content_type or "").lower():
            try:
                self._sdp.early_answer = self._sdp.answer_to_us(response.body)
            except ValueError as exc:
                logger.info("call %s: ignoring early SDP: %s", self.call_id, exc)
        if status >= 180 and self.state is CallState.CALLING:
            self._set_state(CallState.RINGING)
        if self.state is CallState.CANCELING and before is Attempt.SENT:
            self._send_cancel()  # §9.1: the CANCEL waited for this first provisional

    def _on_2xx(self, response: SipResponse, *, keep: bool) -> None:
        invite = self._invite
        assert invite is not None
        to = response.to_addr
        tag = to.tag if to is not None else None
        if self.dialog is not None and self.dialog.state is DialogState.CONFIRMED:
            if (tag or "") == self.dialog.remote_tag:
                self._resend_ack()
            else:  # a second fork answered: ACK it and hang it up (§13.2.2.4)
                self._ack_and_bye_fork(response)
            return
        if not tag:
            logger.warning("call %s: 2xx without To tag (RFC 2543 peer)", self.call_id)
        if self.dialog is None or self.dialog.remote_tag != (tag or ""):
            try:
                self.dialog = Dialog.from_response(invite, response)
            except ValueError as exc:  # no To tag: no dialog to ACK or BYE in (§12.1.2)
                self._on_2xx_unroutable(response, f"unusable 2xx: {exc}")
                return
        else:
            self.dialog.confirm(response)
        if self._dest_for_dialog(self.dialog) is None:
            # §13.2.2.4: the ACK goes to the dialog's next hop, a host name not
            # looked up yet (RFC 3263). Retransmitted 2xx find no ACK to resend
            # meanwhile (_ack is None) and wait with this one.
            self._after_hop(
                self.dialog,
                then=lambda: self._on_confirmed(response, keep=keep),
                failed=lambda why: self._on_2xx_unroutable(response, why),
            )
            return
        self._on_confirmed(response, keep=keep)

    def _on_confirmed(self, response: SipResponse, *, keep: bool) -> None:
        """The 2xx's dialog is confirmed and its next hop known: ACK, then answer or BYE."""
        if self.state is CallState.ENDED:
            return
        keep = keep and self.state is not CallState.CANCELING  # hung up meanwhile
        self.status_code = response.status_code
        self.reason = response.reason_phrase or reason_phrase(response.status_code)
        self._send_ack(response)
        self._stop_timer(CallTimer.RING)
        self._parse_session_timer(response)
        if keep:
            try:
                if response.body:
                    self._sdp.answer = self._sdp.answer_to_us(response.body)
                elif self._sdp.early_answer is not None:
                    self._sdp.answer = self._sdp.early_answer
                else:
                    raise ValueError("2xx carries no SDP answer and no early SDP was seen")
            except ValueError as exc:
                self.error = str(exc)
                keep = False
        if not keep:
            self._set_state(CallState.ENDING)
            self._resolve_setup(False)
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-crossed-{self.call_id}")
            return
        self.answered_at = _now()
        self._set_state(CallState.ANSWERED)
        self._resolve_setup(True)
        if self.spec.max_duration is not None:
            self._start_timer(CallTimer.MAX_DURATION, self.spec.max_duration)
        self._arm_session_refresh()

    def _on_2xx_unroutable(self, response: SipResponse, why: str) -> None:
        """The 2xx names a next hop we cannot resolve: no ACK can reach the callee.

        Nothing is sent (never to a guessed address); the call fails locally and
        the callee ends its side when its 2xx retransmissions time out (§13.3.1.4).
        """
        if self.state is CallState.ENDED:
            return
        self.error = why
        self.local_failure = True
        self._finish_unanswered(response.status_code, response.reason_phrase, ended_by=None)

    def _send_ack(self, response: SipResponse) -> None:
        """The ACK for a 2xx is its own request, not part of the transaction (§13.2.2.4)."""
        dialog = self.dialog
        invite = self._invite
        assert dialog is not None and invite is not None and self._dest is not None
        seq = invite.cseq.seq if invite.cseq else self._cseq
        ack = dialog.create_request("ACK", cseq=seq)
        for name in ("authorization", "proxy-authorization"):
            value = invite.headers.get_first(name)
            if value:
                ack.headers.append(name, value)
        dest = self._in_dialog_destination()
        assert dest is not None  # _on_2xx resolved the next hop first
        self.endpoint.stamp_via(ack, dest, new_branch())
        self._ack = (bytes(ack), dest)
        self.endpoint.send_raw(self._ack[0], dest)

    def _resend_ack(self) -> None:
        if self._ack is not None:
            self.endpoint.send_raw(*self._ack)

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx after the INVITE transaction ended: ACK again (and BYE an unknown fork).

        The ACK must be the one for the INVITE that 2xx answers: its CSeq
        number is that INVITE's (§13.2.2.4). A late 2xx to one of our session
        refresh re-INVITEs (after Timer M, RFC 6026) gets that re-INVITE's ACK,
        not the initial INVITE's.
        """
        to = response.to_addr
        tag = (to.tag if to is not None else None) or ""
        if self.dialog is None or tag != self.dialog.remote_tag:
            self._ack_and_bye_fork(response)
            return
        seq = response.cseq.seq if response.cseq else None
        initial = self._invite.cseq.seq if self._invite and self._invite.cseq else None
        if seq is None or seq == initial:
            self._resend_ack()
            return
        ack = self._reinvite_acks.get(seq)
        if ack is not None:
            self.endpoint.send_raw(*ack)
        else:  # not an INVITE of ours we know of: no ACK of another INVITE instead
            logger.info("call %s: late 2xx for unknown INVITE CSeq %s ignored", self.call_id, seq)

    def _ack_and_bye_fork(self, response: SipResponse) -> None:
        """§13.2.2.4: every other 2xx gets an ACK, then a BYE; retransmits only the ACK."""
        if self._invite is None:
            return
        to = response.to_addr
        tag = (to.tag if to is not None else None) or ""
        known = self._forks.get(tag)
        if known is not None:
            self.endpoint.send_raw(*known)
            return
        try:
            fork = Dialog.from_response(self._invite, response)
        except ValueError:
            return
        dest = self._dest_for_dialog(fork)
        if dest is None:
            self._after_hop(
                fork, then=lambda: self._ack_and_bye_fork(response), failed=lambda why: None
            )
            return
        ack = fork.create_request("ACK", cseq=fork.local_seq)
        self.endpoint.stamp_via(ack, dest, new_branch())
        self._forks[tag] = (bytes(ack), dest)
        self.endpoint.send_raw(self._forks[tag][0], dest)
        bye = fork.create_request("BYE")
        self.endpoint.send_request(bye, dest, None)
        logger.info("call %s: 2xx from fork %s: ACKed, BYE sent", self.call_id, tag)

    def _authenticate(self, response: SipResponse) -> None:
        """Answer a 401/407 with digest credentials (§22.2; RFC 7616, RFC 8760).

        Every realm answered so far is answered again on the new INVITE (a
        proxy's 407 and the callee's 401, §22.3); a realm challenged again ends
        the call unless its nonce was merely stale (once). The rounds are bounded
        (:data:`~ringcast.sip.digest.MAX_AUTH_ROUNDS`), so no challenge loop.
        """
        try:
            realms = self._invite_auth.on_challenge(response)
        except AuthFailure as exc:
            self.error = str(exc)  # names realms, never the password
            self._on_final(response)
            return
        logger.info(
            "call %s: answering %s digest challenge for %s as %s",
            self.call_id,
            response.status_code,
            ", ".join(repr(r) for r in realms),
            self.spec.username,
        )
        self._send_invite()

    def _fail_over(self, response: SipResponse) -> None:
        """Send the INVITE to the next server of the target (RFC 3263 §4.3).

        §4.3: the new request is the same one with a new Via branch (a new
        transaction), so the CSeq stays. Only before the callee was reached:
        a server that let it ring and then failed is not bypassed, or it could
        ring twice. Bounded by the servers :meth:`SipEndpoint.locate` found
        (at most MAX_TARGETS per target). A 503's Retry-After (§21.5.4) is kept
        for the record when no server answers otherwise.
        """
        assert self._dest is not None
        self._note_failed_server(response)
        self._dest = self._next_servers.pop(0)
        logger.info(
            "call %s: %s, trying the next server %s",
            self.call_id,
            self._failed_servers[-1],
            self._dest,
        )
        self.attempt = Attempt.SENT
        self._send_invite(same_cseq=True)

    def _note_failed_server(self, response: SipResponse) -> None:
        """Remember why the current server failed, and the shortest Retry-After (§20.33)."""
        if isinstance(response, SyntheticResponse):
            why = response.detail or f"{response.status_code} {response.reason_phrase}"
        else:
            why = f"{response.status_code} {response.reason_phrase}"
            delay = retry_after(response) if response.status_code == 503 else None
            if delay is not None and (self.retry_after is None or delay < self.retry_after):
                self.retry_after = delay
        self._failed_servers.append(f"{self._dest} {why}")

    def _redirect(self, response: SipResponse) -> None:
        """Follow a 3xx once (§8.1.3.4): its Contacts, best ``q`` first.

        The first is called now; the others wait in ``_redirect_targets`` for
        that one to fail (:meth:`_next_contact`), at most MAX_REDIRECT_TARGETS.
        """
        targets = redirect_targets(response, limit=MAX_REDIRECT_TARGETS, skip=self._request_uri)
        self._redirected = True
        self._redirect_targets = targets[1:]
        logger.info(
            "call %s: %s redirect to %s", self.call_id, response.status_code, ", ".join(targets)
        )
        self._call_target(targets[0])

    def _next_contact(self, response: SipResponse) -> None:
        """§8.1.3.4: "When a failure for a particular contact address is received,
        the client SHOULD try the next contact address" (a new transaction)."""
        target = self._redirect_targets.pop(0)
        logger.info(
            "call %s: %s from %s, trying %s",
            self.call_id,
            response.status_code,
            self._request_uri,
            target,
        )
        self._call_target(target)

    def _call_target(self, target: str) -> None:
        """A new INVITE (new transaction, CSeq + 1) to a redirect target."""
        self._request_uri = target
        self.dialog = None
        self.attempt = Attempt.LOCATING
        self._digest.reset()
        self._invite_auth = self._digest.attempt()
        self.endpoint.spawn(
            self._send_redirected_invite(target), name=f"sip-redirect-{self.call_id}"
        )

    async def _send_redirected_invite(self, target: str) -> None:
        if self.state is CallState.ENDED:  # hung up (or timed out) meanwhile
            return
        if not self.spec.proxy:
            # The Contact's ;transport= (and maddr) say how to reach it (RFC 3263
            # §4.1, §19.1.1); the call's own transport otherwise.
            transport = uri_transport(target) or self.spec.transport
            try:
                servers = await self.endpoint.locate(target, transport, tls=self.spec.tls)
            except (OSError, ValueError) as exc:
                if self.ended.is_set():  # hung up while the target was looked up
                    return
                why = f"cannot resolve redirect target {target}: {exc}"
                if self._redirect_targets:  # §8.1.3.4: a failure too; on to the next Contact
                    logger.info("call %s: %s", self.call_id, why)
                    self._call_target(self._redirect_targets.pop(0))
                    return
                self.error = why
                self.local_failure = True
                self._finish_unanswered(503, "Service Unavailable", ended_by=None)
                return
            if self.ended.is_set():
                return
            self._dest, self._next_servers = servers[0], servers[1:]
            # Via and Contact name the transport the callee answers on (§8.1.1.8).
            self._contact = self.endpoint.contact_for(self._dest, self._from_user)
        self.attempt = Attempt.SENT
        self._send_invite()

    def _on_final(self, response: SipResponse) -> None:
        status = response.status_code
        ended_by: str | None = "remote"
        if isinstance(response, SyntheticResponse):
            ended_by = None
            self.local_failure = not self.canceled_by_us
            if self.error is None:
                if status == 408 and response.detail == "Timer B":
                    self.error = f"no response from {self._dest} (Timer B)"
                elif status == 408:
                    self.error = f"no final response from {self._dest} after CANCEL"
                else:
                    self.error = response.detail or f"cannot reach {self._dest}"
        elif self.canceled_by_us and status == 487:
            ended_by = "local"
        elif status in (401, 407) and self.error is None:
            if self._invite_auth.rounds:
                self.error = (
                    f"authentication failed: still challenged after {self._invite_auth.rounds} "
                    "rounds of credentials"
                )
            else:
                self.error = "authentication required but no credentials configured"
        if status == 503 or (self._failed_servers and status == 408):
            self._note_failed_server(response)
            if len(self._failed_servers) > 1 or self.retry_after is not None:
                # RFC 3263 §4.3 / RFC 3261 §21.5.4: every server said no; the
                # record says which, and when to try again.
                self.error = "servers unavailable: " + "; ".join(self._failed_servers)
                if self.retry_after is not None:
                    self.error += f" (Retry-After {self.retry_after} s)"
        self._finish_unanswered(status, response.reason_phrase, ended_by=ended_by)

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
        self.endpoint.forget_call(self)

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

    def _in_dialog_destination(self) -> Destination | None:
        """Where in-dialog requests go now; None while the next hop is not resolved.

        The dialog's next hop, also with an outbound proxy (see :class:`CallSpec`):
        only requests outside the dialog go to ``_dest``.
        """
        assert self._dest is not None
        if self.dialog is None:
            return self._dest
        return self._dest_for_dialog(self.dialog)

    def _dest_for_dialog(self, dialog: Dialog) -> Destination | None:
        """The dialog's next hop (first Route, else remote target; §12.2.1.1, §8.1.2),
        if known without waiting (:class:`~ringcast.sip.hops.Hops`); None otherwise
        (:meth:`_after_hop` or :meth:`_in_dialog_hop` look it up). Never the INVITE's
        destination instead: a dialog's requests go where the callee or its proxies
        asked, and an outbound proxy is not one of them unless it Record-Routed.
        """
        assert self._dest is not None
        return self._hops.known(dialog, self._dest.transport)

    async def _resolve_hop(self, uri: str) -> Destination:
        assert self._dest is not None
        return await self._hops.resolve(uri, self._dest.transport)

    def _after_hop(
        self, dialog: Dialog, *, then: Callable[[], None], failed: Callable[[str], None]
    ) -> None:
        """Resolve ``dialog``'s next hop in the background, then ``then()`` or ``failed(why)``."""
        self.endpoint.spawn(
            self._when_resolved(dialog.next_hop_uri(), then, failed),
            name=f"sip-hop-{self.call_id}",
        )

    async def _when_resolved(
        self, uri: str, then: Callable[[], None], failed: Callable[[str], None]
    ) -> None:
        try:
            await self._resolve_hop(uri)
        except OSError as exc:
            failed(str(exc))
            return
        try:
            then()
        except Exception:  # a bug here must not pass silently in a background task
            logger.exception("call %s: handling the resolved next hop %s failed", self.call_id, uri)

    async def _in_dialog_hop(self) -> Destination | None:
        """:meth:`_in_dialog_destination`, looked up if needed; None (``error`` set) on failure."""
        dest = self._in_dialog_destination()
        if dest is not None or self.dialog is None:
            return dest
        try:
            return await self._resolve_hop(self.dialog.next_hop_uri())
        except OSError as exc:
            self.error = self.error or str(exc)
            return None

    def _on_hop_lost(self, why: str) -> None:
        """An answered call's next hop cannot be resolved: nothing more can reach the callee."""
        if self.state is CallState.ENDED:
            return
        self.error = self.error or why
        self._end("local")

    def _in_dialog_request(
        self, method: str, *, body: bytes = b"", extra: dict[str, str] | None = None
    ) -> SipRequest:
        """A request inside the dialog: its Route is the dialog's route set, nothing
        pre-loaded (§12.2.1.1), exactly like the 2xx ACK's (:meth:`_send_ack`)."""
        assert self.dialog is not None
        request = self.dialog.create_request(
            method, body=body, content_type="application/sdp" if body else None, extra=extra
        )
        request.headers.append("User-Agent", self.endpoint.user_agent)
        return request

    def _send_in_dialog(
        self,
        method: str,
        dest: Destination,
        handler: Callable[[SipRequest, SipResponse, InDialogStep], None],
        *,
        sdp: Callable[[], bytes] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Send ``method`` inside the dialog through :class:`_InDialogRequest`: the
        one digest path of every request after the INVITE (§22.2, §22.3)."""
        _InDialogRequest(self, method, dest, handler, sdp, extra).send()

    async def _send_bye(self) -> None:
        if self.dialog is None or self.state is CallState.ENDED:
            self._end("local")
            return
        if self._bye_done is not None:
            await self._wait_ended()
            return
        self._set_state(CallState.ENDING)
        self._bye_done = self.endpoint.loop.create_future()
        dest = await self._in_dialog_hop()
        if dest is None:  # unresolvable next hop: end here rather than BYE a wrong address
            self._end("local")
            self._bye_done.set_result(None)
            return
        # §15.1.1: the session is over once the BYE is handed to its transaction,
        # whether or when the callee answers it (it may never: Timer F).
        self.ended_at = _now()
        self._send_in_dialog("BYE", dest, self._on_bye_response)
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

    # --- requests from the callee -----------------------------------------------

    def on_request(self, request: SipRequest, source: Destination) -> SipResponse:
        """Answer an in-dialog request from the callee (§12.2.2): :func:`request_step`
        decides, this applies it.

        The endpoint sends what is returned. BYE ends the call; re-INVITE and
        UPDATE get our (unchanged) media with SDP version + 1, 488 when their
        offer lacks the codec in use, or 491 when they cross our own session
        refresh; OPTIONS and INFO get 200 (INFO DTMF is recorded).
        """
        dialog = self.dialog
        step = request_step(
            request.method,
            state=self.state,
            dialog=dialog.state if dialog is not None else None,
            cseq_in_order=dialog.check_remote_cseq(request) if dialog is not None else True,
            refresh_pending=self._refresh_pending,
            has_body=bool(request.body),
        )
        if step is RequestStep.NO_DIALOG:
            return build_response(request, 481)
        if step is RequestStep.CSEQ_OUT_OF_ORDER:
            return build_response(request, 500, headers={"Retry-After": "1"})
        if step is RequestStep.BYE:
            return self._on_remote_bye(request)
        if step is RequestStep.GLARE:
            logger.info(
                "call %s: %s crossed our %s: 491",
                self.call_id,
                request.method,
                self._refresh_pending,
            )
            return build_response(request, 491)
        if step is RequestStep.REINVITE:
            return self._on_reinvite(request, source)
        if step is RequestStep.UPDATE:
            return self._session_response(request, with_sdp=bool(request.body))
        if step is RequestStep.OPTIONS:
            return build_response(
                request, 200, headers={"Allow": ALLOW, "Accept": "application/sdp"}
            )
        if step is RequestStep.INFO:
            self._on_info(request)
            return build_response(request, 200)
        if step is RequestStep.CANCEL:
            return build_response(request, 200)
        if step is RequestStep.NOTIFY:  # no REFER of ours: no subscription (RFC 6665 §4.1.3)
            return build_response(request, self.on_notify(request) if self.on_notify else 481)
        if step is RequestStep.DECLINE:
            return build_response(request, 603)
        return build_response(request, 405, headers={"Allow": ALLOW})

    async def send_request(
        self, method: str, extra: dict[str, str], on_final: Callable[[SipResponse], None]
    ) -> bool:
        """Send ``method`` (a REFER, :mod:`ringcast.sip.refer`) inside the answered
        dialog; ``on_final`` hears its final response. False when there is no dialog."""
        if self.dialog is None or self.state is not CallState.ANSWERED:
            return False
        dest = await self._in_dialog_hop()
        if dest is None:
            return False

        def handler(request: SipRequest, response: SipResponse, step: InDialogStep) -> None:
            if step is not InDialogStep.WAIT:
                on_final(response)

        # a REFER creates a subscription usage: it carries our Contact (RFC 3515 §2.4.1)
        self._send_in_dialog(method, dest, handler, extra={"Contact": self._contact, **extra})
        return True

    def _on_info(self, request: SipRequest) -> None:
        digit = parse_dtmf_info(request.content_type or "", request.body)
        if digit is None:
            return
        self.dtmf_info.append(digit)
        logger.info("call %s: DTMF %s via INFO", self.call_id, digit)
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(digit)
            except Exception:
                logger.exception("on_dtmf callback failed for call %s", self.call_id)

    def _on_remote_bye(self, request: SipRequest) -> SipResponse:
        logger.info("call %s: callee sent BYE", self.call_id)
        if self.state in (CallState.CALLING, CallState.RINGING, CallState.CANCELING):
            self._finish_unanswered(487, "Request Terminated", ended_by="remote")
        elif self._bye_done is None:
            self._end("remote")
        return build_response(request, 200)

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

    def _session_response(self, request: SipRequest, *, with_sdp: bool) -> SipResponse:
        """200 to a re-INVITE/UPDATE, or 488 when its offer is unacceptable.

        §14.2: a UAS that cannot accept the new offer answers 488 and the
        session goes on unchanged (no target refresh, no session timer change).
        """
        offered: MediaAnswer | None = None
        if with_sdp and request.body:
            try:
                offered = self._sdp.read_remote(request.body, offer=True)
            except ValueError as exc:
                logger.info(
                    "call %s: refusing %s offer (488): %s", self.call_id, request.method, exc
                )
                return build_response(
                    request, 488, headers={"Warning": '305 ringcast "Incompatible media format"'}
                )
        if self.dialog is not None:
            self.dialog.refresh_target(request)
        extra: dict[str, str] = {"Contact": self._contact, "Allow": ALLOW}
        asked = session_timer.from_callee_request(_session_expires_header(request))
        if asked is not None:
            extra["Session-Expires"] = session_timer.answer_header(asked)
            extra["Require"] = "timer"
            self._session_timer = asked
            self._arm_session_refresh()
        body = b""
        if offered is not None:
            self._set_remote_media(offered)
        if with_sdp:
            body = self._sdp.local_sdp(offered)
        return build_response(
            request, 200, headers=extra, body=body, content_type="application/sdp"
        )

    def _on_reinvite(self, request: SipRequest, source: Destination) -> SipResponse:
        assert self.dialog is not None
        response = self._session_response(request, with_sdp=True)
        # The 2xx is re-sent until its ACK by the endpoint's INVITE server transaction.
        cseq = request.cseq.seq if request.cseq else 0
        if 200 <= response.status_code < 300:
            # No SDP in the re-INVITE: our 2xx is the offer and the ACK brings the answer.
            self._offer_in_2xx = None if request.body else cseq
        return response

    def on_ack(self, request: SipRequest) -> None:
        """The ACK for our 2xx to the callee's re-INVITE (its retransmission stops in the
        endpoint's server transaction).

        When that 2xx carried our offer (a re-INVITE without SDP), the ACK
        carries the answer (RFC 3261 §13.2.1, §14.2): it is applied like an offer.
        """
        cseq = request.cseq
        if cseq is None or self._offer_in_2xx != cseq.seq or self.state is not CallState.ANSWERED:
            return
        self._offer_in_2xx = None
        self._apply_remote_answer(request.body, "SDP answer in ACK")

    # --- session timers (RFC 4028) ----------------------------------------------

    def _parse_session_timer(self, response: SipResponse) -> None:
        allow = ",".join(response.headers.get("allow")).upper()
        self._peer_allows_update = "UPDATE" in allow
        timer = session_timer.from_response(_session_expires_header(response))
        if timer is not None:
            self._session_timer = timer

    def _arm_session_refresh(self) -> None:
        """RFC 4028 §10: the one session timer :func:`session_timer.next_timer` names."""
        self._stop_timer(CallTimer.REFRESH)
        self._stop_timer(CallTimer.SESSION_EXPIRY)
        if self._session_timer is None or self.state is not CallState.ANSWERED:
            return
        timer, delay = session_timer.next_timer(self._session_timer)
        self._start_timer(timer, delay)

    def _send_refresh(self) -> None:
        if self.state is not CallState.ANSWERED or self.dialog is None:
            return
        dest = self._in_dialog_destination()
        if dest is None:  # a target refresh named a host not looked up yet
            self._after_hop(self.dialog, then=self._send_refresh, failed=self._on_hop_lost)
            return
        assert self._session_timer is not None  # REFRESH is only armed with one
        extra = {
            "Contact": self._contact,
            "Supported": "timer",
            "Session-Expires": self._session_timer.header,
        }
        method = "UPDATE" if self._peer_allows_update else "INVITE"
        logger.info("call %s: session refresh with %s", self.call_id, method)
        self._refresh_pending = method
        self._send_in_dialog(
            method,
            dest,
            functools.partial(self._on_refresh_response, dest),
            sdp=self._sdp.local_sdp if method == "INVITE" else None,
            extra=extra,
        )

    def _on_refresh_response(
        self, dest: Destination, request: SipRequest, response: SipResponse, step: InDialogStep
    ) -> None:
        if step is InDialogStep.WAIT:
            return
        self._refresh_pending = None
        if self.state is not CallState.ANSWERED:
            return
        if step is InDialogStep.DONE:
            if request.method == "INVITE" and self.dialog is not None:
                self._ack_refresh(request, dest)
                self._apply_remote_answer(response.body, "SDP in refresh answer")
            timer = session_timer.from_response(_session_expires_header(response))
            if timer is not None:
                self._session_timer = timer
            self._arm_session_refresh()
        elif step is InDialogStep.SESSION_GONE:  # RFC 4028 §10: the session is gone
            logger.info(
                "call %s: session refresh got %s, ending call", self.call_id, response.status_code
            )
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-refresh-{self.call_id}")
        elif step is InDialogStep.GLARE_RETRY:
            # §14.1: our request crossed one of the callee's; try again after a
            # random 2.1-4 s (we own the Call-ID), the same method.
            delay = glare_retry_delay()
            logger.info("call %s: session refresh got 491, retrying in %.2f s", self.call_id, delay)
            self._start_timer(CallTimer.REFRESH, delay)
        else:
            if request.method == "UPDATE":
                self._peer_allows_update = False  # fall back to re-INVITE next time
            self._arm_session_refresh()

    def _ack_refresh(self, request: SipRequest, dest: Destination) -> None:
        """ACK the 2xx to our refresh re-INVITE with its CSeq (§13.2.2.4), kept for
        that 2xx's retransmissions after Timer M (RFC 6026)."""
        assert self.dialog is not None
        seq = request.cseq.seq if request.cseq else self.dialog.local_seq
        ack = self.dialog.create_request("ACK", cseq=seq)
        for name in ("authorization", "proxy-authorization"):
            for value in request.headers.get(name):
                ack.headers.append(name, value)
        self.endpoint.stamp_via(ack, dest, new_branch())
        self._reinvite_acks[seq] = (bytes(ack), dest)
        while len(self._reinvite_acks) > MAX_REINVITE_ACKS:
            del self._reinvite_acks[min(self._reinvite_acks)]
        self.endpoint.send_raw(bytes(ack), dest)

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


class _InDialogRequest:
    """One request of ours inside the dialog (BYE, refresh re-INVITE, UPDATE) and
    its digest rounds (§22.2, §22.3).

    It carries the credentials the call holds for every realm (cached from the
    INVITE, §22.3). A 401/407 is answered by the call's :class:`DigestSession`
    like the INVITE's: the same request with a new CSeq (§22.2); a realm
    refused twice or the rounds used up end the rounds. ``handler`` hears every
    other response with its :func:`in_dialog_step`. Only the transaction refers
    to this object, so nothing cycles back from the call.
    """

    def __init__(
        self,
        call: OutboundCall,
        method: str,
        dest: Destination,
        handler: Callable[[SipRequest, SipResponse, InDialogStep], None],
        sdp: Callable[[], bytes] | None,
        extra: dict[str, str] | None,
    ) -> None:
        self.call = call
        self.method = method
        self.dest = dest
        self.handler = handler
        self.sdp = sdp
        self.extra = extra
        self.auth = call._digest.attempt()
        self.request: SipRequest | None = None

    def send(self) -> None:
        call = self.call
        body = self.sdp() if self.sdp is not None else b""
        request = call._in_dialog_request(self.method, body=body, extra=self.extra)
        for name, value in call._digest.headers(self.method, request.uri):
            request.headers.append(name, value)
        self.request = request
        call.endpoint.send_request(request, self.dest, self.on_response)

    def on_response(self, response: SipResponse) -> None:
        call = self.call
        assert self.request is not None
        step = in_dialog_step(
            self.method,
            response.status_code,
            synthetic=isinstance(response, SyntheticResponse),
            can_authenticate=call._has_credentials
            and not self.auth.exhausted
            and call.dialog is not None,
        )
        if step is InDialogStep.AUTHENTICATE:
            try:
                realms = self.auth.on_challenge(response)
            except AuthFailure as exc:
                logger.warning("call %s: %s %s", call.call_id, self.method, exc)
                step = InDialogStep.FAILED
            else:
                logger.info(
                    "call %s: answering %s digest challenge to %s for %s",
                    call.call_id,
                    response.status_code,
                    self.method,
                    ", ".join(repr(r) for r in realms),
                )
                self.send()
                return
        self.handler(self.request, response, step)


_SIP_URI = re.compile(r"^\s*(?:\"[^\"]*\"\s*|[^<\"]*)?<?\s*sips?:[^\s]", re.I)


def _session_expires_header(message: SipRequest | SipResponse) -> str | None:
    """Session-Expires, or its compact form ``x`` (RFC 4028 §4)."""
    return message.headers.get_first("session-expires") or message.headers.get_first("x")


def _loose_route(proxy: str) -> str:
    uri = proxy.strip()
    if uri.startswith("<"):
        uri = uri[1:].split(">", 1)[0]
    if not uri.lower().startswith(("sip:", "sips:")):
        uri = f"sip:{uri}"
    if ";lr" not in uri.lower():
        uri += ";lr"
    return f"<{uri}>"


def _branch(request: SipRequest) -> str:
    via = request.headers.get_first("via") or ""
    idx = via.find("branch=")
    if idx == -1:
        return ""
    rest = via[idx + 7 :]
    return rest.split(";", 1)[0].split(",", 1)[0].strip()
