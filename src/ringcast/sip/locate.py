"""RFC 3263 §4: the servers to try for a SIP URI, in the order to try them.

Pure steps, without sockets: :func:`target_of` (what to look up: host, port
and transport of a URI, RFC 3261 §19.1.1 ``maddr``), :func:`naptr_services`
(§4.1: NAPTR records -> the SRV names of the transports ringcast speaks, best
first), :func:`srv_order` (§4.2 with RFC 2782: priority, then weighted random)
and :func:`usable_servers` (IP literals only, no repeats, at most
:data:`MAX_TARGETS`).

:class:`Resolver` asks the DNS (dnspython; a configured nameserver or the
system's) and :func:`locate` chains the steps: an IP literal is the only
server; an explicit port means A records only; an explicit transport means SRV
for it, else A; otherwise NAPTR -> SRV -> A, with SRV ``_sip._udp`` then
``_sip._tcp`` when there are no NAPTR records, and A records on port 5060 when
there are no SRV records either. The list feeds the §4.3 failover of a call
(503, a transport error or a timeout -> the next server).

TLS (RFC 3263 §4.1, RFC 5630): a ``sips:`` URI is reached over TLS only
(NAPTR ``SIPS+D2T``, SRV ``_sips._tcp``, else port 5061); ``;transport=tls``
asks for TLS on a ``sip:`` URI; for a plain ``sip:`` URI NAPTR ``SIPS+D2T``
counts in its order and ``_sips._tcp`` is asked after ``_sip._udp`` and
``_sip._tcp``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver
from aiosipua.headers import parse_uri
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from ringcast.sip.message import is_ip_literal

logger = logging.getLogger(__name__)

SIP_PORT = 5060  # RFC 3261 §19.1.2, the port when neither the URI nor SRV names one
SIPS_PORT = 5061  # RFC 3261 §19.1.2, the same for sips: and transport=tls
TRANSPORTS = ("udp", "tcp", "tls")  # spoken, in the order tried when nothing says which
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}  # RFC 3263 §4.1
MAX_TARGETS = 4  # servers one request may try in turn (RFC 3263 §4.3 failover)
MAX_SRV_TARGETS = 8  # SRV targets whose addresses are looked up for one request
DNS_LIFETIME = 3.0  # seconds one DNS query may take, retries included


class DnsTimeout(OSError):
    """The nameserver did not answer in time."""


class Server(NamedTuple):
    """One server to send to: an IP literal, a port and a transport name."""

    host: str
    port: int
    transport: str


@dataclass(frozen=True, slots=True)
class Target:
    """What to look up for a URI (RFC 3263 §4.1): ``port`` and ``transport`` are
    None when the URI leaves them to the DNS."""

    host: str  # a host name (lower case) or an IP literal (no brackets)
    port: int | None
    transport: str | None
    secure: bool = False  # a sips: URI: TLS only (RFC 3261 §26.2.2)

    @property
    def numeric(self) -> bool:
        return is_ip_literal(self.host)

    @property
    def default_transport(self) -> str:
        """The transport when neither the URI nor the DNS names one."""
        return self.transport or ("tls" if self.secure else "udp")

    @property
    def default_port(self) -> int:
        """The port when neither the URI nor SRV names one (§19.1.2)."""
        return self.port or (SIPS_PORT if self.default_transport == "tls" else SIP_PORT)


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record (RFC 3403 §4.1) as RFC 3263 uses it."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def is_localhost(host: str) -> bool:
    """RFC 6761 §6.3: ``localhost`` names are the loopback address, never asked of the DNS."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


@functools.lru_cache(maxsize=4096)  # pure and parsed per call: the same few URIs
@functools.lru_cache(maxsize=1024)  # pure; a trunk, a proxy or a Contact recurs call after call
def target_of(uri: str, transport: str | None = None) -> Target:
    """The host, port and transport to look up for ``uri`` (RFC 3263 §4.1).

    ``maddr`` replaces the host (RFC 3261 §19.1.1); ``transport`` (when given)
    wins over the URI's ``;transport=``. A ``sips:`` URI is TLS (its
    ``transport=tcp`` means TLS over TCP, RFC 5630 §3.2); asking it for UDP
    raises ValueError, as does any transport but udp, tcp and tls.
    """
    parsed = parse_uri(uri)
    secure = parsed.scheme.lower() == "sips"
    host = (parsed.params.get("maddr") or parsed.host or "").strip("[]").lower()
    if not host:
        raise ValueError(f"no host in {uri!r}")
    name = transport or parsed.params.get("transport")
    name = name.lower() if name else None
    if name is not None and name not in TRANSPORTS:
        raise ValueError(f"unsupported transport {name!r}")
    if secure and name == "udp":
        raise ValueError(f"a sips: URI is reached over TLS, not UDP: {uri!r}")
    if secure and name is not None:
        name = "tls"
    port = parsed.port or None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"invalid port {port} in {uri!r}")
    return Target(host, port, name, secure)


def srv_name(transport: str, host: str) -> str:
    """The SRV owner name for SIP over ``transport`` at ``host`` (§4.1, RFC 2782):
    ``_sips._tcp`` for TLS."""
    if transport == "tls":
        return f"_sips._tcp.{host.rstrip('.')}."
    return f"_sip._{transport}.{host.rstrip('.')}."


def naptr_services(records: Iterable[Naptr], *, secure: bool = False) -> list[tuple[str, str]]:
    """(transport, SRV name) of the usable NAPTR records, best first (§4.1).

    Sorted by order, then preference (RFC 3403 §4.1). Usable: flag ``S`` (the
    next lookup is SRV) and a service ringcast speaks (``SIP+D2U``,
    ``SIP+D2T``, ``SIPS+D2T``; only ``SIPS+D2T`` when ``secure``, for a
    ``sips:`` URI); unknown services are discarded.
    """
    ordered = sorted(records, key=lambda r: (r.order, r.preference))
    out: list[tuple[str, str]] = []
    for record in ordered:
        transport = NAPTR_SERVICES.get(record.service.upper())
        if transport is None or record.flags.lower() != "s":
            continue
        if secure and transport != "tls":
            continue
        name = record.replacement.rstrip(".")
        if not name:
            continue
        out.append((transport, f"{name}."))
    return out


def offers_sip(records: Iterable[Naptr]) -> bool:
    """Whether any NAPTR record is for SIP at all (SIP+D2x or SIPS+D2x, §4.1)."""
    return any(r.service.upper().startswith(("SIP+", "SIPS+")) for r in records)


def srv_order(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """The SRV records in the order to try them (RFC 2782, RFC 3263 §4.2).

    Lowest priority first; within one priority, a weighted random order: weight
    0 records first in the list, a running sum of weights, a uniform number
    from 0 to the sum (inclusive), the first record whose running sum reaches
    it; repeat with the rest. A target of ``.`` ("decidedly not available") is
    left out. ``rng`` decides, so a seeded one makes the order reproducible.
    """
    usable = [r for r in records if r.target.rstrip(".")]
    out: list[Srv] = []
    for priority in sorted({r.priority for r in usable}):
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


def usable_servers(found: Iterable[Server], limit: int = MAX_TARGETS) -> list[Server]:
    """``found`` without repeats, names or bad ports, at most ``limit``: no name
    is ever sent to, and a cluster is tried at most ``limit`` times (§4.3)."""
    out: list[Server] = []
    for server in found:
        if not is_ip_literal(server.host) or not 0 < server.port < 65536 or server in out:
            continue
        out.append(server)
        if len(out) >= limit:
            break
    return out


class Resolver:
    """The DNS queries RFC 3263 needs, through dnspython.

    ``nameserver`` (IP, port) is the one server asked (``RINGCAST_DNS_SERVER``);
    without it NAPTR and SRV go to the system's nameservers (``/etc/resolv.conf``)
    and addresses come from ``getaddrinfo``, which also reads ``/etc/hosts``.
    ``families`` are the address records wanted ("A", "AAAA"). Answers are
    cached for their TTL.
    """

    def __init__(
        self,
        nameserver: tuple[str, int] | None = None,
        *,
        families: tuple[str, ...] = ("A",),
        lifetime: float = DNS_LIFETIME,
    ) -> None:
        self.nameserver = nameserver
        self.families = families
        self.lifetime = lifetime
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.nameserver is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                ip, port = self.nameserver
                resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port)]
            else:
                try:
                    resolver = dns.asyncresolver.Resolver()
                except dns.exception.DNSException as exc:
                    raise OSError(f"no DNS resolver configured: {exc}") from None
            resolver.lifetime = self.lifetime
            resolver.cache = dns.resolver.LRUCache()
            self._resolver = resolver
        return self._resolver

    async def _query(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The records of ``rdtype`` at ``name``; [] when there are none.

        A server that answers with an error (SERVFAIL, REFUSED, NOTIMP: some
        middleboxes do for NAPTR) counts as "none", logged, so the next step of
        §4 still runs. Raises OSError when the DNS does not answer in time,
        ValueError for a name that is not one.
        """
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ValueError(f"invalid host name {name!r}: {exc}") from None
        try:
            answer = await self._dns().resolve(qname, rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise DnsTimeout(f"no answer to the DNS {rdtype} query for {name}: {exc}") from None
        except dns.exception.DNSException as exc:
            logger.warning("DNS %s lookup of %s failed: %s", rdtype, name, exc)
            return []
        return list(answer.rrset or [])

    async def naptr(self, host: str) -> list[Naptr]:
        return [
            Naptr(
                r.order,
                r.preference,
                r.flags.decode("ascii", "replace"),
                r.service.decode("ascii", "replace"),
                r.replacement.to_text(),
            )
            for r in await self._query(host, "NAPTR")
            if isinstance(r, NAPTR)
        ]

    async def srv(self, name: str) -> list[Srv]:
        return [
            Srv(r.priority, r.weight, r.port, r.target.to_text())
            for r in await self._query(name, "SRV")
            if isinstance(r, SRV)
        ]

    async def addresses(self, host: str) -> list[str]:
        """The host's IP addresses (A, then AAAA when wanted), in the order given."""
        if self.nameserver is None:
            family = socket.AF_UNSPEC  # both: the endpoint keeps what its sockets reach
            if tuple(self.families) in (("A",), ("AAAA",)):
                family = socket.AF_INET if self.families == ("A",) else socket.AF_INET6
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host.rstrip("."), SIP_PORT, family=family, type=socket.SOCK_DGRAM
                )
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
                    return []
                raise
            return list(dict.fromkeys(str(info[4][0]) for info in infos))
        found: list[str] = []
        for rdtype in self.families:
            found += [r.address for r in await self._query(host, rdtype) if isinstance(r, A | AAAA)]
        return found


async def locate(
    target: Target, resolver: Resolver, rng: random.Random, *, limit: int = MAX_TARGETS
) -> list[Server]:
    """Every server to try for ``target``, in order, at most ``limit`` (RFC 3263 §4).

    §4.1/§4.2 as the module docstring says. Raises OSError when nothing is
    found (the message says what was asked), ValueError for a bad name.
    """
    host = target.host
    if target.numeric:
        return [Server(host, target.default_port, target.default_transport)]
    if is_localhost(host):  # the loopback of a family the sockets reach
        loopback = "127.0.0.1" if "A" in resolver.families else "::1"
        return [Server(loopback, target.default_port, target.default_transport)]
    if target.port is not None:  # §4.2: an explicit port, so no SRV; UDP unless named (§4.1)
        transport = target.default_transport
        servers = [Server(ip, target.port, transport) for ip in await resolver.addresses(host)]
        return _found(usable_servers(servers, limit), f"no address for {host}")
    transport = target.default_transport
    try:
        servers, transport = await _by_srv(target, resolver, rng, limit)
    except DnsTimeout as exc:  # not answering NAPTR/SRV: the addresses may still be had
        logger.warning("%s; trying the addresses of %s", exc, host)
        servers = []
    if servers:
        return servers
    # §4.2: no SRV records: the host's own addresses, port 5060 (5061 for TLS)
    port = SIPS_PORT if transport == "tls" else SIP_PORT
    servers = [Server(ip, port, transport) for ip in await resolver.addresses(host)]
    return _found(usable_servers(servers, limit), f"no address for {host}")


async def _by_srv(
    target: Target, resolver: Resolver, rng: random.Random, limit: int
) -> tuple[list[Server], str]:
    """The servers of the NAPTR (§4.1) and SRV (§4.2) steps, and the transport
    chosen; no servers when the host has no SRV records for SIP (its addresses
    count then). Raises OSError when it has some but none usable."""
    host = target.host
    if target.transport is not None:
        services = [(target.transport, srv_name(target.transport, host))]
    else:
        naptrs = await resolver.naptr(host)
        services = naptr_services(naptrs, secure=target.secure)
        if not services and offers_sip(naptrs):
            if target.secure:
                raise OSError(f"{host} offers no SIP over TLS (NAPTR SIPS+D2T) for a sips: URI")
            raise OSError(f"{host} offers SIP only over transports ringcast does not speak")
        if not services:  # §4.1: no NAPTR records, SRV for each transport spoken
            spoken = ("tls",) if target.secure else TRANSPORTS
            services = [(t, srv_name(t, host)) for t in spoken]
    had_srv = False
    for transport, name in services:
        records = await resolver.srv(name)
        had_srv = had_srv or bool(records)
        ordered = srv_order(records, rng)[:MAX_SRV_TARGETS]
        if not ordered:
            continue
        addresses = await asyncio.gather(*(_addresses_or_none(resolver, r.target) for r in ordered))
        servers = [
            Server(ip, record.port, transport)
            for record, ips in zip(ordered, addresses, strict=True)
            for ip in ips
        ]
        found = usable_servers(servers, limit)
        if found:
            return found, transport
    if had_srv:
        asked = ", ".join(name for _, name in services)
        raise OSError(f"no usable SIP server for {host} in SRV {asked}")
    return [], services[0][0]  # a transport NAPTR chose holds for the addresses too


async def _addresses_or_none(resolver: Resolver, host: str) -> list[str]:
    """One SRV target's addresses; [] (logged) when they cannot be had, so the
    other targets still count."""
    try:
        return await resolver.addresses(host)
    except (OSError, ValueError) as exc:
        logger.warning("SRV target %s left out: %s", host, exc)
        return []


def _found(servers: list[Server], why: str) -> list[Server]:
    if not servers:
        raise OSError(why)
    return servers
