"""The SSRF guard (:mod:`ringcast.netguard`) for aiohttp: the connector the
webhook deliverer's session connects through.

Apart from netguard so that only what sends webhooks imports aiohttp (the API,
media fetches and the command line do not).
"""

from __future__ import annotations

import functools
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ringcast import netguard
from ringcast.netguard import NetPolicy


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver: resolves through the loop (:func:`netguard.resolve`),
    raises :class:`~ringcast.netguard.AddressRefused` when `policy` refuses any
    address of the host, and returns only the checked addresses, which aiohttp
    then connects to (it does not look the name up again)."""

    def __init__(self, policy: NetPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await netguard.resolve(host, port)
        self.policy.check_addresses(host, addresses, None)
        found: list[ResolveResult] = [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in addresses
        ]
        found = [r for r in found if family in (socket.AF_UNSPEC, r["family"])]
        if not found:
            raise OSError(f"cannot resolve {host}")  # aiohttp: ClientConnectorDNSError
        return found

    async def close(self) -> None:
        pass


def _guarded_socket(policy: NetPolicy, addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp's socket factory: the socket for one address it is about to connect
    to, made once `policy` allowed that address. An IP literal in a URL reaches
    no resolver (aiohttp connects to it as is): this is where it is checked."""
    family, kind, proto, _, sockaddr = addr_info
    ip = netguard.parse_ip(str(sockaddr[0]))
    if ip is None:
        raise OSError(f"not an IP address: {sockaddr[0]}")
    policy.check_addresses(str(ip), [ip], None)
    return socket.socket(family=family, type=kind, proto=proto)


def guarded_connector(policy: NetPolicy, **kwargs: Any) -> aiohttp.TCPConnector:
    """An aiohttp connector (kwargs as `aiohttp.TCPConnector`) that connects only to
    addresses `policy` allows: host names through :class:`GuardedResolver`, asked
    again for every new connection (no DNS cache), and every address checked once
    more as its socket is made; a refused one raises
    :class:`~ringcast.netguard.AddressRefused`."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        use_dns_cache=False,
        socket_factory=functools.partial(_guarded_socket, policy),
        **kwargs,
    )
