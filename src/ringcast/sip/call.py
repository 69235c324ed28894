"""One outbound call, UAC side: INVITE -> 1xx -> final -> ACK -> BYE / CANCEL.

Built on the client transactions (:mod:`ringcast.sip.transaction`) and the
dialog (:mod:`ringcast.sip.dialog`). The decision for every INVITE response is
taken by the pure :func:`next_invite_step`; :class:`OutboundCall` applies it
(STYLE habit 4). Call state changes go through one ``_set_state``.

RFC 3261 §13.2 (UAC INVITE), §9.1 (CANCEL), §15.1.1 (BYE), §22.2 (digest),
§8.1.3.4 (3xx redirect); RFC 3263 §4.3 (failover to the next server); RFC 4028
session timers; RFC 6086 INFO.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiosipua.auth import SipDigestAuth, answer_challenge
from aiosipua.headers import (
    CaseInsensitiveDict,
    parse_address,
    parse_params,
    stringify_address,
    stringify_uri,
)
from aiosipua.message import SipRequest, SipResponse
from aiosipua.sdp import serialize_sdp

from ringcast.domain import Outcome
from ringcast.sip.causes import outcome_for, reason_phrase
from ringcast.sip.dialog import Dialog, DialogState, redirect_targets
from ringcast.sip.digest import AuthFailure, DigestSession
from ringcast.sip.endpoint import (
    ALLOW,
    Destination,
    build_response,
    new_branch,
    new_tag,
    uri_transport,
)
from ringcast.sip.sdp import (
    TELEPHONE_EVENT_PT,
    MediaAnswer,
    MediaOffer,
    build_answer_message,
    build_offer,
    build_offer_message,
    new_session_id,
    parse_answer,
)
from ringcast.sip.transaction import ClientTransaction, SyntheticResponse

if TYPE_CHECKING:
    from ringcast.sip.endpoint import SipEndpoint

logger = logging.getLogger(__name__)

MIN_SESSION_REFRESH = 1.0  # seconds: never refresh a session more often than this
MAX_REDIRECT_TARGETS = 4  # Contacts of a 3xx tried in turn (§8.1.3.4)
MAX_HOPS = 8  # next hops one call remembers (its dialog, forks, refreshed targets)
MAX_REINVITE_ACKS = 4  # ACKs of our re-INVITEs' 2xx kept to answer late retransmissions
GLARE_RETRY_MIN_CS = 210  # RFC 3261 §14.1: the Call-ID owner retries a 491'd re-INVITE
GLARE_RETRY_MAX_CS = 400  # after 2.1 to 4 s, chosen at random in units of 10 ms
RESERVED_HEADERS = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "content-length",
        "content-type",
        "max-forwards",
        "route",
        "record-route",
        "authorization",
        "proxy-authorization",
    }
)


def _empty_headers() -> dict[str, str]:
    return {}


@dataclass
class CallSpec:
    """What to dial (DESIGN "Calls"; the request's ``to``, ``from`` and ``sip`` block).

    ``from_`` is a user part (``"me"``), a SIP URI, or a name-addr with a
    display name (``'"Shop" <sip:shop@example.com>'``). ``proxy`` is an
    outbound proxy URI: the pre-existing route set of requests *outside* the
    dialog (the INVITE, its CANCEL and non-2xx ACK), sent there with a
    pre-loaded Route (§8.1.1.1, §8.1.2). Requests inside the dialog (the 2xx
    ACK, BYE, re-INVITE, UPDATE) follow the dialog's route set only
    (§12.2.1.1): a proxy that wants to stay on the path Record-Routes (§16.6
    step 4) and then appears there once; one that does not drops out of the
    path, as §8.1.2 intends ("instead of adopting the policy of sending all
    messages to the outbound proxy"). ACK and BYE thus always take the same
    path. ``username``/``password`` answer 401/407 digest challenges.
    ``max_duration`` (seconds after answer) sends BYE when it runs out.
    """

    to: str
    from_: str
    media: MediaOffer
    proxy: str | None = None
    transport: str | None = None  # None: the URI's ;transport=, else the DNS (RFC 3263)
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] = field(default_factory=_empty_headers)
    ring_timeout: float = 30.0
    max_duration: float | None = None

    def __repr__(self) -> str:  # never show the password
        return (
            f"CallSpec(to={self.to!r}, from_={self.from_!r}, proxy={self.proxy!r}, "
            f"transport={self.transport!r}, username={self.username!r}, "
            f"password={'***' if self.password else None}, ring_timeout={self.ring_timeout})"
        )


class CallState(enum.Enum):
    """Where one outbound call is; ``on_state`` hears every change."""

    CALLING = "calling"  # INVITE sent, nothing but 100 yet
    RINGING = "ringing"  # first 18x seen
    ANSWERED = "answered"  # 2xx ACKed, dialog confirmed
    ENDING = "ending"  # our BYE or CANCEL is out
    ENDED = "ended"


class InviteStep(enum.Enum):
    """What to do with a response to our INVITE (decided by :func:`next_invite_step`)."""

    PROVISIONAL = "provisional"
    ANSWER = "answer"
    ANSWER_THEN_BYE = "answer-then-bye"  # a 2xx crossed our CANCEL / hangup
    AUTHENTICATE = "authenticate"
    REDIRECT = "redirect"
    FAIL_OVER = "fail-over"  # RFC 3263 §4.3: the same INVITE to the next server
    NEXT_CONTACT = "next-contact"  # §8.1.3.4: the next Contact of the 3xx followed
    FINAL = "final"
    IGNORE = "ignore"


def next_invite_step(
    status: int,
    *,
    synthetic: bool,
    state: CallState,
    canceling: bool,
    has_credentials: bool,
    auth_tried: bool,
    redirected: bool,
    has_contact: bool,
    can_fail_over: bool = False,
    contacts_left: bool = False,
) -> InviteStep:
    """Decide what a response to our INVITE means (pure: no I/O, no mutation).

    - 1xx: provisional (§13.2.2.1); 2xx: answer, or ACK+BYE when we already
      canceled (§9.1: a 200 may cross the CANCEL);
    - 401/407 with credentials: retry with digest (§22.2, §22.3) until
      ``auth_tried`` says the rounds are used up (:data:`MAX_AUTH_ROUNDS`); which
      challenges can be answered (a new realm, a stale nonce) is
      :class:`~ringcast.sip.digest.DigestSession`'s call;
    - 3xx with a Contact, once: follow its best Contact (§8.1.3.4); when that
      target fails (3xx-5xx, a transport error or timeout) and
      ``contacts_left``, the next Contact; a 6xx is final (global failure,
      §21.6: no other Contact will do better, as for a proxy, §16.7 step 5);
    - 503, a transport failure (synthetic 503) or Timer B (synthetic 408), when
      ``can_fail_over`` (another server of the target is left and the callee
      was not reached: no 101-199 beyond 100): the next server (RFC 3263 §4.3);
    - everything else >= 300: final.
    """
    if state is CallState.ENDED:
        return InviteStep.IGNORE
    if status < 200:
        return InviteStep.IGNORE if synthetic else InviteStep.PROVISIONAL
    if status < 300:
        return InviteStep.ANSWER_THEN_BYE if canceling else InviteStep.ANSWER
    if canceling:
        return InviteStep.FINAL
    if can_fail_over and (status == 503 or (synthetic and status == 408)):
        return InviteStep.FAIL_OVER
    if not synthetic and status in (401, 407) and has_credentials and not auth_tried:
        return InviteStep.AUTHENTICATE
    if not synthetic and 300 <= status < 400 and has_contact and not redirected:
        return InviteStep.REDIRECT
    if contacts_left and status < 600:
        return InviteStep.NEXT_CONTACT
    return InviteStep.FINAL


def parse_dtmf_info(content_type: str, body: bytes) -> str | None:
    """The digit in an INFO body (``application/dtmf-relay`` "Signal=5", ``application/dtmf``)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", errors="replace").strip()
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                return _digit(value.strip())
        return None
    if ctype == "application/dtmf" and text:
        return _digit(text.split()[0])
    return None


def retry_after(response: SipResponse) -> int | None:
    """The seconds of a response's Retry-After (RFC 3261 §20.33), or None."""
    raw = response.headers.get_first("retry-after") or ""
    found = re.match(r"\s*(\d{1,9})", raw)
    return int(found.group(1)) if found else None


def _digit(value: str) -> str | None:
    events = "0123456789*#ABCD"
    if value.isdigit() and int(value) < 16 and len(value) <= 2:
        return events[int(value)] if len(value) == 2 else value
    if len(value) == 1 and value.upper() in events:
        return value.upper()
    return None


def glare_retry_delay() -> float:
    """Seconds before re-sending a re-INVITE that got 491 (RFC 3261 §14.1).

    We made the Call-ID (we sent the INVITE), so ours is the 2.1-4 s range, in
    10 ms steps; the callee, not the owner, waits 0-2 s, so its retry goes first.
    """
    return random.randint(GLARE_RETRY_MIN_CS, GLARE_RETRY_MAX_CS) / 100


def _now() -> datetime:
    return datetime.now(UTC)


@functools.lru_cache(maxsize=1024)
def from_header(from_: str, local_host: str) -> tuple[str, str | None]:
    """The From header value for `from_` (a user, or a URI with an optional
    display name), without a tag, and its user part. A broadcast sends the same
    `from` thousands of times: parsed once."""
    raw = from_.strip()
    if "<" in raw or raw.lower().startswith(("sip:", "sips:")):
        addr = parse_address(raw)
    else:
        addr = parse_address(f"sip:{raw}@{local_host}")
    addr.params.pop("tag", None)
    return stringify_address(addr), addr.uri.user


class OutboundCall:
    """One outbound call. Create with :meth:`SipEndpoint.create_call`.

    ``await setup()`` returns True once answered (ACK sent) and False when the
    call ended unanswered; it never raises for SIP outcomes. ``status_code``/
    ``reason`` hold the final response to the INVITE (200 for answered calls,
    also after BYE; synthetic 408 for Timer B; 503 when the transport failed;
    487 after our CANCEL). When the target has several servers (RFC 3263), a
    503, a transport failure or Timer B moves the INVITE to the next one
    (§4.3); ``retry_after`` keeps the shortest Retry-After of the 503s, and
    ``error`` names every server tried when none answered otherwise.
    ``ended`` is set when the call is over for any reason.

    ``on_media`` hears every remote media description accepted after the
    answer (a re-INVITE or UPDATE offer, or the answer in the ACK of a
    re-INVITE we answered with an offer, RFC 3264 §8): the owner re-aims its
    RTP stream there. ``answer`` always holds the latest one.
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
        self.call_id = endpoint.new_call_id()
        self.local_tag = new_tag()
        self.state = CallState.CALLING
        self.answer: MediaAnswer | None = None
        self.early_answer: MediaAnswer | None = None
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
        self.local_failure = False  # the final status was made up locally (Timer B, transport)
        self.dtmf_info: list[str] = []
        self.session_expires: int | None = None
        self.session_refresher: str | None = None
        self.retry_after: int | None = None  # seconds, from the 503s (RFC 3261 §21.5.4)

        self._media = dataclasses.replace(spec.media, codecs=list(spec.media.codecs))
        self._to = parse_address(spec.to)
        if not _SIP_URI.search(spec.to):
            raise ValueError(f"to must be a sip: URI, not {spec.to!r}")
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
        self._provisional_seen = False
        self._cancel_pending = False
        self._cancel_sent = False
        self._redirected = False
        self._redirect_targets: list[str] = []  # Contacts of the 3xx followed, not tried yet
        self._reached = False  # this attempt's server sent a 101-199: the callee was reached
        self._from_user: str | None = None
        self._digest = DigestSession(spec.username or "", spec.password or "")
        self._ack: tuple[bytes, Destination] | None = None
        self._ring_timer: asyncio.TimerHandle | None = None
        self._cancel_guard: asyncio.TimerHandle | None = None
        self._duration_timer: asyncio.TimerHandle | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._refresh_pending: str | None = None  # method of our session refresh in flight
        self._setup_done: asyncio.Future[bool] = endpoint.loop.create_future()
        self._bye_done: asyncio.Future[None] | None = None
        self._started = False
        self._resolving = False
        self._bye_auth_tried = False
        self._forks: dict[str, tuple[bytes, Destination]] = {}  # other 2xx tags -> our ACK
        self._hops: dict[str, Destination] = {}  # dialog next-hop URI -> resolved (RFC 3263)
        self._hop_failures: dict[str, str] = {}  # next-hop URI -> why it cannot be resolved
        self._session_id = new_session_id()
        self._sdp_version = 1
        self._peer_allows_update = False
        self._reinvite_2xx: tuple[bytes, Destination, int] | None = None
        # CSeq of our re-INVITE -> the ACK sent for its 2xx (§13.2.2.4), re-sent
        # when that 2xx is retransmitted after Timer M ended the transaction.
        self._reinvite_acks: dict[int, tuple[bytes, Destination]] = {}
        self._reinvite_timer: asyncio.TimerHandle | None = None
        self._offer_in_2xx: int | None = None  # CSeq of a re-INVITE whose 2xx carried our offer
        self._from_value = ""
        self._contact = ""
        self._validate_headers()

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
    def signalling_host(self) -> str | None:
        """The IP the call's INVITE went to (the callee, or the proxy or SBC in front
        of it): an RTP source the media plane may latch to behind NAT."""
        return self._dest.host if self._dest is not None else None

    async def setup(self) -> bool:
        """Send the INVITE and wait for the outcome (§13.2).

        True when answered; False when the call ended without an answer
        (rejected, busy, timed out, canceled, unreachable). Cancelling the
        awaiting task cancels the call (CANCEL or BYE in the background).
        """
        if not self._started:
            self._started = True
            if self.state is CallState.ENDED:
                return False
            self.invite_sent_at = _now()
        try:
            if self._dest is None and self._invite is None and not self._resolving:
                self._resolving = True
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
        if self.state is CallState.ENDED:
            return
        if not self._started:
            self._started = True
            self.canceled_by_us = True
            self._finish_unanswered(487, "Request Terminated", ended_by="local")
            return
        if self.state in (CallState.CALLING, CallState.RINGING):
            self._begin_cancel()
            await self._wait_ended()
            return
        if self.state is CallState.ENDING:
            await self._wait_ended()
            return
        await self._send_bye()

    def uses_tcp_peer(self, addr: tuple[str, int]) -> bool:
        """Whether this call's requests go to ``addr`` over TCP."""
        dest = self._dest
        if dest is None:
            return False
        if dest.transport == "tcp" and dest.addr == addr:
            return True
        hop = self._in_dialog_destination() if self.dialog is not None else None
        return hop is not None and hop.transport == "tcp" and hop.addr == addr

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

    # --- state ------------------------------------------------------------------

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

    async def _wait_ended(self) -> None:
        bound = self.endpoint.timers.b * 2 + 1.0
        try:
            await asyncio.wait_for(self.ended.wait(), bound)
        except TimeoutError:
            logger.warning("call %s did not end within %.1f s", self.call_id, bound)
            self._end("local")

    # --- INVITE -----------------------------------------------------------------

    def _validate_headers(self) -> None:
        for name, value in self.spec.headers.items():
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is managed by ringcast")
            if not name or any(c in name for c in " :\r\n\t") or "\r" in value or "\n" in value:
                raise ValueError(f"invalid header {name!r}")

    async def _send_first_invite(self) -> None:
        target = self.spec.proxy or self._request_uri
        try:
            # The URI's ;transport= first (RFC 3263 §4.1), then the call's, then the DNS.
            transport = uri_transport(target) or self.spec.transport
            servers = await self.endpoint.locate(target, transport)
            self._dest, self._next_servers = servers[0], servers[1:]
        except (OSError, ValueError) as exc:
            self.error = f"cannot resolve {target}: {exc}"
            self.local_failure = True
            self._finish_unanswered(503, "Service Unavailable", ended_by=None)
            return
        if self.state is CallState.ENDED:
            return
        local_host = self.endpoint.local_host_for(self._dest)
        from_value, user = from_header(self.spec.from_, local_host)
        self._from_user = user
        self._from_value = f"{from_value};tag={self.local_tag}"
        self._contact = self.endpoint.contact_for(self._dest, user)
        if self._media.host in ("0.0.0.0", "") or self.endpoint.public_ip:
            self._media = dataclasses.replace(self._media, host=local_host)
        self._send_invite()
        self._ring_timer = self.endpoint.loop.call_later(
            self.spec.ring_timeout, self._on_ring_timeout
        )

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
        body = build_offer(
            self._media, session_version=self._sdp_version, session_id=self._session_id
        )
        return SipRequest(headers=h, body=body, method="INVITE", uri=self._request_uri)

    def _send_invite(self, *, same_cseq: bool = False) -> None:
        assert self._dest is not None  # set by _send_first_invite before any INVITE
        self._invite = self._build_invite(same_cseq=same_cseq)
        self._invite_txn = self.endpoint.send_request(
            self._invite, self._dest, self._on_invite_response
        )

    def _on_invite_response(self, response: SipResponse) -> None:
        """TU callback for every response to the current INVITE transaction."""
        if self._invite is None:
            return
        step = next_invite_step(
            response.status_code,
            synthetic=isinstance(response, SyntheticResponse),
            state=self.state,
            canceling=self.canceled_by_us,
            has_credentials=bool(self.spec.username and self.spec.password is not None),
            auth_tried=self._digest.exhausted,
            redirected=self._redirected,
            has_contact=300 <= response.status_code < 400
            and bool(redirect_targets(response, limit=1, skip=self._request_uri)),
            can_fail_over=bool(self._next_servers) and not self._reached,
            contacts_left=bool(self._redirect_targets),
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
        self._provisional_seen = True
        status = response.status_code
        self._reached = self._reached or status > 100
        to = response.to_addr
        if status > 100 and to is not None and to.tag and self._invite is not None:
            if self.dialog is None:
                self.dialog = Dialog.from_response(self._invite, response)
            elif self.dialog.remote_tag == to.tag:
                self.dialog.update_early(response)
        if response.body and "sdp" in (response.content_type or "").lower():
            try:
                self.early_answer = self._as_answer_to_us(
                    parse_answer(response.body, self._media.codecs)
                )
            except ValueError as exc:
                logger.info("call %s: ignoring early SDP: %s", self.call_id, exc)
        if status >= 180 and self.state is CallState.CALLING:
            self._set_state(CallState.RINGING)
        if self._cancel_pending and not self._cancel_sent:
            self._send_cancel()

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
            self.dialog = Dialog.from_response(invite, response)
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
        keep = keep and not self.canceled_by_us  # hung up while the next hop was looked up
        self.status_code = response.status_code
        self.reason = response.reason_phrase or reason_phrase(response.status_code)
        self._send_ack(response)
        self._stop_ring_timer()
        self._parse_session_timer(response)
        if keep:
            try:
                if response.body:
                    self.answer = self._as_answer_to_us(
                        parse_answer(response.body, self._media.codecs)
                    )
                elif self.early_answer is not None:
                    self.answer = self.early_answer
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
            self._duration_timer = self.endpoint.loop.call_later(
                self.spec.max_duration, self._on_max_duration
            )
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
        (``next_invite_step`` stops at MAX_AUTH_ROUNDS), so no challenge loop.
        """
        try:
            realms = self._digest.on_challenge(response)
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
        self._provisional_seen = False
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
        self._reached = False
        self._digest.reset()
        self.endpoint.spawn(
            self._send_redirected_invite(target), name=f"sip-redirect-{self.call_id}"
        )

    async def _send_redirected_invite(self, target: str) -> None:
        if self.state is CallState.ENDED:
            return
        if self.canceled_by_us:
            # Canceled between the 3xx and the new INVITE: the CANCEL had no
            # transaction to end, so the call ends here, as if 487 had come.
            self._finish_unanswered(487, "Request Terminated", ended_by="local")
            return
        if not self.spec.proxy:
            # The Contact's ;transport= (and maddr) say how to reach it (RFC 3263
            # §4.1, §19.1.1); the call's own transport otherwise.
            transport = uri_transport(target) or self.spec.transport
            try:
                servers = await self.endpoint.locate(target, transport)
            except (OSError, ValueError) as exc:
                why = f"cannot resolve redirect target {target}: {exc}"
                if self._redirect_targets:  # §8.1.3.4: a failure too; on to the next Contact
                    logger.info("call %s: %s", self.call_id, why)
                    self._call_target(self._redirect_targets.pop(0))
                    return
                self.error = why
                self.local_failure = True
                self._finish_unanswered(503, "Service Unavailable", ended_by=None)
                return
            self._dest, self._next_servers = servers[0], servers[1:]
            # Via and Contact name the transport the callee answers on (§8.1.1.8).
            self._contact = self.endpoint.contact_for(self._dest, self._from_user)
        self._provisional_seen = False
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
            if self._digest.rounds:
                self.error = (
                    f"authentication failed: still challenged after {self._digest.rounds} "
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
        self._stop_ring_timer()
        if self._cancel_guard is not None:
            self._cancel_guard.cancel()
        self._resolve_setup(False)
        self._end(ended_by)

    def _resolve_setup(self, value: bool) -> None:
        if not self._setup_done.done():
            self._setup_done.set_result(value)

    def _end(self, ended_by: str | None) -> None:
        if self.state is CallState.ENDED:
            return
        self.ended_by = ended_by
        self.ended_at = _now()
        for handle in (
            self._ring_timer,
            self._duration_timer,
            self._refresh_timer,
            self._reinvite_timer,
            self._cancel_guard,
        ):
            if handle is not None:
                handle.cancel()
        if self.dialog is not None:
            self.dialog.terminate()
        self._resolve_setup(False)
        self._set_state(CallState.ENDED)
        self.ended.set()
        self.endpoint.forget_call(self)

    # --- ring timeout, CANCEL ---------------------------------------------------

    def _stop_ring_timer(self) -> None:
        if self._ring_timer is not None:
            self._ring_timer.cancel()
            self._ring_timer = None

    def _on_ring_timeout(self) -> None:
        self._ring_timer = None
        if self.state in (CallState.CALLING, CallState.RINGING):
            logger.info("call %s: ring timeout after %s s", self.call_id, self.spec.ring_timeout)
            if self.hangup_reason is None:
                self.hangup_reason = "ring-timeout"
            self._begin_cancel()

    def _begin_cancel(self) -> None:
        """CANCEL now if a provisional was seen, else as soon as one is (§9.1)."""
        self.canceled_by_us = True
        self._stop_ring_timer()
        if self._invite is None:  # still resolving: nothing was sent
            self._finish_unanswered(487, "Request Terminated", ended_by="local")
            return
        if self._provisional_seen:
            self._send_cancel()
        else:
            self._cancel_pending = True

    def _send_cancel(self) -> None:
        invite = self._invite
        if invite is None or self._cancel_sent or self._dest is None:
            return
        self._cancel_sent = True
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
        branch = _branch(invite)
        self.endpoint.start_transaction(cancel, self._dest, None, branch=branch)
        self._set_state(CallState.ENDING)
        # §9.1: no final within 64*T1 of the CANCEL -> give up on the INVITE.
        self._cancel_guard = self.endpoint.loop.call_later(
            self.endpoint.timers.b, self._on_cancel_guard
        )

    def _on_cancel_guard(self) -> None:
        self._cancel_guard = None
        if self._invite_txn is not None and self.state is not CallState.ENDED:
            self.endpoint.transaction_give_up(self._invite_txn)

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
        """The dialog's next hop (first Route, else remote target; §12.2.1.1, §8.1.2).

        Resolved by RFC 3263 (:meth:`SipEndpoint.resolve`): ``maddr`` and
        ``;transport=`` in the URI count, else the call's transport. Known
        without waiting for IP literals and names already resolved (by this
        call, else by the endpoint); None otherwise (:meth:`_after_hop` or
        :meth:`_in_dialog_hop` look it up). Never the INVITE's destination
        instead: a dialog's requests go where the callee or its proxies asked,
        and an outbound proxy is not one of them unless it Record-Routed.
        """
        assert self._dest is not None
        uri = dialog.next_hop_uri()
        dest = self._hops.get(uri)
        if dest is not None:
            return dest
        try:
            dest = self.endpoint.resolve_now(uri, self._hop_transport(uri))
        except ValueError:
            return None  # _resolve_hop reports it
        if dest is not None:
            self._remember_hop(uri, dest)
        return dest

    def _hop_transport(self, uri: str) -> str:
        assert self._dest is not None
        return uri_transport(uri) or self._dest.transport

    def _remember_hop(self, uri: str, dest: Destination) -> None:
        if len(self._hops) >= MAX_HOPS:
            self._hops.pop(next(iter(self._hops)))
        self._hops[uri] = dest

    async def _resolve_hop(self, uri: str) -> Destination:
        """Look ``uri`` up (bounded by 64*T1); raise OSError/ValueError with the reason."""
        known = self._hops.get(uri)
        if known is not None:
            return known
        why = self._hop_failures.get(uri)
        if why is not None:
            raise OSError(why)
        try:
            dest = await asyncio.wait_for(
                self.endpoint.resolve(uri, self._hop_transport(uri)), self.endpoint.timers.b
            )
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            why = f"cannot resolve the dialog's next hop {uri}: {exc or type(exc).__name__}"
            if len(self._hop_failures) < MAX_HOPS:
                self._hop_failures[uri] = why
            logger.warning("call %s: %s", self.call_id, why)
            raise OSError(why) from exc
        self._remember_hop(uri, dest)
        return dest

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
        bye = self._in_dialog_request("BYE")
        self.endpoint.send_request(bye, dest, self._on_bye_response)
        await asyncio.shield(self._bye_done)

    def _on_bye_response(self, response: SipResponse) -> None:
        if response.status_code < 200:
            return
        if self._retry_bye_with_digest(response):
            return
        if response.status_code >= 300:
            logger.info(
                "call %s: BYE got %s %s", self.call_id, response.status_code, response.reason_phrase
            )
        if self.ended_by is None:
            self._end("local")
        if self._bye_done is not None and not self._bye_done.done():
            self._bye_done.set_result(None)

    def _retry_bye_with_digest(self, response: SipResponse) -> bool:
        """Some proxies challenge BYE too (§22.2): answer once, like the INVITE."""
        status = response.status_code
        if (
            status not in (401, 407)
            or self._bye_auth_tried
            or isinstance(response, SyntheticResponse)
            or not (self.spec.username and self.spec.password is not None)
            or self.dialog is None
        ):
            return False
        self._bye_auth_tried = True
        uri, _ = self.dialog.routing()
        auth = SipDigestAuth(self.spec.username, self.spec.password)
        try:
            answer = answer_challenge(auth, response, status, "BYE", uri)
        except (ValueError, KeyError):
            answer = None
        if answer is None:
            return False
        dest = self._in_dialog_destination()
        if dest is None:  # resolved for the first BYE; only a target refresh since changes it
            return False
        bye = self._in_dialog_request("BYE", extra={answer[0]: answer[1]})
        self.endpoint.send_request(bye, dest, self._on_bye_response)
        return True

    def _on_max_duration(self) -> None:
        self._duration_timer = None
        if self.state is CallState.ANSWERED:
            logger.info("call %s: max duration %s s reached", self.call_id, self.spec.max_duration)
            self.hangup_reason = self.hangup_reason or "max-duration"
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-max-{self.call_id}")

    # --- requests from the callee -----------------------------------------------

    def on_request(self, request: SipRequest, source: Destination) -> SipResponse:
        """Answer an in-dialog request from the callee (§12.2.2): the handler decides.

        The endpoint sends what is returned. BYE ends the call; re-INVITE and
        UPDATE get our (unchanged) media with SDP version + 1, 488 when their
        offer lacks the codec in use, or 491 when they cross our own session
        refresh (:meth:`_glare`); OPTIONS and INFO get 200 (INFO DTMF is recorded).
        """
        method = request.method.upper()
        dialog = self.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            if method == "BYE" and self.state is not CallState.ENDED:
                pass  # BYE in an early dialog (§15): accept and end
            else:
                return build_response(request, 481)
        if dialog is not None and not dialog.check_remote_cseq(request):
            return build_response(request, 500, headers={"Retry-After": "1"})
        if method == "BYE":
            return self._on_remote_bye(request)
        if self._glare(request):
            logger.info(
                "call %s: %s crossed our %s: 491", self.call_id, method, self._refresh_pending
            )
            return build_response(request, 491)
        if method == "INVITE":
            return self._on_reinvite(request, source)
        if method == "UPDATE":
            return self._session_response(request, with_sdp=bool(request.body))
        if method == "OPTIONS":
            return build_response(
                request, 200, headers={"Allow": ALLOW, "Accept": "application/sdp"}
            )
        if method == "INFO":
            digit = parse_dtmf_info(request.content_type or "", request.body)
            if digit is not None:
                self.dtmf_info.append(digit)
                logger.info("call %s: DTMF %s via INFO", self.call_id, digit)
                if self.on_dtmf is not None:
                    try:
                        self.on_dtmf(digit)
                    except Exception:
                        logger.exception("on_dtmf callback failed for call %s", self.call_id)
            return build_response(request, 200)
        if method == "CANCEL":
            return build_response(request, 200)
        return build_response(request, 405, headers={"Allow": ALLOW})

    def _glare(self, request: SipRequest) -> bool:
        """Our session refresh is in flight, so this request must get 491 (RFC 3261 §14.2).

        A re-INVITE while our re-INVITE or UPDATE is pending; an UPDATE with an
        offer while our re-INVITE (with its offer) is pending (RFC 3311 §5.2).
        Our UPDATE carries no SDP, so an UPDATE offer does not cross it.
        """
        pending = self._refresh_pending
        if pending is None:
            return False
        method = request.method.upper()
        if method == "INVITE":
            return True
        return method == "UPDATE" and bool(request.body) and pending == "INVITE"

    def _on_remote_bye(self, request: SipRequest) -> SipResponse:
        logger.info("call %s: callee sent BYE", self.call_id)
        if self.state in (CallState.CALLING, CallState.RINGING):
            self._finish_unanswered(487, "Request Terminated", ended_by="remote")
        elif self._bye_done is None:
            self._end("remote")
        return build_response(request, 200)

    def _local_sdp(self, remote: MediaAnswer | None = None) -> bytes:
        """Our unchanged media, SDP version + 1 (RFC 3264 §8), narrowed to the chosen codec.

        With ``remote`` (the callee's offer) it is the answer to it: the
        mirrored direction and as many m-lines as the offer (RFC 3264 §6).
        Without, it is an offer (a refresh, or our 2xx to an SDP-less re-INVITE).
        """
        self._sdp_version += 1
        answer = self.answer
        offer = self._media
        codecs = [answer.codec] if answer is not None else offer.codecs
        if remote is not None:  # §6.1: the answer keeps the offer's payload type
            dtmf = remote.dtmf_payload_type
        elif answer is not None:  # an offer: keep the type we receive on
            dtmf = answer.receive_dtmf_payload_type
        else:
            dtmf = TELEPHONE_EVENT_PT
        if remote is not None:
            message = build_answer_message(
                offer,
                remote,
                session_version=self._sdp_version,
                session_id=self._session_id,
                codecs=codecs,
                dtmf_payload_type=dtmf,
            )
        else:
            message = build_offer_message(
                offer,
                session_version=self._sdp_version,
                session_id=self._session_id,
                codecs=codecs,
                dtmf_payload_type=dtmf,
            )
        return serialize_sdp(message).encode("ascii")

    def _read_remote_sdp(self, body: bytes, *, offer: bool) -> MediaAnswer:
        """The callee's new offer (or answer) for the audio stream we already play.

        Only the codec in use is acceptable: the prompt was prepared for it and
        ``MediaSession.play()`` cannot switch mid-stream. ``ValueError`` when
        the description lacks it (or has no usable audio stream).

        An ``offer`` is answered with its own telephone-event type, which we
        then receive on (RFC 3264 §6.1); an answer keeps the one we offered.
        """
        wanted = [self.answer.codec] if self.answer is not None else self._media.codecs
        remote = parse_answer(body, wanted)
        if offer:
            return dataclasses.replace(remote, receive_dtmf_payload_type=remote.dtmf_payload_type)
        return self._as_answer_to_us(remote)

    def _as_answer_to_us(self, answer: MediaAnswer) -> MediaAnswer:
        """An answer to our offer: callee's events come with the type *we* offered (§5.1)."""
        ours: int | None = TELEPHONE_EVENT_PT if self._media.telephone_event else None
        if self.answer is not None:
            ours = self.answer.receive_dtmf_payload_type
        if answer.dtmf_payload_type is None:
            ours = None  # no telephone-event negotiated: none to receive either
        return dataclasses.replace(answer, receive_dtmf_payload_type=ours)

    def _set_remote_media(self, answer: MediaAnswer) -> None:
        """Adopt a new remote media description and tell the owner (RFC 3264 §8)."""
        old = self.answer
        if old is not None and (answer.host, answer.port) != (old.host, old.port):
            logger.info(
                "call %s: callee moved media to %s:%s", self.call_id, answer.host, answer.port
            )
        self.answer = answer
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
                offered = self._read_remote_sdp(request.body, offer=True)
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
        raw_se = request.headers.get_first("session-expires") or request.headers.get_first("x")
        if raw_se:
            interval, refresher = _parse_session_expires(raw_se)
            refresher = refresher or "uac"  # the request's sender refreshes by default
            extra["Session-Expires"] = f"{interval};refresher={refresher}"
            extra["Require"] = "timer"
            self.session_expires = interval
            # "uac" in the callee's request is the callee itself: the remote side refreshes.
            self.session_refresher = "uas" if refresher == "uac" else "uac"
            self._arm_session_refresh()
        body = b""
        if offered is not None:
            self._set_remote_media(offered)
        if with_sdp:
            body = self._local_sdp(offered)
        return build_response(
            request, 200, headers=extra, body=body, content_type="application/sdp"
        )

    def _on_reinvite(self, request: SipRequest, source: Destination) -> SipResponse:
        assert self.dialog is not None
        response = self._session_response(request, with_sdp=True)
        # §13.3.1.4: the UAS core retransmits its 2xx until the ACK arrives.
        cseq = request.cseq.seq if request.cseq else 0
        if 200 <= response.status_code < 300:
            # No SDP in the re-INVITE: our 2xx is the offer and the ACK brings the answer.
            self._offer_in_2xx = None if request.body else cseq
            if source.transport == "udp":
                self._reinvite_2xx = (bytes(response), source, cseq)
                self._schedule_2xx_retransmit(self.endpoint.timers.t1, 0.0)
        return response

    def _schedule_2xx_retransmit(self, interval: float, elapsed: float) -> None:
        if self._reinvite_timer is not None:
            self._reinvite_timer.cancel()
        self._reinvite_timer = self.endpoint.loop.call_later(
            interval, self._retransmit_2xx, interval, elapsed + interval
        )

    def _retransmit_2xx(self, interval: float, elapsed: float) -> None:
        self._reinvite_timer = None
        pending = self._reinvite_2xx
        if pending is None or self.state is CallState.ENDED:
            return
        if elapsed >= self.endpoint.timers.b:
            logger.warning("call %s: no ACK for our 2xx to the re-INVITE", self.call_id)
            self._reinvite_2xx = None
            return
        self.endpoint.send_raw(pending[0], pending[1])
        self._schedule_2xx_retransmit(min(interval * 2, self.endpoint.timers.t2), elapsed)

    def on_ack(self, request: SipRequest) -> None:
        """The ACK for our 2xx to the callee's re-INVITE stops its retransmission.

        When that 2xx carried our offer (a re-INVITE without SDP), the ACK
        carries the answer (RFC 3261 §13.2.1, §14.2): it is applied like an offer.
        """
        pending = self._reinvite_2xx
        cseq = request.cseq
        if pending is not None and cseq is not None and cseq.seq == pending[2]:
            self._reinvite_2xx = None
            if self._reinvite_timer is not None:
                self._reinvite_timer.cancel()
                self._reinvite_timer = None
        if cseq is None or self._offer_in_2xx != cseq.seq or self.state is not CallState.ANSWERED:
            return
        self._offer_in_2xx = None
        self._apply_remote_answer(request.body, "SDP answer in ACK")

    # --- session timers (RFC 4028) ----------------------------------------------

    def _parse_session_timer(self, response: SipResponse) -> None:
        raw = response.headers.get_first("session-expires") or response.headers.get_first("x")
        allow = ",".join(response.headers.get("allow")).upper()
        self._peer_allows_update = "UPDATE" in allow
        if not raw:
            return
        interval, refresher = _parse_session_expires(raw)
        self.session_expires = interval
        self.session_refresher = refresher or "uac"

    def _arm_session_refresh(self) -> None:
        """RFC 4028 §7.4 / §10: refresh at half the interval when we are the refresher
        (refresher=uac); when the callee is, BYE if no refresh arrives before
        the interval minus min(32 s, interval/3).
        """
        if self._refresh_timer is not None:
            self._refresh_timer.cancel()
            self._refresh_timer = None
        if self.session_expires is None or self.state is not CallState.ANSWERED:
            return
        interval = self.session_expires
        if self.session_refresher == "uac":
            delay = max(MIN_SESSION_REFRESH, interval / 2)
            self._refresh_timer = self.endpoint.loop.call_later(delay, self._send_refresh)
        else:
            delay = max(MIN_SESSION_REFRESH, interval - min(32.0, interval / 3))
            self._refresh_timer = self.endpoint.loop.call_later(delay, self._on_session_expired)

    def _on_session_expired(self) -> None:
        self._refresh_timer = None
        if self.state is CallState.ANSWERED:
            logger.info("call %s: session expired without a refresh (RFC 4028)", self.call_id)
            self.hangup_reason = self.hangup_reason or "session-expired"
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-expired-{self.call_id}")

    def _send_refresh(self) -> None:
        self._refresh_timer = None
        if self.state is not CallState.ANSWERED or self.dialog is None:
            return
        dest = self._in_dialog_destination()
        if dest is None:  # a target refresh named a host not looked up yet
            self._after_hop(self.dialog, then=self._send_refresh, failed=self._on_hop_lost)
            return
        extra = {
            "Contact": self._contact,
            "Supported": "timer",
            "Session-Expires": f"{self.session_expires};refresher=uac",
        }
        if self._peer_allows_update:
            request = self._in_dialog_request("UPDATE", extra=extra)
        else:
            request = self._in_dialog_request("INVITE", body=self._local_sdp(), extra=extra)
        logger.info("call %s: session refresh with %s", self.call_id, request.method)
        self._refresh_pending = request.method
        self.endpoint.send_request(
            request, dest, lambda r: self._on_refresh_response(request, dest, r)
        )

    def _on_refresh_response(
        self, request: SipRequest, dest: Destination, response: SipResponse
    ) -> None:
        status = response.status_code
        if status < 200:
            return
        self._refresh_pending = None
        if request.method == "INVITE" and 200 <= status < 300 and self.dialog is not None:
            seq = request.cseq.seq if request.cseq else self.dialog.local_seq
            ack = self.dialog.create_request("ACK", cseq=seq)
            self.endpoint.stamp_via(ack, dest, new_branch())
            self._reinvite_acks[seq] = (bytes(ack), dest)
            while len(self._reinvite_acks) > MAX_REINVITE_ACKS:
                del self._reinvite_acks[min(self._reinvite_acks)]
            self.endpoint.send_raw(bytes(ack), dest)
            self._apply_refresh_answer(response)
        if 200 <= status < 300:
            self._parse_session_timer_refresh(response)
            self._arm_session_refresh()
        elif status in (408, 481):  # RFC 4028 §10: the session is gone
            logger.info("call %s: session refresh got %s, ending call", self.call_id, status)
            self.endpoint.spawn(self._send_bye(), name=f"sip-bye-refresh-{self.call_id}")
        elif status == 491 and self.state is CallState.ANSWERED:
            # §14.1: our request crossed one of the callee's; try again after a
            # random 2.1-4 s (we own the Call-ID), the same method.
            if self._refresh_timer is not None:
                self._refresh_timer.cancel()
            delay = glare_retry_delay()
            logger.info("call %s: session refresh got 491, retrying in %.2f s", self.call_id, delay)
            self._refresh_timer = self.endpoint.loop.call_later(delay, self._send_refresh)
        else:
            if request.method == "UPDATE":
                self._peer_allows_update = False  # fall back to re-INVITE next time
            self._arm_session_refresh()

    def _apply_refresh_answer(self, response: SipResponse) -> None:
        """The answer to our refresh offer may change the direction (a held callee
        resuming, RFC 3264 §8.4) or the address: applied like a callee's offer."""
        if self.state is CallState.ANSWERED:
            self._apply_remote_answer(response.body, "SDP in refresh answer")

    def _apply_remote_answer(self, body: bytes | None, what: str) -> None:
        """Take the callee's SDP answer to our offer, if any; a bad one is ignored."""
        if not body:
            return
        try:
            answer = self._read_remote_sdp(body, offer=False)
        except ValueError as exc:
            logger.info("call %s: ignoring %s: %s", self.call_id, what, exc)
            return
        self._set_remote_media(answer)

    def _parse_session_timer_refresh(self, response: SipResponse) -> None:
        raw = response.headers.get_first("session-expires") or response.headers.get_first("x")
        if raw:
            interval, refresher = _parse_session_expires(raw)
            self.session_expires = interval
            self.session_refresher = refresher or "uac"


_SIP_URI = re.compile(r"^\s*(?:\"[^\"]*\"\s*|[^<\"]*)?<?\s*sip:[^\s]", re.I)


def _parse_session_expires(raw: str) -> tuple[int, str | None]:
    """``"90;refresher=uac"`` -> (90, "uac") (RFC 4028 §4)."""
    value, _, params = raw.partition(";")
    try:
        interval = int(value.strip())
    except ValueError:
        interval = 1800
    refresher = parse_params(params).get("refresher")
    return max(interval, 1), (refresher.lower() if refresher else None)


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
