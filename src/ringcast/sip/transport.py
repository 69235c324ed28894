"""asyncio UDP and TCP transports for SIP (RFC 3261 §18): they move bytes only.

A transport knows nothing about SIP beyond TCP stream framing (§18.3: the
header block, then ``Content-Length`` bytes of body). Everything it receives
goes to :meth:`TransportUser.on_packet`; everything that could not be sent is
reported to :meth:`TransportUser.on_transport_error` with the destination, so
the owner can turn it into a synthetic 503 for the transactions bound there.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import re
import socket
import struct
import time
from typing import Protocol

from ringcast.inet import IPV6, bind_families, hostport, ip_version, unmapped, v4_mapped

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

SOCKET_BUFFER = 4 * 1024 * 1024  # bytes asked for SO_SNDBUF/SO_RCVBUF (kernel may cap)
MAX_TCP_MESSAGE = 65535  # bytes: larger framed messages close the connection
TCP_CONNECT_TIMEOUT = 5.0  # seconds
TCP_IDLE_TIMEOUT = 120.0  # seconds without traffic before an unused connection is closed
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)


class TransportUser(Protocol):
    """Who receives what a transport reads (the endpoint)."""

    def on_packet(self, data: bytes, addr: Addr, transport: str) -> None: ...

    def on_transport_error(self, addr: Addr, exc: BaseException, transport: str) -> None: ...

    def connection_in_use(self, addr: Addr) -> bool:
        """Whether a live call still needs the TCP connection to ``addr``."""
        ...


IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux: queue ICMP errors per destination
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)  # the same for ICMPv6
ERRQUEUE_DRAIN = 64  # error-queue entries read per wake-up
# What a send returns for an earlier datagram's ICMP error (not this one's fault)
ICMP_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
)
SEND_TRIES = 4  # sends of one datagram while earlier ICMP errors keep coming back


def family_socket(host: str, kind: socket.SocketKind) -> socket.socket:
    """An unbound socket for listening on ``host``: AF_INET6 for an IPv6 address,
    dual stack (``IPV6_V6ONLY`` off) for ``::``, else AF_INET."""
    families = bind_families(host)
    if IPV6 not in families:
        return socket.socket(socket.AF_INET, kind)
    sock = socket.socket(socket.AF_INET6, kind)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if len(families) > 1 else 1)
    except OSError:
        sock.close()
        raise
    return sock


# ip_version, remembered for the few addresses we send to (it parses the literal
# with ipaddress: several times per call setup otherwise).
cached_ip_version = functools.lru_cache(maxsize=4096)(ip_version)


def reaches(families: tuple[int, ...], host: str) -> bool:
    """Whether a socket reaching ``families`` can send to ``host`` (an IP literal)."""
    return (cached_ip_version(host) or 4) in families


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, int] | object) -> None:
        if isinstance(addr, tuple) and len(addr) >= 2:
            self._owner.user.on_packet(data, (unmapped(str(addr[0])), int(addr[1])), "udp")

    def error_received(self, exc: Exception) -> None:
        self._owner.drain_errors(exc)


class UdpTransport:
    """One UDP socket shared by every call (§18.1.1, §18.2.1)."""

    name = "udp"
    reliable = False

    def __init__(self, user: TransportUser) -> None:
        self.user = user
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self.local_addr: Addr = ("0.0.0.0", 0)
        self.families: tuple[int, ...] = (4,)  # IP versions the socket sends to

    async def start(self, host: str, port: int) -> None:
        """Bind the socket; ICMP errors are queued per destination (IP_RECVERR, §18.4).

        ``::`` is one dual-stack socket for IPv4 and IPv6 peers (IPv4 ones are
        v4-mapped on the wire of the socket API only: see :mod:`ringcast.inet`)."""
        loop = asyncio.get_running_loop()
        sock = family_socket(host, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
            options = [(socket.IPPROTO_IP, IP_RECVERR)]  # also IPv4 peers of a dual-stack socket
            if sock.family == socket.AF_INET6:
                options.append((socket.IPPROTO_IPV6, IPV6_RECVERR))
            for level, option in options:
                try:
                    sock.setsockopt(level, option, 1)
                except OSError:
                    logger.debug(
                        "RECVERR %s not available: ICMP errors fall back to Timer B", level
                    )
            sock.bind((host, port))
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        self._sock = sock
        self.families = bind_families(host)
        name = sock.getsockname()
        self.local_addr = (str(name[0]), int(name[1]))
        logger.info("SIP UDP listening on %s", hostport(*self.local_addr))

    def drain_errors(self, exc: Exception) -> None:
        """Turn queued ICMP errors into transport errors for their destinations (§18.4)."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(ERRQUEUE_DRAIN):
            try:
                _, ancdata, _, addr = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                logger.debug("UDP error queue: %s (after %s)", err, exc)
                return
            code = errno.ECONNREFUSED
            for level, kind, payload in ancdata:
                recverr = (level, kind) in (
                    (socket.IPPROTO_IP, IP_RECVERR),
                    (socket.IPPROTO_IPV6, IPV6_RECVERR),
                )
                if recverr and len(payload) >= 4:
                    code = struct.unpack_from("=I", payload)[0] or code
            if isinstance(addr, tuple) and len(addr) >= 2:
                dest = (unmapped(str(addr[0])), int(addr[1]))
                logger.debug("ICMP error for %s:%s: %s", dest[0], dest[1], os.strerror(code))
                self.user.on_transport_error(dest, OSError(code, os.strerror(code)), "udp")

    def send(self, data: bytes, addr: Addr) -> None:
        """Send one datagram; errors are reported, never raised."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self.user.on_transport_error(addr, ConnectionError("UDP transport closed"), "udp")
            return
        to = addr
        if not reaches(self.families, addr[0]):
            why = f"IPv{ip_version(addr[0])} destination, SIP UDP is bound to {self.local_addr[0]}"
            self.user.on_transport_error(addr, ConnectionError(why), "udp")
            return
        if len(self.families) > 1:
            to = (v4_mapped(addr[0]), addr[1])  # the dual-stack socket sends IPv6 only
        sock = self._sock
        if sock is not None and transport.get_write_buffer_size() == 0:  # type: ignore[attr-defined]
            for _ in range(SEND_TRIES):
                try:
                    sock.sendto(data, to)
                    return
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno not in ICMP_ERRNOS:
                        self.user.on_transport_error(addr, exc, "udp")
                        return
                    # An earlier datagram's ICMP error, whatever its destination, comes
                    # back from this send (IP_RECVERR), and this datagram was not sent:
                    # the error queue says whose it was; then send again.
                    self.drain_errors(exc)
        transport.sendto(data, to)  # its errors reach drain_errors too

    async def close(self) -> None:
        """Close the socket; the port is free again when this returns."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._sock = None
            await asyncio.sleep(0)  # the transport closes its socket on the next loop pass


class _TcpConnection:
    __slots__ = ("addr", "writer", "pending", "connect_task", "last_used", "idle_timer")

    def __init__(self, addr: Addr) -> None:
        self.addr = addr
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[bytes] = []
        self.connect_task: asyncio.Task[None] | None = None
        self.last_used = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None


async def read_framed_message(reader: asyncio.StreamReader) -> bytes | None:
    """Read one SIP message from a stream (§18.3), or None at EOF.

    Leading CRLF keep-alives (RFC 5626 §3.5.1) are skipped.
    """
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as exc:
            raise ValueError("SIP header block too large") from exc
        stripped = head.lstrip(b"\r\n")
        if stripped:
            break
    match = _CONTENT_LENGTH.search(stripped)
    length = int(match.group(1)) if match else 0
    if length > MAX_TCP_MESSAGE:
        raise ValueError(f"Content-Length {length} too large")
    body = await reader.readexactly(length) if length else b""
    return stripped + body


class TcpTransport:
    """SIP over TCP (§18.1.1, §18.2.2): one connection per peer, reused both ways."""

    name = "tcp"
    reliable = True

    def __init__(self, user: TransportUser, *, idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self.user = user
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._conns: dict[Addr, _TcpConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.local_addr: Addr = ("0.0.0.0", 0)
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (for requests the callee opens towards our Contact);
        ``::`` is one dual-stack socket, as for UDP."""
        if len(bind_families(host)) > 1:
            sock = family_socket(host, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.setblocking(False)
                self._server = await asyncio.start_server(
                    self._accepted, sock=sock, limit=MAX_TCP_MESSAGE
                )
            except BaseException:
                sock.close()
                raise
        else:
            self._server = await asyncio.start_server(
                self._accepted, host=host, port=port, limit=MAX_TCP_MESSAGE, reuse_address=True
            )
        name = self._server.sockets[0].getsockname()
        self.local_addr = (str(name[0]), int(name[1]))
        logger.info("SIP TCP listening on %s", hostport(*self.local_addr))

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Addr = (unmapped(str(peer[0])), int(peer[1]))
        conn = _TcpConnection(addr)
        conn.writer = writer
        self._conns[addr] = conn
        self._arm_idle(conn)
        await self._read_loop(conn, reader)

    def send(self, data: bytes, addr: Addr) -> None:
        """Write to the peer's connection, opening one if needed; errors are reported."""
        if self._closing:
            self.user.on_transport_error(addr, ConnectionError("transport closed"), self.name)
            return
        conn = self._conns.get(addr)
        if conn is None:
            conn = _TcpConnection(addr)
            self._conns[addr] = conn
            self._arm_idle(conn)
            conn.pending.append(data)
            conn.connect_task = self._spawn(
                self._connect(conn), name=f"sip-tcp-connect-{addr[0]}:{addr[1]}"
            )
            return
        if conn.writer is None:
            conn.pending.append(data)
            return
        if conn.writer.is_closing():
            self._drop(conn)
            self.send(data, addr)
            return
        conn.last_used = time.monotonic()
        conn.writer.write(data)

    async def _open(self, addr: Addr) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the stream to ``addr`` (TLS overrides this: :mod:`ringcast.sip.tls`)."""
        return await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], limit=MAX_TCP_MESSAGE),
            TCP_CONNECT_TIMEOUT,
        )

    async def _connect(self, conn: _TcpConnection) -> None:
        try:
            reader, writer = await self._open(conn.addr)
        except (OSError, TimeoutError) as exc:
            self._drop(conn)
            logger.info(
                "SIP %s connect to %s:%s failed: %s", self.name, conn.addr[0], conn.addr[1], exc
            )
            self.user.on_transport_error(conn.addr, exc, self.name)
            return
        conn.writer = writer
        for data in conn.pending:
            writer.write(data)
        conn.pending.clear()
        await self._read_loop(conn, reader)

    async def _read_loop(self, conn: _TcpConnection, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await read_framed_message(reader)
                if data is None:
                    break
                conn.last_used = time.monotonic()
                self.user.on_packet(data, conn.addr, self.name)
        except (ValueError, OSError, asyncio.IncompleteReadError) as exc:
            logger.info(
                "SIP %s connection %s:%s closed: %s", self.name, conn.addr[0], conn.addr[1], exc
            )
            self._read_failed(conn.addr, exc)
        finally:
            self._drop(conn)

    def _read_failed(self, addr: Addr, exc: BaseException) -> None:
        """A connection broke while reading (TLS reports its alerts here)."""

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _arm_idle(self, conn: _TcpConnection) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_timer = loop.call_later(self.idle_timeout, self._check_idle, conn)

    def _check_idle(self, conn: _TcpConnection) -> None:
        """Close a connection idle for ``idle_timeout`` that no live call needs."""
        conn.idle_timer = None
        if self._conns.get(conn.addr) is not conn:
            return
        idle = time.monotonic() - conn.last_used
        if idle >= self.idle_timeout and not self.user.connection_in_use(conn.addr):
            logger.debug("closing idle SIP TCP connection to %s:%s", *conn.addr)
            self._drop(conn)
            return
        loop = asyncio.get_running_loop()
        delay = max(self.idle_timeout - idle, self.idle_timeout / 4)
        conn.idle_timer = loop.call_later(delay, self._check_idle, conn)

    def _drop(self, conn: _TcpConnection) -> None:
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]
        if conn.writer is not None and not conn.writer.is_closing():
            conn.writer.close()

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            self._drop(conn)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
