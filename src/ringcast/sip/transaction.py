"""RFC 3261 §17 client and server transactions, as pure state machines.

A transaction never touches a socket or the event loop. Every input (the
start, a response, a timer firing, a transport error) returns a list of
actions -- :class:`Send`, :class:`StartTimer`, :class:`StopTimer`,
:class:`Deliver`, :class:`Terminate` -- that the owner (the endpoint) applies.
That keeps the timer logic testable without sockets (tests feed events and
compare the actions).

Timeouts become synthetic responses so the transaction user has one code path:
Timer B / Timer F -> 408 "Request Timeout" (§17.1.1.2, §17.1.2.2), a transport
error -> 503 "Service Unavailable" (§8.1.3.1).

The INVITE client transaction follows RFC 6026: a 2xx moves it to *Accepted*
(Timer M = 64*T1), where retransmitted 2xx are passed up so the UAC core can
re-send its ACK (§13.2.2.4). The ACK for a non-2xx final is built and sent by
the transaction itself (§17.1.1.3).

Server transactions (§17.2) hold the final response a request was answered
with, so a retransmitted request gets the same bytes again (and a non-2xx to
an INVITE is retransmitted until its ACK, Timers G/H/I). ringcast keeps them
only for requests inside a live dialog; strangers are answered statelessly.
The INVITE server transaction also follows RFC 6026 (*Accepted*, Timer L) and
runs the UAS core's 2xx retransmission (§13.3.1.4) on Timer G's schedule, so
the call keeps no timer of its own for it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from aiosipua.headers import CaseInsensitiveDict
from aiosipua.message import SipRequest, SipResponse

from ringcast.sip.causes import reason_phrase

logger = logging.getLogger(__name__)

# RFC 3261 §17.1.1.1 / Appendix A defaults, seconds.
DEFAULT_T1 = 0.5  # RTT estimate
DEFAULT_T2 = 4.0  # maximum retransmit interval for non-INVITE requests
DEFAULT_T4 = 5.0  # maximum time a message stays in the network


@dataclass(frozen=True, slots=True)
class Timers:
    """The RFC 3261 base timers (seconds); everything else derives from them."""

    t1: float = DEFAULT_T1
    t2: float = DEFAULT_T2
    t4: float = DEFAULT_T4

    @property
    def b(self) -> float:
        """Timer B / F / H / J / L / M: 64*T1, the transaction timeout."""
        return 64 * self.t1

    @property
    def d(self) -> float:
        """Timer D over UDP: at least 32 s (§17.1.1.2), and never below 64*T1."""
        return max(32.0, 64 * self.t1)


class TimerName(enum.StrEnum):
    """Transaction timers, by their RFC 3261 / RFC 6026 names."""

    A = "A"  # INVITE retransmit, UDP only
    B = "B"  # INVITE timeout
    D = "D"  # wait for response retransmits after a non-2xx final
    E = "E"  # non-INVITE retransmit, UDP only
    F = "F"  # non-INVITE timeout
    K = "K"  # wait for response retransmits after a non-INVITE final
    M = "M"  # RFC 6026: absorb 2xx retransmissions after a 2xx
    G = "G"  # server: INVITE final response retransmit, UDP only
    H = "H"  # server: wait for the ACK to a non-2xx final
    I = "I"  # server: absorb ACK retransmits after the ACK  # noqa: E741 - the RFC's name
    J = "J"  # server: absorb non-INVITE request retransmits after the final
    L = "L"  # server, RFC 6026: absorb INVITE retransmits after a 2xx


@dataclass(frozen=True, slots=True)
class Send:
    """Put these bytes on the wire, to the transaction's destination."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm) a timer."""

    timer: TimerName
    delay: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    """Disarm a timer."""

    timer: TimerName


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand a response (possibly synthetic) up to the transaction user."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class Terminate:
    """The transaction is over: forget it and every timer it holds."""


@dataclass(frozen=True, slots=True)
class NoAck:
    """A server transaction stopped waiting for the ACK to its final (Timer H or L)."""

    timer: TimerName


Action = Send | StartTimer | StopTimer | Deliver | Terminate | NoAck


class InviteState(enum.Enum):
    """RFC 3261 Figure 5 plus RFC 6026's Accepted."""

    CALLING = "calling"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class NonInviteState(enum.Enum):
    """RFC 3261 Figure 6."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class InviteServerState(enum.Enum):
    """RFC 3261 Figure 7 plus RFC 6026's Accepted."""

    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class NonInviteServerState(enum.Enum):
    """RFC 3261 Figure 8."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


_RESPONSE_COPY_HEADERS = ("via", "from", "to", "call-id", "cseq")


@dataclass
class SyntheticResponse(SipResponse):
    """A response made locally, never received: ``detail`` says why (e.g. "Timer B")."""

    detail: str = ""


def synthetic_response(request: SipRequest, status: int, detail: str = "") -> SyntheticResponse:
    """A locally made response to ``request`` (§8.1.3.1), e.g. a timeout 408."""
    headers = CaseInsensitiveDict()
    for name in _RESPONSE_COPY_HEADERS:
        for value in request.headers.get(name):
            headers.append(name, value)
    return SyntheticResponse(
        headers=headers,
        status_code=status,
        reason_phrase=reason_phrase(status),
        detail=detail,
    )


def build_non2xx_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final response, as the transaction sends it (§17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via (same branch) as
    the INVITE; To from the response (it carries the tag); the INVITE's Route.
    """
    headers = CaseInsensitiveDict()
    vias = invite.headers.get("via")
    if vias:
        headers.append("Via", vias[0])
    headers.append("Max-Forwards", "70")
    for name in ("from",):
        for value in invite.headers.get(name):
            headers.append("From", value)
    to = response.headers.get_first("to") or invite.headers.get_first("to") or ""
    headers.append("To", to)
    headers.append("Call-ID", invite.headers.get_first("call-id") or "")
    cseq = invite.cseq
    headers.append("CSeq", f"{cseq.seq if cseq else 1} ACK")
    for route in invite.headers.get("route"):
        headers.append("Route", route)
    return SipRequest(headers=headers, method="ACK", uri=invite.uri)


class InviteClientTransaction:
    """RFC 3261 §17.1.1 INVITE client transaction (with RFC 6026 Accepted state).

    ``reliable`` is True over TCP: no Timer A, and Timer D is zero.
    """

    __slots__ = ("request", "wire", "reliable", "timers", "state", "_interval", "_ack", "key")

    def __init__(
        self, request: SipRequest, *, reliable: bool, timers: Timers, wire: bytes | None = None
    ) -> None:
        self.request = request
        self.wire = wire if wire is not None else bytes(request)
        self.reliable = reliable
        self.timers = timers
        self.state = InviteState.CALLING
        self._interval = timers.t1
        self._ack: bytes | None = None
        self.key = ""  # the owner's index key (branch + method)

    def _set_state(self, new: InviteState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        logger.debug("INVITE client transaction %s: %s -> %s", self.key, old.value, new.value)

    @property
    def terminated(self) -> bool:
        return self.state is InviteState.TERMINATED

    def start(self) -> list[Action]:
        """Send the INVITE; arm Timer A (UDP) and Timer B (§17.1.1.2)."""
        actions: list[Action] = [Send(self.wire)]
        if not self.reliable:
            actions.append(StartTimer(TimerName.A, self._interval))
        actions.append(StartTimer(TimerName.B, self.timers.b))
        return actions

    def on_response(self, response: SipResponse) -> list[Action]:
        """Feed a response whose top Via branch matched (§17.1.3)."""
        status = response.status_code
        state = self.state
        if state in (InviteState.CALLING, InviteState.PROCEEDING):
            if status < 200:
                actions: list[Action] = []
                if state is InviteState.CALLING:
                    actions += [StopTimer(TimerName.A), StopTimer(TimerName.B)]
                self._set_state(InviteState.PROCEEDING)
                actions.append(Deliver(response))
                return actions
            if status < 300:
                self._set_state(InviteState.ACCEPTED)
                return [
                    StopTimer(TimerName.A),
                    StopTimer(TimerName.B),
                    Deliver(response),
                    StartTimer(TimerName.M, self.timers.b),
                ]
            self._ack = bytes(build_non2xx_ack(self.request, response))
            actions = [StopTimer(TimerName.A), StopTimer(TimerName.B), Send(self._ack)]
            actions.append(Deliver(response))
            if self.reliable:
                self._set_state(InviteState.TERMINATED)
                actions.append(Terminate())
            else:
                self._set_state(InviteState.COMPLETED)
                actions.append(StartTimer(TimerName.D, self.timers.d))
            return actions
        if state is InviteState.ACCEPTED:
            if 200 <= status < 300:
                return [Deliver(response)]  # the TU re-sends its ACK
            return []
        if state is InviteState.COMPLETED and status >= 300 and self._ack is not None:
            return [Send(self._ack)]  # retransmitted final: ACK again
        return []

    def on_timer(self, timer: TimerName) -> list[Action]:
        """A timer the owner armed has fired."""
        state = self.state
        if timer is TimerName.A and state is InviteState.CALLING:
            self._interval *= 2  # §17.1.1.2: doubles each time, no T2 cap for INVITE
            return [Send(self.wire), StartTimer(TimerName.A, self._interval)]
        if timer is TimerName.B and state is InviteState.CALLING:
            return self._fail(408, "Timer B")
        if timer is TimerName.D and state is InviteState.COMPLETED:
            self._set_state(InviteState.TERMINATED)
            return [Terminate()]
        if timer is TimerName.M and state is InviteState.ACCEPTED:
            self._set_state(InviteState.TERMINATED)
            return [Terminate()]
        return []

    def on_transport_error(self, detail: str = "transport error") -> list[Action]:
        """The transport could not send (§8.1.3.1): a synthetic 503."""
        if self.state in (InviteState.CALLING, InviteState.PROCEEDING):
            return self._fail(503, detail)
        if self.state is not InviteState.TERMINATED:
            self._set_state(InviteState.TERMINATED)
            return [Terminate()]
        return []

    def give_up(self) -> list[Action]:
        """The TU stops waiting (§9.1: no final 64*T1 after CANCEL): synthetic 408."""
        if self.state in (InviteState.CALLING, InviteState.PROCEEDING):
            return self._fail(408, "no final response after CANCEL")
        return []

    def _fail(self, status: int, detail: str) -> list[Action]:
        self._set_state(InviteState.TERMINATED)
        return [
            StopTimer(TimerName.A),
            StopTimer(TimerName.B),
            Deliver(synthetic_response(self.request, status, detail)),
            Terminate(),
        ]


class NonInviteClientTransaction:
    """RFC 3261 §17.1.2 non-INVITE client transaction (BYE, CANCEL, UPDATE, ...)."""

    __slots__ = ("request", "wire", "reliable", "timers", "state", "_interval", "key")

    def __init__(
        self, request: SipRequest, *, reliable: bool, timers: Timers, wire: bytes | None = None
    ) -> None:
        self.request = request
        self.wire = wire if wire is not None else bytes(request)
        self.reliable = reliable
        self.timers = timers
        self.state = NonInviteState.TRYING
        self._interval = timers.t1
        self.key = ""

    def _set_state(self, new: NonInviteState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        logger.debug(
            "%s client transaction %s: %s -> %s",
            self.request.method,
            self.key,
            old.value,
            new.value,
        )

    @property
    def terminated(self) -> bool:
        return self.state is NonInviteState.TERMINATED

    def start(self) -> list[Action]:
        """Send the request; arm Timer E (UDP) and Timer F (§17.1.2.2)."""
        actions: list[Action] = [Send(self.wire)]
        if not self.reliable:
            actions.append(StartTimer(TimerName.E, self._interval))
        actions.append(StartTimer(TimerName.F, self.timers.b))
        return actions

    def on_response(self, response: SipResponse) -> list[Action]:
        status = response.status_code
        if self.state in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            if status < 200:
                self._set_state(NonInviteState.PROCEEDING)
                return [Deliver(response)]
            actions: list[Action] = [
                StopTimer(TimerName.E),
                StopTimer(TimerName.F),
                Deliver(response),
            ]
            if self.reliable:
                self._set_state(NonInviteState.TERMINATED)
                actions.append(Terminate())
            else:
                self._set_state(NonInviteState.COMPLETED)
                actions.append(StartTimer(TimerName.K, self.timers.t4))
            return actions
        return []  # Completed absorbs retransmitted finals

    def on_timer(self, timer: TimerName) -> list[Action]:
        state = self.state
        if timer is TimerName.E and state in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            if state is NonInviteState.TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            return [Send(self.wire), StartTimer(TimerName.E, self._interval)]
        if timer is TimerName.F and state in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            return self._fail(408, "Timer F")
        if timer is TimerName.K and state is NonInviteState.COMPLETED:
            self._set_state(NonInviteState.TERMINATED)
            return [Terminate()]
        return []

    def on_transport_error(self, detail: str = "transport error") -> list[Action]:
        if self.state in (NonInviteState.TRYING, NonInviteState.PROCEEDING):
            return self._fail(503, detail)
        return []

    def _fail(self, status: int, detail: str) -> list[Action]:
        self._set_state(NonInviteState.TERMINATED)
        return [
            StopTimer(TimerName.E),
            StopTimer(TimerName.F),
            Deliver(synthetic_response(self.request, status, detail)),
            Terminate(),
        ]


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction


class InviteServerTransaction:
    """RFC 3261 §17.2.1 INVITE server transaction, with RFC 6026's Accepted state.

    The transaction user answers through :meth:`respond` (wire bytes and the
    status). A final non-2xx moves to *Completed*: re-sent on Timer G (T1,
    doubling up to T2, UDP only) until the ACK (*Confirmed*, Timer I = T4) or
    Timer H (64*T1). A 2xx moves to *Accepted* for Timer L (64*T1), where
    retransmitted INVITEs are absorbed (RFC 6026 §7.1) and the 2xx is re-sent
    on Timer G's schedule until the ACK for it arrives (§13.3.1.4: the UAS
    core's duty, kept here so the call holds no timer for it). The ACK for a
    2xx carries a new branch, so the owner matches it to this transaction by
    dialog and CSeq number and calls :meth:`on_ack`.
    ``reliable`` is True over TCP: nothing is retransmitted, Timer I is zero.
    """

    __slots__ = ("reliable", "timers", "state", "key", "acked", "_final", "_interval")

    def __init__(self, *, reliable: bool, timers: Timers, key: str = "") -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = InviteServerState.PROCEEDING
        self.key = key  # the owner's index key (branch, sent-by, method)
        self.acked = False
        self._final: bytes | None = None
        self._interval = timers.t1

    def _set_state(self, new: InviteServerState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        logger.debug("INVITE server transaction %s: %s -> %s", self.key, old.value, new.value)

    @property
    def terminated(self) -> bool:
        return self.state is InviteServerState.TERMINATED

    def respond(self, data: bytes, status: int) -> list[Action]:
        """The TU sends a response (§17.2.1): provisional, 2xx or another final."""
        if self.state is not InviteServerState.PROCEEDING:
            return []  # one final per transaction
        if status < 200:
            return [Send(data)]
        self._final = data
        if status < 300:
            self._set_state(InviteServerState.ACCEPTED)
            wait = TimerName.L
        else:
            self._set_state(InviteServerState.COMPLETED)
            wait = TimerName.H
        actions: list[Action] = [Send(data)]
        if not self.reliable:
            actions.append(StartTimer(TimerName.G, self._interval))
        actions.append(StartTimer(wait, self.timers.b))
        return actions

    def on_request(self) -> list[Action]:
        """The INVITE was retransmitted: the final again in Completed, else absorbed."""
        if self.state is InviteServerState.COMPLETED and self._final is not None:
            return [Send(self._final)]
        return []  # Proceeding: nothing sent yet; Accepted: RFC 6026 absorbs it

    def on_ack(self) -> list[Action]:
        """The ACK arrived: for a non-2xx (same branch) or for the 2xx (matched by CSeq)."""
        state = self.state
        if state is InviteServerState.COMPLETED:
            self.acked = True
            actions: list[Action] = [StopTimer(TimerName.G), StopTimer(TimerName.H)]
            if self.reliable:
                self._set_state(InviteServerState.TERMINATED)
                return [*actions, Terminate()]
            self._set_state(InviteServerState.CONFIRMED)
            return [*actions, StartTimer(TimerName.I, self.timers.t4)]
        if state is InviteServerState.ACCEPTED and not self.acked:
            self.acked = True
            return [StopTimer(TimerName.G)]  # Timer L still absorbs INVITE retransmissions
        return []

    def on_timer(self, timer: TimerName) -> list[Action]:
        """A timer the owner armed has fired."""
        state = self.state
        if timer is TimerName.G and self._final is not None and not self.acked:
            if state in (InviteServerState.COMPLETED, InviteServerState.ACCEPTED):
                self._interval = min(2 * self._interval, self.timers.t2)
                return [Send(self._final), StartTimer(TimerName.G, self._interval)]
        if timer is TimerName.H and state is InviteServerState.COMPLETED:
            self._set_state(InviteServerState.TERMINATED)
            return [StopTimer(TimerName.G), NoAck(TimerName.H), Terminate()]
        if timer is TimerName.I and state is InviteServerState.CONFIRMED:
            self._set_state(InviteServerState.TERMINATED)
            return [Terminate()]
        if timer is TimerName.L and state is InviteServerState.ACCEPTED:
            self._set_state(InviteServerState.TERMINATED)
            if self.acked:
                return [Terminate()]
            return [StopTimer(TimerName.G), NoAck(TimerName.L), Terminate()]
        return []

    def on_transport_error(self) -> list[Action]:
        """The response could not be sent (§17.2.4): the transaction ends."""
        if self.state is InviteServerState.TERMINATED:
            return []
        self._set_state(InviteServerState.TERMINATED)
        return [StopTimer(TimerName.G), Terminate()]


class NonInviteServerTransaction:
    """RFC 3261 §17.2.2 non-INVITE server transaction (BYE, UPDATE, INFO, ...).

    The final response is kept in *Completed* for Timer J (64*T1 over UDP,
    zero over TCP) and re-sent for every retransmission of the request.
    """

    __slots__ = ("reliable", "timers", "state", "key", "_last")

    def __init__(self, *, reliable: bool, timers: Timers, key: str = "") -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = NonInviteServerState.TRYING
        self.key = key
        self._last: bytes | None = None  # the last response sent

    def _set_state(self, new: NonInviteServerState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        logger.debug("server transaction %s: %s -> %s", self.key, old.value, new.value)

    @property
    def terminated(self) -> bool:
        return self.state is NonInviteServerState.TERMINATED

    def respond(self, data: bytes, status: int) -> list[Action]:
        """The TU sends a response: a provisional (Proceeding) or the final (Completed)."""
        if self.state not in (NonInviteServerState.TRYING, NonInviteServerState.PROCEEDING):
            return []
        self._last = data
        if status < 200:
            self._set_state(NonInviteServerState.PROCEEDING)
            return [Send(data)]
        if self.reliable:
            self._set_state(NonInviteServerState.TERMINATED)
            return [Send(data), Terminate()]
        self._set_state(NonInviteServerState.COMPLETED)
        return [Send(data), StartTimer(TimerName.J, self.timers.b)]

    def on_request(self) -> list[Action]:
        """The request was retransmitted: the last response again (none yet in Trying)."""
        if self._last is not None and self.state in (
            NonInviteServerState.PROCEEDING,
            NonInviteServerState.COMPLETED,
        ):
            return [Send(self._last)]
        return []

    def on_timer(self, timer: TimerName) -> list[Action]:
        if timer is TimerName.J and self.state is NonInviteServerState.COMPLETED:
            self._set_state(NonInviteServerState.TERMINATED)
            return [Terminate()]
        return []

    def on_transport_error(self) -> list[Action]:
        """The response could not be sent (§17.2.4): the transaction ends."""
        if self.state is NonInviteServerState.TERMINATED:
            return []
        self._set_state(NonInviteServerState.TERMINATED)
        return [Terminate()]


ServerTransaction = InviteServerTransaction | NonInviteServerTransaction
