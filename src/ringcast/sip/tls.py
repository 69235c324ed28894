"""SIP over TLS (RFC 3261 §26.2, RFC 5630): client contexts, verification, the transport.

:class:`TlsOptions` is what a trunk or request says about TLS: the CA file
(else the system's store), an optional client certificate for mutual TLS, and
whether the server's certificate is verified at all (only an explicit setting
turns that off). :func:`client_context` builds one :class:`ssl.SSLContext` per
set of options; the server's certificate is checked against the name of the
URI's host (RFC 5922 §7: the domain of the URI, not the SRV target), which is
also sent as SNI. :class:`TlsTransport` is :class:`TcpTransport` with the
connection opened through that context: one connection per destination,
reused both ways for the whole dialog (requests from the far end come back on
it). A failed handshake is a transport error naming the reason
(:func:`handshake_reason`), so the call fails over to the next server
(RFC 3263 §4.3) or fails with that text. Key file contents never appear in a
message or log: only the paths, and OpenSSL's reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from dataclasses import dataclass

from ringcast.sip.transport import (
    MAX_TCP_MESSAGE,
    TCP_CONNECT_TIMEOUT,
    TCP_IDLE_TIMEOUT,
    Addr,
    TcpTransport,
    TransportUser,
    _TcpConnection,
)

logger = logging.getLogger(__name__)

SIPS_PORT = 5061  # RFC 3261 §19.1.2: the default port of sips: and transport=tls
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds for the TLS handshake, after the TCP connect
MAX_TLS_PEERS = 4096  # destinations whose TLS options (SNI name, CA) are remembered


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How to check a TLS server, and which certificate to show it (paths only).

    ``ca_file``: PEM file of the CAs trusted for this server (None: the system
    store). ``cert_file``/``key_file``: our client certificate and its private
    key for mutual TLS (the key may sit in ``cert_file``). ``verify=False``
    skips the server's certificate and name check: only when configured so.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


DEFAULT_TLS = TlsOptions()


@dataclass(frozen=True, slots=True)
class TlsPeer:
    """The name a destination's certificate must carry (and SNI), and the options."""

    server_name: str
    options: TlsOptions = DEFAULT_TLS


class TlsSetupError(ValueError):
    """A CA file, certificate or key cannot be loaded (the message names the file)."""


@functools.lru_cache(maxsize=64)
def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The client context for ``options`` (built once per distinct options).

    TLS 1.2 at least; the system's CA store unless ``ca_file``; host name
    check on (Python's ``check_hostname``, IP SANs for IP literals) unless
    ``verify`` is off. Raises :class:`TlsSetupError` naming the file that
    cannot be loaded.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load ca_file {options.ca_file}: {_reason(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not options.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.cert_file:
        try:
            ctx.load_cert_chain(options.cert_file, options.key_file)
        except (OSError, ssl.SSLError) as exc:
            where = f"cert_file {options.cert_file}"
            if options.key_file:
                where += f" / key_file {options.key_file}"
            raise TlsSetupError(f"cannot load {where}: {_reason(exc)}") from None
    elif options.key_file:
        raise TlsSetupError("key_file is set without cert_file")
    return ctx


def check_options(options: TlsOptions) -> None:
    """Load ``options`` once (start-up check): :class:`TlsSetupError` when they cannot be."""
    client_context(options)


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason or the OS error text, never file contents."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or type(exc).__name__).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def handshake_reason(exc: BaseException) -> str:
    """Why a TLS connection could not be set up, for the call's ``error``.

    A certificate the context rejected: ``certificate verify failed: <what
    OpenSSL says>`` (``certificate has expired``, ``unable to get local issuer
    certificate``, ``Hostname mismatch, certificate is not valid for ...``).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or _reason(exc)
        return f"certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        return _reason(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionAbortedError):
        return str(exc) or "aborted"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class TlsHandshakeError(ConnectionError):
    """The TLS handshake with a server failed (a transport error, RFC 3263 §4.3)."""


class TlsTransport(TcpTransport):
    """SIP over TLS over TCP, client side (RFC 3261 §26.2.1, RFC 5630).

    Connections are opened on demand, one per destination address, and kept
    while a call needs them (:class:`TcpTransport` rules); responses and the
    far end's in-dialog requests arrive on them. :meth:`set_peer` says, per
    address, which name the certificate must carry and which options apply;
    an address never set is checked against its IP with the default options.
    ``handshake_failures`` counts failed handshakes (metrics).
    """

    name = "tls"

    def __init__(self, user: TransportUser, *, idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        super().__init__(user, idle_timeout=idle_timeout)
        self._peers: dict[Addr, TlsPeer] = {}
        self.handshake_failures = 0

    def set_peer(self, addr: Addr, peer: TlsPeer) -> None:
        """Remember the name and options to use when connecting to ``addr``.

        A live connection made under other options (another trunk's CA, another
        name, verification off) is not reused for what comes next: it is retired
        (it still delivers what arrives on it, and closes after the idle
        timeout), and the next request opens a connection checked as ``peer``
        says. So a trunk never rides on a connection it would not have accepted.
        """
        old = self._peers.get(addr)
        if old is None and len(self._peers) >= MAX_TLS_PEERS:
            self._peers.pop(next(iter(self._peers)))
        self._peers[addr] = peer
        conn = self._conns.get(addr)
        if old is not None and old != peer and conn is not None:
            logger.info(
                "SIP TLS connection to %s:%s retired: asked for with other TLS settings", *addr
            )
            del self._conns[addr]
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
            loop = asyncio.get_running_loop()
            conn.idle_timer = loop.call_later(self.idle_timeout, self._close_retired, conn)

    def _close_retired(self, conn: _TcpConnection) -> None:
        conn.idle_timer = None
        if conn.writer is not None and not conn.writer.is_closing():
            conn.writer.close()

    def knows(self, addr: Addr) -> bool:
        return addr in self._peers

    def peer(self, addr: Addr) -> TlsPeer:
        return self._peers.get(addr) or TlsPeer(addr[0])

    async def _open(self, addr: Addr) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        peer = self.peer(addr)
        try:
            ctx = client_context(peer.options)
        except TlsSetupError as exc:
            self.handshake_failures += 1
            raise TlsHandshakeError(f"TLS to {peer.server_name} not set up: {exc}") from None
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(
                    addr[0],
                    addr[1],
                    limit=MAX_TCP_MESSAGE,
                    ssl=ctx,
                    server_hostname=peer.server_name,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                ),
                TCP_CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT,
            )
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            if isinstance(exc, ConnectionRefusedError):
                raise  # nobody listens: a plain transport error, as over TCP
            self.handshake_failures += 1
            why = handshake_reason(exc)
            logger.warning(
                "SIP TLS handshake with %s (%s:%s) failed: %s", peer.server_name, *addr, why
            )
            raise TlsHandshakeError(f"TLS handshake failed: {why}") from None

    def _read_failed(self, addr: Addr, exc: BaseException) -> None:
        """A TLS alert after the handshake (TLS 1.3 refuses a missing client
        certificate so): the transactions bound there fail now, naming it."""
        if not isinstance(exc, ssl.SSLError):
            return
        self.handshake_failures += 1
        why = handshake_reason(exc)
        logger.warning("SIP TLS connection to %s:%s failed: %s", addr[0], addr[1], why)
        self.user.on_transport_error(addr, TlsHandshakeError(f"TLS failed: {why}"), self.name)
