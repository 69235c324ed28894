"""One SIP endpoint per process: the socket, the transactions, the dialogs.

:class:`SipEndpoint` multiplexes every call over one UDP socket (plus TCP
connections when asked). It is the *owner* that applies what the pure
transaction state machines decide (``Send``, ``StartTimer``, ...), routes
incoming responses to client transactions by top Via branch and CSeq method
(RFC 3261 §17.1.3) and incoming requests to calls by Call-ID and tags (§12.2.2).

Out-of-dialog requests get stateless answers: INVITE -> 403 (ringcast only
calls out; no answer at all with ``silent_invites``), REGISTER -> 405,
OPTIONS -> 200. In-dialog requests reach a call only when Call-ID, To tag
(ours) and From tag (the callee's) all match its dialog; anything else gets 481.
Requests from one source IP beyond a token-bucket rate are dropped unanswered
and unparsed (:class:`FloodGate`); responses and requests within our calls
never are.
Garbage is logged (rate-limited) and dropped; nothing a peer sends can raise
out of :meth:`on_packet`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import re
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiosipua.headers import CaseInsensitiveDict, parse_uri, parse_via
from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.sip.causes import reason_phrase
from ringcast.sip.locate import (
    SIP_PORT,
    Resolver,
    Server,
    Target,
    target_of,
    usable_servers,
)
from ringcast.sip.locate import locate as locate_servers
from ringcast.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    InviteClientTransaction,
    NonInviteClientTransaction,
    Send,
    StartTimer,
    StopTimer,
    Terminate,
    TimerName,
    Timers,
)
from ringcast.sip.transport import Addr, TcpTransport, UdpTransport

if TYPE_CHECKING:
    from ringcast.sip.call import CallSpec, CallState, OutboundCall
    from ringcast.sip.sdp import MediaAnswer

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
GARBAGE_LOG_WINDOW = 10.0  # seconds
GARBAGE_LOG_BURST = 10  # log lines per window, the rest are counted
TRANSPORTS = ("udp", "tcp")
PORT_ATTEMPTS = 16  # free UDP ports tried for one that is free for TCP too (port 0)
FLOOD_RATE = 50.0  # requests per second per source IP, sustained
FLOOD_BURST = 100  # requests a source may send at once before the rate applies
FLOOD_LOG_WINDOW = 10.0  # seconds between two flood warnings about one source
FLOOD_TABLE_SIZE = 10_000  # sources tracked at once; the least recently seen is forgotten
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:([^\r\n]*)", re.I | re.M)  # raw, before parsing

ResponseHandler = Callable[[SipResponse], None]
# (host name, the URI's port or None, transport) -> [(IP, port), ...] in the order
# to try them: the DNS step of RFC 3263 §4.1-4.2 (see SipEndpoint.locate).
Locator = Callable[[str, int | None, str], Awaitable[list[tuple[str, int]]]]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: a resolved address and a transport name."""

    host: str
    port: int
    transport: str = "udp"

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class _Entry:
    """Owner-side bookkeeping for one client transaction."""

    txn: ClientTransaction
    dest: Destination
    tu: ResponseHandler | None
    handles: dict[TimerName, asyncio.TimerHandle] = field(default_factory=dict)


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + os.urandom(8).hex()


@dataclass(slots=True)
class _Bucket:
    """One source's token bucket and its flood-log bookkeeping."""

    tokens: float
    stamp: float  # time.monotonic() of the last refill
    dropped: int = 0  # since the last warning
    warned_at: float | None = None


class FloodGate:
    """Per-source token buckets: ``rate`` requests/s sustained, ``burst`` at once.

    :meth:`admit` is O(1): one dict lookup, an LRU move and a refill. The table
    holds at most ``size`` sources (least recently seen forgotten), so spoofed
    source addresses cost bounded memory. A source over its rate is warned
    about at most once per :data:`FLOOD_LOG_WINDOW`, with the count dropped.
    """

    __slots__ = ("rate", "burst", "size", "dropped", "_buckets", "_clock")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        size: int = FLOOD_TABLE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"flood_rate must be > 0, not {rate!r}")
        if burst < 1:
            raise ValueError(f"flood_burst must be >= 1, not {burst!r}")
        if size < 1:
            raise ValueError(f"flood table size must be >= 1, not {size!r}")
        self.rate = rate
        self.burst = burst
        self.size = size
        self.dropped = 0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, source: str) -> bool:
        """Take one token from ``source``'s bucket; False (and counted) when it is empty."""
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self.size:
                buckets.popitem(last=False)
            bucket = buckets[source] = _Bucket(float(self.burst), now)
        else:
            buckets.move_to_end(source)
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
                bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.dropped += 1
        bucket.dropped += 1
        if bucket.warned_at is None or now - bucket.warned_at >= FLOOD_LOG_WINDOW:
            logger.warning(
                "SIP flood from %s: dropped %s requests unanswered since the last warning"
                " (limit %s/s, burst %s)",
                source,
                bucket.dropped,
                self.rate,
                self.burst,
            )
            bucket.dropped = 0
            bucket.warned_at = now
        return False


def new_tag() -> str:
    """A From/To tag (§19.3): 32 random bits at least."""
    return os.urandom(6).hex()


def response_destination(via: str, addr: Addr, transport: str) -> Destination:
    """Where the response to a request with top Via ``via`` from ``addr`` goes.

    RFC 3261 §18.2.2 with RFC 3581 §4. Over TCP the response goes back on the
    connection the request came in on (the connection is keyed by ``addr``).
    Over UDP, with ``rport`` it goes to the source IP and port (the peer's NAT
    binding); else to the source IP (the ``received`` address we would add)
    and the sent-by port, 5060 by default. A peer that sends from one socket
    and listens on another names the listening one in its Via, and only gets
    our answers there. Always to the source IP: a Via ``maddr`` (§18.2.2, meant
    for multicast, which ringcast does not do) is not followed, or any stranger
    could aim our answers at a third party's address.
    """
    if transport != "udp":
        return Destination(addr[0], addr[1], transport)
    try:
        top = parse_via(via.split(",", 1)[0])
    except (ValueError, IndexError):
        return Destination(addr[0], addr[1], transport)
    port = top.port if top.port is not None and 0 < top.port < 65536 else 5060
    if "rport" in top.params:
        return Destination(addr[0], addr[1], transport)
    return Destination(addr[0], port, transport)


def build_response(
    request: SipRequest,
    status: int,
    *,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` (§8.2.6): Via, From, To (+tag), Call-ID, CSeq copied."""
    h = CaseInsensitiveDict()
    for via in request.headers.get("via"):
        h.append("Via", via)
    h.append("From", request.headers.get_first("from") or "")
    to = request.headers.get_first("to") or ""
    if to_tag and ";tag=" not in to.lower():
        to = f"{to};tag={to_tag}"
    h.append("To", to)
    h.append("Call-ID", request.headers.get_first("call-id") or "")
    h.append("CSeq", request.headers.get_first("cseq") or "")
    for name, value in (headers or {}).items():
        h.append(name, value)
    if body and content_type:
        h.append("Content-Type", content_type)
    return SipResponse(
        headers=h, body=body, status_code=status, reason_phrase=reason or reason_phrase(status)
    )


class SipEndpoint:
    """The process's SIP user agent: owns sockets, transactions and live calls.

    ``t1``/``t2``/``t4`` are RFC 3261 §17 base timers in seconds (small T1
    makes tests fast). ``public_ip`` goes into Via, Contact and SDP instead of
    the local address (NAT). ``transport`` picks the listening transports:
    ``"udp"`` listens on UDP only (TCP is still used, client side, for calls
    whose :class:`CallSpec` asks for it), ``"tcp"`` listens on both.

    ``flood_rate``/``flood_burst`` bound the requests one source IP may send
    (token bucket; ``flood_rate=None`` turns the limit off); requests over it
    are dropped without a response and counted in :attr:`flood_dropped`.
    ``silent_invites`` leaves out-of-dialog INVITEs unanswered instead of 403,
    so scanners learn nothing. ``dns_server`` (IP, port) is the nameserver
    :meth:`locate` asks (NAPTR, SRV, A: RFC 3263), the system's by default.
    ``locator`` replaces that lookup altogether; it returns IP literals only.
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
        user_agent: str = "ringcast/0.1",
        tcp_idle_timeout: float = 120.0,
        flood_rate: float | None = FLOOD_RATE,
        flood_burst: int = FLOOD_BURST,
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
        self.timers = Timers(t1=t1, t2=t2, t4=t4)
        self.user_agent = user_agent
        self.silent_invites = silent_invites
        self.flood: FloodGate | None = (
            FloodGate(flood_rate, flood_burst) if flood_rate is not None else None
        )
        self._udp = UdpTransport(self)
        self._tcp = TcpTransport(self, idle_timeout=tcp_idle_timeout)
        self._txns: dict[str, _Entry] = {}
        self._calls: dict[str, OutboundCall] = {}
        self._responses: dict[str, tuple[bytes, Addr, str]] = {}  # server-side retransmits
        self._local_hosts: dict[str, str] = {}
        self._locator = locator
        self.dns_server = dns_server
        self._dns = Resolver(dns_server)  # RFC 3263 lookups; IPv4 only, as the sockets
        self._random = random.Random()  # SRV weights (RFC 2782)
        self._resolved: dict[Target, Destination] = {}  # first server of each name
        self._tasks: set[asyncio.Task[None]] = set()
        self._garbage_window = 0.0
        self._garbage_logged = 0
        self._garbage_suppressed = 0
        self.garbage_count = 0
        self.retransmissions = 0  # requests re-sent by Timers A and E (metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self.local_port = 0

    @property
    def flood_dropped(self) -> int:
        """Requests dropped unanswered by the per-source rate limit (metrics)."""
        return self.flood.dropped if self.flood is not None else 0

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
        for entry in list(self._txns.values()):
            self._forget(entry)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._udp.close()
        await self._tcp.close()
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

    def create_call(
        self,
        spec: CallSpec,
        *,
        on_state: Callable[[CallState], None] | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        on_media: Callable[[MediaAnswer], None] | None = None,
    ) -> OutboundCall:
        """A new outbound call; nothing is sent until ``await call.setup()``."""
        from ringcast.sip.call import OutboundCall

        if not self._started:
            raise RuntimeError("SipEndpoint.start() has not been awaited")
        call = OutboundCall(self, spec, on_state=on_state, on_dtmf=on_dtmf, on_media=on_media)
        self._calls[call.call_id] = call
        return call

    def forget_call(self, call: OutboundCall, *, linger: float | None = None) -> None:
        """Drop the call from the dialog index after ``linger`` seconds (default 64*T1)."""
        delay = self.timers.b if linger is None else linger
        self.loop.call_later(delay, self._drop_call, call)

    def _drop_call(self, call: OutboundCall) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    @property
    def live_calls(self) -> int:
        return sum(1 for c in self._calls.values() if not c.ended.is_set())

    def new_call_id(self) -> str:
        return f"{uuid.uuid4().hex}@ringcast"

    # --- addressing -------------------------------------------------------------

    def local_host_for(self, dest: Destination) -> str:
        """The address we write in Via/Contact/SDP for traffic to ``dest``."""
        if self.public_ip:
            return self.public_ip
        if self.host not in ("0.0.0.0", "", "::"):
            return self.host
        cached = self._local_hosts.get(dest.host)
        if cached is not None:
            return cached
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((dest.host, dest.port or 9))  # no packet is sent
                local = str(probe.getsockname()[0])
        except OSError:
            local = "127.0.0.1"
        self._local_hosts[dest.host] = local
        return local

    def local_port_for(self, transport: str) -> int:
        if transport == "tcp" and self._tcp.local_addr[1]:
            return self._tcp.local_addr[1]
        return self.local_port

    async def locate(self, uri: str, transport: str | None = None) -> list[Destination]:
        """Every server to try for a SIP URI, in order (RFC 3263 §4, :mod:`.locate`).

        §4.3: when the first one fails (a transport error, a timeout) or
        answers 503, the client tries the next, so a carrier's cluster is not
        lost with one overloaded or dead member. An IP literal is the only
        target; a host name is looked up by the endpoint's ``locator`` when it
        has one, else in the DNS: NAPTR, SRV, then A records (the URI's port and
        transport, when it names them, cut the steps short). At most
        :data:`MAX_TARGETS`, duplicates dropped; anything a locator returns that
        is not an IP literal and a port is skipped (no name is ever sent to).
        ``maddr`` and ``transport`` count as in :meth:`resolve`.
        Raises OSError when no server is found, ValueError for an unusable URI.
        """
        target = target_of(uri, transport)
        if self._locator is not None and not target.numeric:
            name = target.transport or "udp"
            found = await self._locator(target.host, target.port, name)
            servers = usable_servers(Server(ip, port, name) for ip, port in found)
        else:
            servers = await locate_servers(target, self._dns, self._random)
        if not servers:
            raise OSError(f"cannot resolve {target.host}")
        targets = [Destination(*server) for server in servers]
        if not target.numeric:
            self._resolved[target] = targets[0]
        return targets

    async def resolve(self, uri: str, transport: str | None = None) -> Destination:
        """The first server of :meth:`locate` (cached per host, port and transport).

        A ``maddr`` parameter replaces the host (RFC 3261 §19.1.1); ``transport``
        wins over the URI's ``;transport=`` (then the DNS, then "udp"). Raises
        OSError when the host name cannot be resolved, ValueError for an
        unusable URI.
        """
        known = self.resolve_now(uri, transport)
        if known is not None:
            return known
        return (await self.locate(uri, transport))[0]

    def resolve_now(self, uri: str, transport: str | None = None) -> Destination | None:
        """Like :meth:`resolve` without waiting: IP literals and cached names, else None."""
        target = target_of(uri, transport)
        if target.numeric:
            return Destination(target.host, target.port or SIP_PORT, target.transport or "udp")
        return self._resolved.get(target)

    def via_for(self, dest: Destination, branch: str) -> str:
        """Our Via value with ``rport`` (RFC 3581) so NATed responses find us."""
        host = self.local_host_for(dest)
        return (
            f"SIP/2.0/{dest.transport.upper()} {host}:{self.local_port_for(dest.transport)}"
            f";rport;branch={branch}"
        )

    def contact_for(self, dest: Destination, user: str | None) -> str:
        host = self.local_host_for(dest)
        port = self.local_port_for(dest.transport)
        userpart = f"{user}@" if user else ""
        params = ";transport=tcp" if dest.transport == "tcp" else ""
        return f"<sip:{userpart}{host}:{port}{params}>"

    # --- sending ----------------------------------------------------------------

    def send_raw(self, data: bytes, dest: Destination) -> None:
        """Send bytes outside any client transaction (2xx ACK, our responses)."""
        if dest.transport == "tcp":
            self._tcp.send(data, dest.addr)
        else:
            self._udp.send(data, dest.addr)

    def start_transaction(
        self, request: SipRequest, dest: Destination, tu: ResponseHandler | None, *, branch: str
    ) -> ClientTransaction:
        """Run ``request`` (its top Via already carries ``branch``) as a client transaction."""
        reliable = dest.transport == "tcp"
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(request, reliable=reliable, timers=self.timers)
        else:
            txn = NonInviteClientTransaction(request, reliable=reliable, timers=self.timers)
        key = f"{branch}:{request.method}"
        txn.key = key
        entry = _Entry(txn, dest, tu)
        self._txns[key] = entry
        self._apply(entry, txn.start())
        return txn

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
        return self.start_transaction(request, dest, tu, branch=branch)

    def transaction_give_up(self, txn: ClientTransaction) -> None:
        entry = self._txns.get(txn.key)
        if entry is not None and isinstance(txn, InviteClientTransaction):
            self._apply(entry, txn.give_up())

    def _apply(self, entry: _Entry, actions: list[Action]) -> None:
        """Carry out what a transaction decided (STYLE habit 4: the owner applies)."""
        for action in actions:
            if isinstance(action, Send):
                self.send_raw(action.data, entry.dest)
            elif isinstance(action, StartTimer):
                old = entry.handles.pop(action.timer, None)
                if old is not None:
                    old.cancel()
                entry.handles[action.timer] = self.loop.call_later(
                    action.delay, self._fire, entry, action.timer
                )
            elif isinstance(action, StopTimer):
                handle = entry.handles.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Deliver):
                if entry.tu is not None:
                    try:
                        entry.tu(action.response)
                    except Exception:  # a TU bug must not take the endpoint down
                        logger.exception("response handler failed for %s", entry.txn.key)
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
        if self._txns.get(entry.txn.key) is entry:
            del self._txns[entry.txn.key]

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

    def on_transport_error(self, addr: Addr, exc: BaseException, transport: str) -> None:
        """Every live transaction bound to ``addr`` gets a synthetic 503 (§8.1.3.1)."""
        if isinstance(exc, OSError) and exc.errno:
            why = os.strerror(exc.errno)
        else:
            why = str(exc) or type(exc).__name__
        detail = f"cannot reach {addr[0]}:{addr[1]} over {transport}: {why}"
        logger.info("SIP transport error: %s", detail)
        for entry in list(self._txns.values()):
            if entry.dest.addr == addr and entry.dest.transport == transport:
                self._apply(entry, entry.txn.on_transport_error(detail))

    def on_packet(self, data: bytes, addr: Addr, transport: str) -> None:
        """Entry point for every datagram / framed TCP message."""
        if not data.strip(b"\r\n\x00 \t"):
            return  # keep-alive (RFC 5626 §3.5.1)
        if self.flood is not None and not self._exempt(data) and not self.flood.admit(addr[0]):
            return  # over the source's rate: no parsing, no answer (FloodGate logs)
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
                self._on_request(msg, addr, transport)
        except (ValueError, IndexError, KeyError) as exc:
            self._garbage(addr, f"unprocessable message: {exc}", data)
        except Exception:  # never let one message kill the endpoint
            logger.exception("SIP message from %s:%s could not be handled", addr[0], addr[1])

    def _exempt(self, data: bytes) -> bool:
        """Never rate-limited: responses, and anything carrying one of our calls' Call-IDs.

        Checked on the raw bytes, before parsing, so a flood costs no parse (and
        no parser warnings); a carrier that sends both calls and a flood cannot
        starve the BYEs and re-INVITEs of live calls.
        """
        if data.startswith(b"SIP/2.0 "):
            return True
        found = _CALL_ID.search(data)
        return found is not None and found.group(1).decode("latin-1").strip() in self._calls

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
        via = response.headers.get_first("via") or ""
        branch = _branch_of(via)
        cseq = response.cseq
        method = cseq.method if cseq else ""
        entry = self._txns.get(f"{branch}:{method}")
        if entry is not None:
            self._apply(entry, entry.txn.on_response(response))
            return
        call = self._calls.get(response.call_id or "")
        if call is not None and method == "INVITE" and 200 <= response.status_code < 300:
            call.on_stray_2xx(response)  # §13.2.2.4: re-ACK every retransmitted 2xx
            return
        logger.debug("stray %s response to %s from %s:%s", response.status_code, method, *addr)

    def _on_request(self, request: SipRequest, addr: Addr, transport: str) -> None:
        method = request.method.upper()
        via = request.headers.get_first("via") or ""
        source = response_destination(via, addr, transport)  # where our answers go
        rkey = f"{_branch_of(via)}:{method}:{request.call_id}"
        if method != "ACK":
            cached = self._responses.get(rkey)
            if cached is not None:
                self.send_raw(cached[0], Destination(cached[1][0], cached[1][1], cached[2]))
                return
        to = request.to_addr
        to_tag = to.tag if to is not None else None
        call = self._calls.get(request.call_id or "")
        if method == "ACK":
            if call is not None:
                call.on_ack(request)
            return
        if to_tag:
            if call is not None and _in_dialog(call, request, to_tag):
                response = call.on_request(request, source)
            else:
                response = build_response(request, 481)
        elif method == "OPTIONS":
            response = build_response(
                request,
                200,
                to_tag=new_tag(),
                headers={
                    "Allow": ALLOW,
                    "Accept": "application/sdp",
                    "User-Agent": self.user_agent,
                },
            )
        elif method == "INVITE":
            if self.silent_invites:
                logger.info("ignored incoming INVITE from %s:%s (silent_invites)", *addr)
                return
            logger.info("refused incoming INVITE from %s:%s (ringcast only calls out)", *addr)
            response = build_response(request, 403, to_tag=new_tag())
        elif method in ("BYE", "CANCEL"):
            response = build_response(request, 481, to_tag=new_tag())
        else:
            response = build_response(request, 405, to_tag=new_tag(), headers={"Allow": ALLOW})
        self.send_response(request, response, source)

    def send_response(
        self, request: SipRequest, response: SipResponse, source: Destination
    ) -> bytes:
        """Send a response to ``source``, from :func:`response_destination` (§18.2.2).

        The bytes are remembered for 64*T1 so a retransmitted request gets the
        same answer (the server transaction's job, §17.2).
        """
        data = bytes(response)
        self.send_raw(data, source)
        if response.status_code >= 200:
            via = request.headers.get_first("via") or ""
            rkey = f"{_branch_of(via)}:{request.method.upper()}:{request.call_id}"
            self._responses[rkey] = (data, source.addr, source.transport)
            self.loop.call_later(self.timers.b, self._responses.pop, rkey, None)
        return data


def uri_transport(uri: str) -> str | None:
    """A SIP URI's ``;transport=`` parameter, lower case, or None."""
    value = parse_uri(uri).params.get("transport")
    return value.lower() if value else None


def _in_dialog(call: OutboundCall, request: SipRequest, to_tag: str) -> bool:
    """Call-ID (already matched), our tag and the callee's tag all match the dialog (§12.2.2)."""
    dialog = call.dialog
    if dialog is None or call.local_tag != to_tag:
        return False
    frm = request.from_addr
    remote_tag = (frm.tag if frm is not None else None) or ""
    return remote_tag == dialog.remote_tag


def _branch_of(via: str) -> str:
    idx = via.find("branch=")
    if idx == -1:
        return via  # RFC 2543 peer: match on the whole Via
    end = idx + 7
    stop = len(via)
    for sep in (";", ",", " "):
        pos = via.find(sep, end)
        if pos != -1 and pos < stop:
            stop = pos
    return via[end:stop]
