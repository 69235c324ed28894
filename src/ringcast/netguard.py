"""SSRF guard: refuse URLs whose host resolves to loopback, private, link-local,
multicast or otherwise non-public addresses, unless configuration allows them.

Two places use it:

- the API, when a request names a media (`play`) or `callback_url` URL:
  :meth:`NetPolicy.check_url` resolves the host and raises
  :class:`AddressRefused` (HTTP 422) for a refused address. A host that does
  not resolve is let through: the fetch fails later with a clear error;
- every outgoing HTTP request: it resolves each host itself, checks every
  address, and connects to a checked address, for every new connection (so a
  DNS answer that changed to a private address fails the request: DNS
  rebinding cannot slip between check and connect). Media fetches use
  :func:`guarded_transport`, an httpx transport (run for the first URL and for
  every redirect hop); webhook deliveries use
  :func:`ringcast.netguard_aiohttp.guarded_connector`, an aiohttp connector
  (they follow no redirects).

Allowed anyway: everything when `allow_private` (``--allow-private-urls``,
``RINGCAST_ALLOW_PRIVATE_URLS=1``), and addresses inside the CIDRs of
`allow_networks` (``private_url_allowlist`` in the config file).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ringcast.errors import ValidationFailed

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT = 5.0  # seconds for one DNS resolution
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(ValidationFailed):
    """The URL's host resolves to an address that is not allowed (SSRF guard)."""


def classify(ip: IPAddress) -> str | None:
    """Why `ip` is refused ("loopback", "private", ...), or None for a public address.

    IPv4-mapped, 6to4 and NAT64 IPv6 addresses are judged by the IPv4 address inside.
    """
    inner = embedded_ipv4(ip)
    if inner is not None:
        return classify(inner)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, else None."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    inner = ip.ipv4_mapped or ip.sixtofour
    if inner is None and ip in _NAT64:
        inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return inner


def parse_ip(text: str) -> IPAddress | None:
    """The IP address `text` spells (brackets and an IPv6 zone left out), or None."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    """Every address `host` resolves to (the literal itself for an IP); [] when it does not."""
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    out: list[IPAddress] = []
    for info in infos:
        ip = parse_ip(str(info[4][0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out


@dataclass(frozen=True, slots=True)
class NetPolicy:
    """Which addresses outgoing HTTP may reach."""

    allow_private: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> NetPolicy:
        """From a Settings (`allow_private_urls`, `private_url_allowlist`)."""
        return cls.build(
            allow_private=bool(getattr(settings, "allow_private_urls", False)),
            allow_networks=getattr(settings, "private_url_allowlist", ()),
        )

    @classmethod
    def build(cls, *, allow_private: bool = False, allow_networks: Iterable[str] = ()) -> NetPolicy:
        return cls(
            allow_private, tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """Why this address is refused under this policy, or None when it is allowed."""
        if self.allow_private:
            return None
        reason = classify(ip)
        if reason is None:
            return None
        judged = embedded_ipv4(ip) or ip  # what classify judged, so what the allowlist frees
        if any(
            a.version == net.version and a in net
            for net in self.allow_networks
            for a in {ip, judged}
        ):
            return None
        return reason

    def check_addresses(self, host: str, addresses: Sequence[IPAddress], field: str | None) -> None:
        for ip in addresses:
            reason = self.refusal(ip)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to {ip}, a {reason} address: refused "
                    "(server option --allow-private-urls or private_url_allowlist)",
                    field=field,
                )

    async def check_url(self, url: str, *, field: str | None = None) -> None:
        """AddressRefused when the URL's host is, or resolves to, a refused address.

        A host that does not resolve passes (the fetch itself will fail). The
        hostname `localhost` (and `*.localhost`) is refused without asking DNS.
        """
        if self.allow_private:
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        name = host.lower().rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            addresses: list[IPAddress] = [ipaddress.ip_address("127.0.0.1")]
        else:
            try:
                port = parts.port
            except ValueError:
                port = None
            addresses = await resolve(host, port)
        self.check_addresses(host, addresses, field)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host, checks every address, connects to a checked one."""

    def __init__(self, policy: NetPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self.policy = policy
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        self.policy.check_addresses(host, addresses, None)
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(policy: NetPolicy, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """An httpx transport (kwargs as `httpx.AsyncHTTPTransport`) that connects only to
    addresses `policy` allows; a refused one raises :class:`AddressRefused`."""
    transport = httpx.AsyncHTTPTransport(**kwargs)
    if not policy.allow_private:
        pool = transport._pool
        pool._network_backend = _GuardedBackend(policy, pool._network_backend)
    return transport


async def check_request_url(policy: NetPolicy, request: httpx.Request) -> None:
    """An httpx `request` event hook: check the URL of every request, redirects included."""
    await policy.check_url(str(request.url))
