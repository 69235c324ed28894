"""The servers a SIP URI resolves to, in order (RFC 3263 §4), through a locator."""

from __future__ import annotations

import pytest

from ringcast.sip.endpoint import Destination, SipEndpoint
from ringcast.sip.locate import MAX_TARGETS


def endpoint(found: list[tuple[str, int]], seen: list[tuple[str, int | None, str]]) -> SipEndpoint:
    async def locator(host: str, port: int | None, transport: str) -> list[tuple[str, int]]:
        seen.append((host, port, transport))
        return found

    return SipEndpoint(host="127.0.0.1", port=0, locator=locator)


async def test_servers_in_order_without_duplicates_or_names() -> None:
    seen: list[tuple[str, int | None, str]] = []
    ep = endpoint(
        [("127.0.0.1", 5070), ("127.0.0.1", 5070), ("gw.example", 5071), ("127.0.0.1", 0)]
        + [("127.0.0.1", 5080 + i) for i in range(10)],
        seen,
    )
    servers = await ep.locate("sip:alice@localhost;transport=tcp")
    assert seen == [("localhost", None, "tcp")]  # no port in the URI: the locator picks
    assert len(servers) == MAX_TARGETS
    assert servers[:2] == [
        Destination("127.0.0.1", 5070, "tcp"),
        Destination("127.0.0.1", 5080, "tcp"),
    ]
    # the first one is what resolve() and resolve_now() give from then on
    assert ep.resolve_now("sip:bob@localhost", "tcp") == servers[0]
    assert await ep.resolve("sip:bob@localhost", "tcp") == servers[0]
    assert len(seen) == 1


async def test_ip_literal_is_the_only_server_and_nothing_found_is_an_error() -> None:
    seen: list[tuple[str, int | None, str]] = []
    ep = endpoint([], seen)
    assert await ep.locate("sip:alice@127.0.0.1:5090") == [Destination("127.0.0.1", 5090)]
    assert seen == []
    with pytest.raises(OSError, match="cannot resolve localhost"):
        await ep.locate("sip:alice@localhost:5090")
    assert seen == [("localhost", 5090, "udp")]
