"""The SIP endpoint on IPv6 and dual stack, with real sockets on ::1 and 127.0.0.1.

One dual-stack UDP socket (``::``) sends to either family; the ICMP "port
unreachable" of each family (RFC 3261 §18.4: a transport error) reaches the
transaction of its destination at once, written as that destination was
(plain IPv4, not v4-mapped), instead of waiting for Timer B.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from conftest import free_port

from ringcast.sip import SipEndpoint
from ringcast.sip.call import CallSpec, OutboundCall
from ringcast.sip.sdp import MediaOffer


@pytest.fixture
async def dual() -> AsyncIterator[SipEndpoint]:
    ep = SipEndpoint(host="::", port=0, t1=0.5, t2=4.0)  # Timer B: 32 s
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()


@pytest.mark.parametrize(("host", "written"), [("::1", "[::1]"), ("127.0.0.1", "127.0.0.1")])
async def test_port_unreachable_of_either_family_fails_at_once(
    dual: SipEndpoint, host: str, written: str
) -> None:
    port = free_port()  # nothing listens there: ICMP / ICMPv6 port unreachable
    spec = CallSpec(
        to=f"sip:alice@{written}:{port}", from_="me", media=MediaOffer(host="0.0.0.0", port=40000)
    )
    call = OutboundCall(dual, spec)
    started = time.monotonic()
    assert await asyncio.wait_for(call.setup(), 5) is False
    assert time.monotonic() - started < 2.0  # the ICMP error, not Timer B
    assert call.status_code == 503
    assert call.error is not None
    assert f"cannot reach {written}:{port} over udp: Connection refused" in call.error


async def test_dual_stack_socket_reports_its_families(dual: SipEndpoint) -> None:
    assert dual.families == (4, 6)
    assert dual.resolve_now("sip:a@[::1]:5062") is not None
    assert dual.resolve_now("sip:a@127.0.0.1:5062") is not None
