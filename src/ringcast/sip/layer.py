"""The transaction layer: owner of every client and server transaction (RFC 3261 §17).

It applies what the pure state machines of :mod:`ringcast.sip.transaction`
decide (``Send``, ``StartTimer``, ``StopTimer``, ``Deliver``, ``Terminate``,
``NoAck``), arms their timers on the event loop, and matches what arrives:
responses to client transactions by top Via branch and CSeq method (§17.1.3),
requests to server transactions by branch, sent-by and method (§17.2.3, an
ACK matching its INVITE), and the ACK for a 2xx to the INVITE server
transaction of the same dialog and CSeq (§13.3.1.4, RFC 6026 §7.1).

Server transactions are only made for requests inside a live dialog (the
endpoint decides); everything else is answered statelessly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosipua.message import SipRequest, SipResponse

from ringcast.sip.message import Destination, branch_of, sent_by
from ringcast.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    NoAck,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    ServerTransaction,
    StartTimer,
    StopTimer,
    Terminate,
    TimerName,
    Timers,
)
from ringcast.sip.transport import Addr

logger = logging.getLogger(__name__)

RELIABLE = frozenset({"tcp", "tls"})  # transports without retransmission (§17.1.1.2)

ResponseHandler = Callable[[SipResponse], None]
Sender = Callable[[bytes, Destination], None]


@dataclass(slots=True, eq=False)
class _Entry:
    """Owner-side bookkeeping for one transaction: where it sends, its timer handles."""

    txn: ClientTransaction | ServerTransaction
    dest: Destination  # client: the next hop; server: where responses go (§18.2.2)
    tu: ResponseHandler | None = None
    ack_key: tuple[str, int] | None = None  # INVITE server: (Call-ID, CSeq) its 2xx ACK has
    handles: dict[TimerName, asyncio.TimerHandle] = field(default_factory=dict)


def server_key(request: SipRequest) -> str:
    """§17.2.3: top Via branch, sent-by and method (an ACK matches its INVITE's)."""
    via = request.headers.get_first("via") or ""
    method = request.method.upper()
    if method == "ACK":
        method = "INVITE"
    return f"{branch_of(via)}|{sent_by(via)}|{method}"


class TransactionLayer:
    """Client and server transactions of one endpoint, and their timers."""

    def __init__(
        self, send: Sender, timers: Timers, loop: Callable[[], asyncio.AbstractEventLoop]
    ) -> None:
        self._send = send
        self.timers = timers
        self._loop = loop
        self._client: dict[str, _Entry] = {}
        self._server: dict[str, _Entry] = {}
        self._accepted: dict[tuple[str, int], _Entry] = {}  # INVITE server txns awaiting ACK
        self.retransmissions = 0  # requests re-sent by Timers A and E (metrics)

    @property
    def client_count(self) -> int:
        return len(self._client)

    @property
    def server_count(self) -> int:
        return len(self._server)

    # --- client side (§17.1) ----------------------------------------------------

    def start_client(
        self, request: SipRequest, dest: Destination, tu: ResponseHandler | None, *, branch: str
    ) -> ClientTransaction:
        """Run ``request`` (its top Via already carries ``branch``) as a client transaction."""
        reliable = dest.transport in RELIABLE
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(request, reliable=reliable, timers=self.timers)
        else:
            txn = NonInviteClientTransaction(request, reliable=reliable, timers=self.timers)
        key = f"{branch}:{request.method}"
        txn.key = key
        entry = _Entry(txn, dest, tu)
        self._client[key] = entry
        self._apply(entry, txn.start())
        return txn

    def hand_over(self, txn: ClientTransaction, tu: ResponseHandler | None) -> None:
        """From now on ``tu`` hears what ``txn`` delivers (an ended call hands its
        INVITE transaction, which passes retransmitted 2xx up for 64*T1, to what
        the endpoint keeps of it)."""
        entry = self._client.get(txn.key)
        if entry is not None and entry.txn is txn:
            entry.tu = tu

    def give_up(self, txn: ClientTransaction) -> None:
        entry = self._client.get(txn.key)
        if entry is not None and isinstance(txn, InviteClientTransaction):
            self._apply(entry, txn.give_up())

    def on_response(self, response: SipResponse) -> bool:
        """Feed a response to its client transaction; False when none matches."""
        cseq = response.cseq
        key = f"{branch_of(response.headers.get_first('via') or '')}:{cseq.method if cseq else ''}"
        entry = self._client.get(key)
        if entry is None:
            return False
        txn = entry.txn
        if isinstance(txn, InviteClientTransaction | NonInviteClientTransaction):
            self._apply(entry, txn.on_response(response))
        return True

    # --- server side (§17.2) ----------------------------------------------------

    def on_request(self, request: SipRequest) -> bool:
        """A retransmitted request, or the ACK of a non-2xx: handled by its server
        transaction (True), or no transaction has it (False)."""
        entry = self._server.get(server_key(request))
        if entry is None:
            return False
        txn = entry.txn
        if request.method.upper() == "ACK":
            if isinstance(txn, InviteServerTransaction):
                self._apply(entry, txn.on_ack())
            return True
        if isinstance(txn, InviteServerTransaction | NonInviteServerTransaction):
            self._apply(entry, txn.on_request())
        return True

    def on_2xx_ack(self, call_id: str, cseq: int) -> None:
        """The ACK for our 2xx (its own branch): stop re-sending that 2xx (§13.3.1.4)."""
        entry = self._accepted.get((call_id, cseq))
        if entry is not None and isinstance(entry.txn, InviteServerTransaction):
            self._apply(entry, entry.txn.on_ack())

    def start_server(self, request: SipRequest, source: Destination) -> _Entry:
        """A server transaction for a request inside a live dialog; answer it with
        :meth:`respond`."""
        reliable = source.transport in RELIABLE
        key = server_key(request)
        txn: ServerTransaction
        entry: _Entry
        if request.method.upper() == "INVITE":
            txn = InviteServerTransaction(reliable=reliable, timers=self.timers, key=key)
            cseq = request.cseq
            entry = _Entry(txn, source, ack_key=(request.call_id or "", cseq.seq if cseq else 0))
        else:
            txn = NonInviteServerTransaction(reliable=reliable, timers=self.timers, key=key)
            entry = _Entry(txn, source)
        self._server[key] = entry
        return entry

    def respond(self, entry: _Entry, response: SipResponse) -> None:
        """Send the TU's response through its server transaction."""
        txn = entry.txn
        if not isinstance(txn, InviteServerTransaction | NonInviteServerTransaction):
            raise TypeError(f"{txn.key} is a client transaction")
        status = response.status_code
        if entry.ack_key is not None and 200 <= status < 300:
            self._accepted[entry.ack_key] = entry
        self._apply(entry, txn.respond(bytes(response), status))

    # --- both -------------------------------------------------------------------

    def on_transport_error(self, addr: Addr, transport: str, detail: str) -> None:
        """Every transaction bound to ``addr``: client ones get a synthetic 503 (§8.1.3.1)."""
        for table in (self._client, self._server):
            for entry in list(table.values()):
                if entry.dest.addr == addr and entry.dest.transport == transport:
                    txn = entry.txn
                    if isinstance(txn, InviteClientTransaction | NonInviteClientTransaction):
                        self._apply(entry, txn.on_transport_error(detail))
                    else:
                        self._apply(entry, txn.on_transport_error())

    def close(self) -> None:
        """Forget every transaction and cancel its timers."""
        for table in (self._client, self._server):
            for entry in list(table.values()):
                self._forget(entry)

    def _apply(self, entry: _Entry, actions: list[Action]) -> None:
        """Carry out what a transaction decided (STYLE habit 4: the owner applies)."""
        for action in actions:
            if isinstance(action, Send):
                self._send(action.data, entry.dest)
            elif isinstance(action, StartTimer):
                old = entry.handles.pop(action.timer, None)
                if old is not None:
                    old.cancel()
                entry.handles[action.timer] = self._loop().call_later(
                    action.delay, self._fire, entry, action.timer
                )
            elif isinstance(action, StopTimer):
                handle = entry.handles.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Deliver):
                tu = entry.tu
                if tu is not None:
                    if _last_delivery(entry.txn, action.response):
                        entry.tu = None  # the lingering transaction keeps no call alive
                    try:
                        tu(action.response)
                    except Exception:  # a TU bug must not take the endpoint down
                        logger.exception("response handler failed for %s", entry.txn.key)
            elif isinstance(action, NoAck):
                logger.warning(
                    "no ACK from %s for our final response (%s, Timer %s)",
                    entry.dest,
                    entry.txn.key,
                    action.timer.value,
                )
            elif isinstance(action, Terminate):
                self._forget(entry)

    def _fire(self, entry: _Entry, timer: TimerName) -> None:
        entry.handles.pop(timer, None)
        actions = entry.txn.on_timer(timer)
        if timer in (TimerName.A, TimerName.E):  # §17.1.1.2 / §17.1.2.2 retransmission timers
            self.retransmissions += sum(isinstance(a, Send) for a in actions)
        self._apply(entry, actions)

    def _forget(self, entry: _Entry) -> None:
        for handle in entry.handles.values():
            handle.cancel()
        entry.handles.clear()
        key = entry.txn.key
        if isinstance(entry.txn, InviteServerTransaction | NonInviteServerTransaction):
            if self._server.get(key) is entry:
                del self._server[key]
            if entry.ack_key is not None and self._accepted.get(entry.ack_key) is entry:
                del self._accepted[entry.ack_key]
        elif self._client.get(key) is entry:
            del self._client[key]


def _last_delivery(txn: ClientTransaction | ServerTransaction, response: SipResponse) -> bool:
    """A final response a client transaction passes up, after which it passes up nothing:
    every final but a 2xx to an INVITE (RFC 6026: those are passed up until Timer M)."""
    if response.status_code < 200:
        return False
    return not (isinstance(txn, InviteClientTransaction) and response.status_code < 300)
