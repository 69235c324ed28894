"""Where our requests go and what address we write: RFC 3263 location, per family.

:class:`Addressing` turns a SIP URI into the servers to try (RFC 3263 §4,
the pure steps in :mod:`ringcast.sip.locate`; an IP literal is its own only
server), remembers the first server of each name for the dialog's later
requests, and picks the local (or public, NAT) address written in Via,
Contact and SDP for a peer of each IP family (RFC 5954 §4). The endpoint
(:class:`~ringcast.sip.endpoint.SipEndpoint`) owns one and delegates to it.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable

from ringcast.inet import IPV4, IPV6, bracket, hostport
from ringcast.sip.locate import MAX_TARGETS, Resolver, Server, Target, target_of, usable_servers
from ringcast.sip.locate import locate as locate_servers
from ringcast.sip.message import Destination
from ringcast.sip.tls import TlsOptions, TlsPeer, TlsTransport
from ringcast.sip.transport import cached_ip_version, reaches

__all__ = ["MAX_TARGETS", "Addressing", "Locator"]

# (host name, the URI's port or None, transport) -> [(IP, port), ...] in the order
# to try them: the DNS step of RFC 3263 §4.1-4.2 (see Addressing.locate).
MAX_LOCAL_HOSTS = 4096  # destination IPs whose local address is remembered

Locator = Callable[[str, int | None, str], Awaitable[list[tuple[str, int]]]]


class Addressing:
    """RFC 3263 location and our local address, for an endpoint bound to ``host``.

    ``families``: the IP versions the endpoint's sockets reach; ``public``: the
    public address of each version (NAT), if any; ``tls``: the TLS transport
    whose peers' certificate checks are set here. ``locator`` replaces the DNS
    lookup (it returns IP literals only); ``dns_server`` is the nameserver asked
    otherwise (the system's by default).
    """

    def __init__(
        self,
        host: str,
        families: tuple[int, ...],
        public: dict[int, str],
        tls: TlsTransport,
        *,
        locator: Locator | None = None,
        dns_server: tuple[str, int] | None = None,
    ) -> None:
        self.host = host
        self.families = families
        self._public = public
        self._tls = tls
        self._local_hosts: dict[str, str] = {}
        self._locator = locator
        records = tuple({IPV4: "A", IPV6: "AAAA"}[v] for v in families)
        self._dns = Resolver(dns_server, families=records)  # RFC 3263: what the sockets reach
        self._random = random.Random()  # SRV weights (RFC 2782)
        self._resolved: dict[Target, Destination] = {}  # first server of each name

    def local_host_for(self, dest: Destination) -> str:
        """The address we write in Via/Contact/SDP for traffic to ``dest``: the
        public IP of its family, else the bound address, else the one the kernel
        would send from (an IPv6 peer gets an IPv6 address, RFC 5954 §4)."""
        known = self._local_hosts.get(dest.host)
        if known is not None:  # four times per call: Via, Contact, From, SDP
            return known
        if len(self._local_hosts) >= MAX_LOCAL_HOSTS:
            self._local_hosts.clear()  # a bound, not a policy: recomputed on the next asks
        version = cached_ip_version(dest.host) or IPV4
        public = self._public.get(version)
        if public is None and len(self._public) == 1 and len(self.families) == 1:
            public = next(iter(self._public.values()))  # a one-family server, as before
        if public is None and self.host not in ("0.0.0.0", "", "::"):
            public = self.host
        if public is not None:
            self._local_hosts[dest.host] = public
            return public
        family = socket.AF_INET6 if version == IPV6 else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((dest.host, dest.port or 9))  # no packet is sent
                local = str(probe.getsockname()[0])
        except OSError:
            local = "::1" if version == IPV6 else "127.0.0.1"
        self._local_hosts[dest.host] = local
        return local

    async def locate(
        self,
        uri: str,
        transport: str | None = None,
        local_port: int = 0,
        *,
        tls: TlsOptions | None = None,
    ) -> list[Destination]:
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
        A TLS server's certificate must name the URI's host (RFC 5922 §7), checked
        as ``tls`` says (default: the system's CAs).
        """
        target = target_of(uri, transport)
        if target.numeric:  # an IP literal is the only server (what locate_servers says)
            servers = [Server(target.host, target.default_port, target.default_transport)]
        elif self._locator is not None:
            name = target.default_transport
            found = await self._locator(target.host, target.port, name)
            servers = usable_servers(Server(ip, port, name) for ip, port in found)
        else:
            servers = await locate_servers(target, self._dns, self._random)
        if not servers:
            raise OSError(f"cannot resolve {target.host}")
        usable = [s for s in servers if reaches(self.families, s.host)]
        if not usable:
            version = cached_ip_version(servers[0].host)
            raise OSError(
                f"{bracket(target.host)} is reached over IPv{version} only, and SIP is bound"
                f" to {hostport(self.host, local_port)} (IPv{self.families[0]} only):"
                " listen on [::] for both"
            )
        servers = usable
        targets = [Destination(*server) for server in servers]
        for dest in targets:
            if dest.transport == "tls":
                self._tls.set_peer(dest.addr, TlsPeer(target.host, tls or TlsOptions()))
        if not target.numeric:
            self._resolved[target] = targets[0]
        return targets

    async def resolve(
        self,
        uri: str,
        transport: str | None = None,
        local_port: int = 0,
        *,
        tls: TlsOptions | None = None,
    ) -> Destination:
        """The first server of :meth:`locate` (cached per host, port and transport).

        A ``maddr`` parameter replaces the host (RFC 3261 §19.1.1); ``transport``
        wins over the URI's ``;transport=`` (then the DNS, then "udp"). Raises
        OSError when the host name cannot be resolved, ValueError for an
        unusable URI.
        """
        known = self.resolve_now(uri, transport, tls=tls)
        if known is not None:
            return known
        return (await self.locate(uri, transport, local_port, tls=tls))[0]

    def resolve_now(
        self, uri: str, transport: str | None = None, *, tls: TlsOptions | None = None
    ) -> Destination | None:
        """Like :meth:`resolve` without waiting: IP literals and cached names, else None.

        A TLS address met here for the first time is checked as ``tls`` says,
        against the URI's host; one already known keeps its settings (and its
        connection: a dialog's Record-Route naming the proxy by its IP)."""
        target = target_of(uri, transport)
        if target.numeric:
            if not reaches(self.families, target.host):
                return None  # locate() says why
            dest = Destination(target.host, target.default_port, target.default_transport)
            if dest.transport == "tls" and not self._tls.knows(dest.addr):
                self._tls.set_peer(dest.addr, TlsPeer(target.host, tls or TlsOptions()))
            return dest
        return self._resolved.get(target)
