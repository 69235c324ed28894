"""One SIP endpoint per process: the sockets, and who gets each message.

:class:`SipEndpoint` multiplexes every call over one UDP socket (plus TCP
connections when asked). What arrives goes, in this order: through the flood
gate (:mod:`ringcast.sip.flood`; responses and our calls' requests exempt),
the parser (garbage is logged, rate-limited, and dropped), then responses to
their client transactions and requests to their server transactions
(:mod:`ringcast.sip.layer`), in-dialog requests to the call whose Call-ID, To
tag (ours) and From tag (the callee's) all match (§12.2.2) through a new
server transaction, and everything else to the stateless responder
(:mod:`ringcast.sip.stateless`), which keeps nothing. Nothing a peer sends
can raise out of :meth:`on_packet`.

The endpoint never imports the call module: a call is a :class:`DialogUser`.
Where requests go and the address we write: :mod:`ringcast.sip.addressing`.
SIP over TLS (client connections, certificate checks): :mod:`ringcast.sip.tls`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import uuid
from typing import Protocol

from aiosipua.headers import CaseInsensitiveDict
from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.inet import bind_families, bracket, hostport, public_ips
from ringcast.sip.addressing import MAX_TARGETS, Addressing, Locator
from ringcast.sip.dialog import Dialog
from ringcast.sip.flood import FLOOD_BURST, FLOOD_RATE, FLOOD_TOTAL_RATE, FloodGate, exempt
from ringcast.sip.layer import ResponseHandler, TransactionLayer
from ringcast.sip.message import (
    Destination,
    build_response,
    new_branch,
    response_destination,
)
from ringcast.sip.stateless import StatelessResponder
from ringcast.sip.tls import TlsOptions, TlsTransport
from ringcast.sip.transaction import ClientTransaction, Timers
from ringcast.sip.transport import (
    Addr,
    TcpTransport,
    UdpTransport,
)
from ringcast.sip.uas_checks import refusal, request_version

__all__ = ["MAX_TARGETS", "Destination", "DialogUser", "Locator", "SipEndpoint"]

logger = logging.getLogger(__name__)

GARBAGE_LOG_WINDOW = 10.0  # seconds
GARBAGE_LOG_BURST = 10  # log lines per window, the rest are counted
TRANSPORTS = ("udp", "tcp")
PORT_ATTEMPTS = 16  # free UDP ports tried for one that is free for TCP too (port 0)
USER_AGENT = "ringcast/0.1"  # what our calls' requests carry in User-Agent


class DialogUser(Protocol):
    """What the endpoint needs from a call (the UAC core of one dialog)."""

    @property
    def call_id(self) -> str: ...

    @property
    def local_tag(self) -> str: ...

    @property
    def dialog(self) -> Dialog | None: ...

    @property
    def ended(self) -> asyncio.Event: ...

    async def hangup(self, reason: str = "normal") -> None: ...

    def abort(self, why: str) -> None: ...

    def uses_tcp_peer(self, addr: tuple[str, int]) -> bool: ...

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx to our INVITE after its transaction ended: ACK it again (§13.2.2.4)."""
        ...

    def on_request(self, request: SipRequest, source: Destination) -> SipResponse:
        """Answer an in-dialog request (the endpoint sends it through a server transaction)."""
        ...

    def on_ack(self, request: SipRequest) -> None:
        """The ACK for our 2xx to the callee's re-INVITE (it may carry an SDP answer)."""
        ...


class SipEndpoint:
    """The process's SIP user agent: owns sockets, transactions and the dialog index.

    ``t1``/``t2``/``t4`` are RFC 3261 §17 base timers in seconds (small T1
    makes tests fast). ``public_ip`` goes into Via, Contact and SDP instead of
    the local address (NAT): one address, or an IPv4 and an IPv6 one
    comma-separated, each used towards peers of its family. ``host`` ``::`` is
    dual stack: a peer's family picks the local (or public) address written
    for it; an IPv4 ``host`` reaches IPv4 peers only, an IPv6 one IPv6 peers
    only, and host names resolve to the addresses it can reach. ``transport``
    picks the listening transports: ``"udp"`` listens on UDP only (TCP is
    still used, client side, for calls whose :class:`CallSpec` asks for it),
    ``"tcp"`` listens on both.

    ``flood_rate``/``flood_burst`` bound the requests one source IP may send,
    ``flood_total_rate`` those of all sources together (token buckets;
    ``flood_rate=None`` turns the gate off, ``flood_total_rate=None`` the
    global budget); requests over them are dropped without a response and
    counted in :attr:`flood_dropped`. ``silent_invites`` leaves out-of-dialog
    INVITEs unanswered instead of 403, so scanners learn nothing.
    ``user_agent`` is the User-Agent of our calls' requests; strangers see it
    (as ``Server``) only with ``identify_to_strangers``. ``dns_server`` (IP,
    port) is the nameserver :meth:`locate` asks (NAPTR, SRV, A: RFC 3263), the
    system's by default. ``locator`` replaces that lookup altogether; it
    returns IP literals only.
    """

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 5060,
        transport: str = "udp",
        public_ip: str | None = None,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        user_agent: str = USER_AGENT,
        identify_to_strangers: bool = False,
        tcp_idle_timeout: float = 120.0,
        flood_rate: float | None = FLOOD_RATE,
        flood_burst: int = FLOOD_BURST,
        flood_total_rate: float | None = FLOOD_TOTAL_RATE,
        silent_invites: bool = False,
        locator: Locator | None = None,
        dns_server: tuple[str, int] | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be udp or tcp, not {transport!r}")
        self.host = host
        self.port = port
        self.transport = transport
        self.public_ip = public_ip
        self._public = public_ips(public_ip) if public_ip else {}  # IP version -> address
        self.families = bind_families(host)  # IP versions our sockets reach
        self.timers = Timers(t1=t1, t2=t2, t4=t4)
        self.user_agent = user_agent
        self.flood: FloodGate | None = (
            FloodGate(flood_rate, flood_burst, total_rate=flood_total_rate)
            if flood_rate is not None
            else None
        )
        self.stateless = StatelessResponder(
            silent_invites=silent_invites, server=user_agent if identify_to_strangers else None
        )
        self.transactions = TransactionLayer(
            lambda data, dest: self.send_raw(data, dest), self.timers, lambda: self.loop
        )
        self._udp = UdpTransport(self)
        self._tcp = TcpTransport(self, idle_timeout=tcp_idle_timeout)
        self._tls = TlsTransport(self, idle_timeout=tcp_idle_timeout)  # client side (RFC 5630)
        self._calls: dict[str, DialogUser] = {}
        self.dns_server = dns_server
        self.addressing = Addressing(
            host, self.families, self._public, self._tls, locator=locator, dns_server=dns_server
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._garbage_window = 0.0
        self._garbage_logged = 0
        self._garbage_suppressed = 0
        self.garbage_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self.local_port = 0

    @property
    def silent_invites(self) -> bool:
        """Out-of-dialog INVITEs get no answer at all (instead of 403)."""
        return self.stateless.silent_invites

    @silent_invites.setter
    def silent_invites(self, value: bool) -> None:
        self.stateless.silent_invites = value

    @property
    def flood_dropped(self) -> int:
        """Requests dropped unanswered by the flood gate, either budget (metrics)."""
        return self.flood.dropped if self.flood is not None else 0

    @property
    def retransmissions(self) -> int:
        """Requests re-sent by Timers A and E (metrics)."""
        return self.transactions.retransmissions

    @property
    def stateless_answers(self) -> int:
        """Requests from strangers answered statelessly (metrics)."""
        return self.stateless.answered

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets; ``port=0`` picks a free port (see :attr:`local_port`).

        With TCP, the UDP socket's port must be free for TCP too: when it is not,
        a picked port is given back and another one tried; a port asked for is
        an error. Nothing stays bound after a failed start."""
        self._loop = asyncio.get_running_loop()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            await self._udp.start(self.host, self.port)
            self.local_port = self._udp.local_addr[1]
            if self.transport != "tcp":
                break
            try:
                await self._tcp.start(self.host, self.local_port)
                break
            except OSError as exc:
                await self._udp.close()
                if self.port != 0 or exc.errno != errno.EADDRINUSE or attempt == PORT_ATTEMPTS:
                    raise
                logger.debug("SIP port %s is taken for TCP; picking another", self.local_port)
        self._started = True

    async def close(self, *, grace: float = 2.0) -> None:
        """Hang up live calls (bounded by ``grace`` seconds), then close sockets.

        Calls still alive after the grace period are ended locally (their
        ``ended`` event is set, ``error`` says why) so nobody waits forever.
        """
        live = [c for c in self._calls.values() if not c.ended.is_set()]
        if live:
            hangups = [
                self.spawn(c.hangup("shutdown"), name=f"sip-close-{c.call_id}") for c in live
            ]
            await asyncio.wait(hangups, timeout=grace)
            for call in live:
                if not call.ended.is_set():
                    call.abort("SIP endpoint closed before the call ended")
        self.transactions.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._udp.close()
        await self._tcp.close()
        await self._tls.close()
        self._started = False

    async def __aenter__(self) -> SipEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("SipEndpoint.start() has not been awaited")
        return self._loop

    def spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        """A named background task the endpoint keeps and cancels on close."""
        task: asyncio.Task[None] = self.loop.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- calls ------------------------------------------------------------------

    def add_call(self, call: DialogUser) -> None:
        """Index a new call by its Call-ID, so its in-dialog requests reach it."""
        if not self._started:
            raise RuntimeError("SipEndpoint.start() has not been awaited")
        self._calls[call.call_id] = call

    def forget_call(
        self, call: DialogUser, *, linger: float | None = None, remains: DialogUser | None = None
    ) -> None:
        """Drop the call from the dialog index after ``linger`` seconds (default 64*T1).

        ``remains`` (what an ended call leaves, :class:`~ringcast.sip.ended.EndedCall`)
        takes the call's place meanwhile, so the index keeps no ended call alive."""
        delay = self.timers.b if linger is None else linger
        if remains is not None and self._calls.get(call.call_id) is call:
            self._calls[call.call_id] = call = remains
        self.loop.call_later(delay, self._drop_call, call)

    def _drop_call(self, call: DialogUser) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    @property
    def live_calls(self) -> int:
        return sum(1 for c in self._calls.values() if not c.ended.is_set())

    def new_call_id(self) -> str:
        return f"{uuid.uuid4().hex}@ringcast"

    # --- addressing -------------------------------------------------------------

    def local_host_for(self, dest: Destination) -> str:
        """:meth:`Addressing.local_host_for`: the address we write for ``dest``."""
        return self.addressing.local_host_for(dest)

    def local_port_for(self, transport: str) -> int:
        if transport == "tcp" and self._tcp.local_addr[1]:
            return self._tcp.local_addr[1]
        return self.local_port

    async def locate(
        self, uri: str, transport: str | None = None, *, tls: TlsOptions | None = None
    ) -> list[Destination]:
        """Every server to try for a SIP URI, in order (:meth:`Addressing.locate`)."""
        return await self.addressing.locate(uri, transport, self.local_port, tls=tls)

    async def resolve(
        self, uri: str, transport: str | None = None, *, tls: TlsOptions | None = None
    ) -> Destination:
        """The first server of :meth:`locate` (:meth:`Addressing.resolve`)."""
        return await self.addressing.resolve(uri, transport, self.local_port, tls=tls)

    def resolve_now(
        self, uri: str, transport: str | None = None, *, tls: TlsOptions | None = None
    ) -> Destination | None:
        """IP literals and names already looked up, else None (:meth:`Addressing.resolve_now`)."""
        return self.addressing.resolve_now(uri, transport, tls=tls)

    def via_for(self, dest: Destination, branch: str) -> str:
        """Our Via value with ``rport`` (RFC 3581) so NATed responses find us."""
        host = bracket(self.local_host_for(dest))
        # TLS: RFC 5923 alias, so the server sends our dialog's requests on this connection
        alias = ";alias" if dest.transport == "tls" else ""
        return (
            f"SIP/2.0/{dest.transport.upper()} {host}:{self.local_port_for(dest.transport)}"
            f";rport{alias};branch={branch}"
        )

    def contact_for(self, dest: Destination, user: str | None) -> str:
        host = bracket(self.local_host_for(dest))
        port = self.local_port_for(dest.transport)
        userpart = f"{user}@" if user else ""
        if dest.transport == "tls":  # §8.1.1.8: SIPS Contact for a sips: request (RFC 5630)
            return f"<sips:{userpart}{host}:{port}>"
        params = ";transport=tcp" if dest.transport == "tcp" else ""
        return f"<sip:{userpart}{host}:{port}{params}>"

    # --- sending ----------------------------------------------------------------

    def send_raw(self, data: bytes, dest: Destination) -> None:
        """Send bytes outside any client transaction (2xx ACK, our responses)."""
        if dest.transport == "tcp":
            self._tcp.send(data, dest.addr)
        elif dest.transport == "tls":
            self._tls.send(data, dest.addr)
        else:
            self._udp.send(data, dest.addr)

    def start_transaction(
        self, request: SipRequest, dest: Destination, tu: ResponseHandler | None, *, branch: str
    ) -> ClientTransaction:
        """Run ``request`` (its top Via already carries ``branch``) as a client transaction."""
        return self.transactions.start_client(request, dest, tu, branch=branch)

    def stamp_via(self, request: SipRequest, dest: Destination, branch: str) -> None:
        """Put our Via (and only ours) at the top of ``request`` (§8.1.1.7)."""
        via = self.via_for(dest, branch)
        current = request.headers.get("via")
        if len(current) == 1 and current[0] == "":
            request.headers.set_single("Via", via)  # the builder's placeholder: order kept
            return
        headers = CaseInsensitiveDict()
        headers.append("Via", via)
        for name, values in request.headers.items():
            if name.lower() == "via":
                continue
            for value in values:
                headers.append(name, value)
        request.headers = headers

    def send_request(
        self, request: SipRequest, dest: Destination, tu: ResponseHandler | None
    ) -> ClientTransaction:
        """Add our Via with a fresh branch and start a client transaction."""
        branch = new_branch()
        self.stamp_via(request, dest, branch)
        return self.transactions.start_client(request, dest, tu, branch=branch)

    def transaction_give_up(self, txn: ClientTransaction) -> None:
        self.transactions.give_up(txn)

    # --- TransportUser ----------------------------------------------------------

    def connection_in_use(self, addr: Addr) -> bool:
        """A live call still sends to ``addr`` over TCP (keep its connection open)."""
        for call in self._calls.values():
            if not call.ended.is_set() and call.uses_tcp_peer(addr):
                return True
        return False

    @property
    def tcp_connections(self) -> int:
        return self._tcp.connections

    @property
    def tls_connections(self) -> int:
        return self._tls.connections

    @property
    def tls_handshake_failures(self) -> int:
        """TLS handshakes that failed (bad certificate, wrong name, not TLS): metrics."""
        return self._tls.handshake_failures

    def on_transport_error(self, addr: Addr, exc: BaseException, transport: str) -> None:
        """Every live transaction bound to ``addr`` hears of it (client ones: a 503)."""
        if isinstance(exc, OSError) and exc.errno:
            why = os.strerror(exc.errno)
        else:
            why = str(exc) or type(exc).__name__
        detail = f"cannot reach {hostport(*addr)} over {transport}: {why}"
        logger.info("SIP transport error: %s", detail)
        self.transactions.on_transport_error(addr, transport, detail)

    def on_packet(self, data: bytes, addr: Addr, transport: str) -> None:
        """Entry point for every datagram / framed TCP message."""
        if data[:1] in b"\r\n\x00 \t" and not data.strip(b"\r\n\x00 \t"):
            return  # keep-alive (RFC 5626 §3.5.1); no copy of a message that starts with text
        flood = self.flood
        if (
            flood is not None
            and not (self._calls and exempt(data, self._calls))
            and not data.startswith(b"SIP/2.0 ")
            and not flood.admit(addr[0])
        ):
            return  # over a budget: no parsing, no answer (FloodGate logs)
        try:
            msg = SipMessage.parse(data)
            if not msg.headers.get_first("via") or not msg.headers.get_first("call-id"):
                raise ValueError("missing Via or Call-ID")
            cseq = msg.cseq
            if cseq is None or not cseq.method:
                raise ValueError("missing or malformed CSeq")
        except (ValueError, IndexError, KeyError, UnicodeError) as exc:
            self._garbage(addr, str(exc), data)
            return
        try:
            if isinstance(msg, SipResponse):
                self._on_response(msg, addr)
            else:
                self._on_request(msg, addr, transport, request_version(data))
        except (ValueError, IndexError, KeyError) as exc:
            self._garbage(addr, f"unprocessable message: {exc}", data)
        except Exception:  # never let one message kill the endpoint
            logger.exception("SIP message from %s:%s could not be handled", addr[0], addr[1])

    def _garbage(self, addr: Addr, why: str, data: bytes) -> None:
        self.garbage_count += 1
        now = time.monotonic()
        if now - self._garbage_window > GARBAGE_LOG_WINDOW:
            if self._garbage_suppressed:
                logger.warning("dropped %s more malformed SIP messages", self._garbage_suppressed)
            self._garbage_window = now
            self._garbage_logged = 0
            self._garbage_suppressed = 0
        if self._garbage_logged < GARBAGE_LOG_BURST:
            self._garbage_logged += 1
            logger.warning(
                "dropped malformed SIP message from %s:%s (%s bytes): %s",
                addr[0],
                addr[1],
                len(data),
                why,
            )
        else:
            self._garbage_suppressed += 1

    def _on_response(self, response: SipResponse, addr: Addr) -> None:
        if self.transactions.on_response(response):
            return
        cseq = response.cseq
        method = cseq.method if cseq else ""
        call = self._calls.get(response.call_id or "")
        if call is not None and method == "INVITE" and 200 <= response.status_code < 300:
            call.on_stray_2xx(response)  # §13.2.2.4: re-ACK every retransmitted 2xx
            return
        logger.debug("stray %s response to %s from %s:%s", response.status_code, method, *addr)

    def _on_request(
        self, request: SipRequest, addr: Addr, transport: str, version: str = "SIP/2.0"
    ) -> None:
        if self.transactions.on_request(request):
            return  # a retransmission (or the ACK of a non-2xx) its server transaction took
        method = request.method.upper()
        call = self._calls.get(request.call_id or "")
        if method == "ACK":
            if call is not None:  # the ACK for our 2xx to a re-INVITE: its own branch
                cseq = request.cseq
                self.transactions.on_2xx_ack(call.call_id, cseq.seq if cseq else 0)
                call.on_ack(request)
            return
        via = request.headers.get_first("via") or ""
        source = response_destination(via, addr, transport)  # where our answers go
        refused = refusal(request, version=version)
        if call is not None and not call.ended.is_set() and _in_dialog(call, request):
            if refused is not None:
                response = build_response(request, refused.status, headers=dict(refused.headers))
            else:
                response = call.on_request(request, source)  # first: if it raises, nothing is kept
            entry = self.transactions.start_server(request, source)
            self.transactions.respond(entry, response)
            return
        answer = self.stateless.answer(request, source=f"{addr[0]}:{addr[1]}", refused=refused)
        if answer is not None:
            self.send_raw(answer, source)


def _in_dialog(call: DialogUser, request: SipRequest) -> bool:
    """Call-ID (already matched), our tag and the callee's tag all match the dialog (§12.2.2)."""
    dialog = call.dialog
    to = request.to_addr
    if dialog is None or to is None or not to.tag or call.local_tag != to.tag:
        return False
    frm = request.from_addr
    remote_tag = (frm.tag if frm is not None else None) or ""
    return remote_tag == dialog.remote_tag
