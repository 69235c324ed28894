"""RFC 3263 by domain: a real DNS server on 127.0.0.1 (dnslib) answers ringcast's
NAPTR, SRV and A queries; the servers it names are SIPp callees on 127.0.0.1 ports.

Every address in every answer is 127.0.0.1 (ZoneServer refuses others).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import free_port
from dnslib import QTYPE, DNSRecord
from dnsserver import ZoneServer
from sipp import SippUas

from ringcast.domain import Outcome
from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint
from ringcast.sip.endpoint import Destination
from ringcast.sip.locate import Resolver, locate, target_of

T1 = 0.05  # seconds: fast retransmissions (and a 3.2 s Timer B) on loopback
T2 = 0.4
DOMAIN = "carrier.test"


@pytest.fixture
def dns() -> Iterator[ZoneServer]:
    with ZoneServer() as server:
        yield server


@pytest.fixture
async def ep(dns: ZoneServer) -> AsyncIterator[SipEndpoint]:
    """An endpoint whose RFC 3263 lookups go to the test's DNS server only."""
    endpoint = SipEndpoint(host="127.0.0.1", port=0, t1=T1, t2=T2, dns_server=dns.address)
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.close()


def srv(transport: str, *servers: tuple[int, int, int], service: str = "_sip") -> str:
    """SRV lines (priority, weight, port) for DOMAIN, each target its own name
    with an A record 127.0.0.1."""
    lines = []
    for index, (priority, weight, port) in enumerate(servers):
        target = f"{service[1:]}-{transport}{index}.{DOMAIN}."
        lines.append(
            f"{service}._{transport}.{DOMAIN}. 60 IN SRV {priority} {weight} {port} {target}"
        )
        lines.append(f"{target} 60 IN A 127.0.0.1")
    return "\n".join(lines)


def naptr(order: int, pref: int, service: str, replacement: str) -> str:
    return f'{DOMAIN}. 60 IN NAPTR {order} {pref} "s" "{service}" "" {replacement}.{DOMAIN}.'


def methods_received(uas: SippUas) -> list[str]:
    return [m.split(" ", 1)[0] for m in uas.received()]


async def sipp_done(uas: SippUas, within: float = 5.0) -> int:
    return await asyncio.to_thread(uas.wait, within)


@contextlib.contextmanager
def callees(tmp_path: Path, *scenarios: tuple[str, str]) -> Iterator[list[SippUas]]:
    """SIPp callees (scenario, transport u1/t1) for one call each, stopped after."""
    started: list[SippUas] = []
    try:
        for scenario, transport in scenarios:
            keys = {"retry_after": "60"} if scenario == "uas_unavailable.xml" else None
            uas = SippUas(scenario, tmp_path, transport=transport, keys=keys, max_calls=1)
            started.append(uas)
            uas.start()
        yield started
    finally:
        for uas in started:
            uas.stop()


def call_to(ep: SipEndpoint, to: str) -> OutboundCall:
    return OutboundCall(ep, CallSpec(to=to, from_="me", media=MediaOffer("127.0.0.1", 40000)))


# --- which servers, in which order (the DNS steps, no SIP) -------------------------


async def test_naptr_order_picks_the_transport(ep: SipEndpoint, dns: ZoneServer) -> None:
    """§4.1: NAPTR records by order then preference; the first usable one's SRV gives
    the servers (SIPS+D2T, TLS, when it comes first: see the test below)."""
    dns.set(
        "\n".join(
            [
                naptr(30, 10, "SIPS+D2T", "_sips._tcp"),
                naptr(20, 20, "SIP+D2U", "_sip._udp"),
                naptr(20, 10, "SIP+D2T", "_sip._tcp"),
                srv("tcp", (10, 0, 5061), service="_sips"),
                srv("tcp", (10, 0, 5071)),
                srv("udp", (10, 0, 5072)),
            ]
        )
    )
    assert await ep.locate(f"sip:alice@{DOMAIN}") == [Destination("127.0.0.1", 5071, "tcp")]
    assert dns.queries == [
        (f"{DOMAIN}.", "NAPTR"),
        (f"_sip._tcp.{DOMAIN}.", "SRV"),
        (f"sip-tcp0.{DOMAIN}.", "A"),
    ]


async def test_naptr_sips_first_means_tls(ep: SipEndpoint, dns: ZoneServer) -> None:
    """§4.1: SIPS+D2T first in order: TLS to the `_sips._tcp` SRV target, also for
    a sip: URI (ringcast speaks TLS)."""
    dns.set(
        "\n".join(
            [
                naptr(10, 10, "SIPS+D2T", "_sips._tcp"),
                naptr(20, 10, "SIP+D2U", "_sip._udp"),
                srv("tcp", (10, 0, 5061), service="_sips"),
                srv("udp", (10, 0, 5072)),
            ]
        )
    )
    assert await ep.locate(f"sip:alice@{DOMAIN}") == [Destination("127.0.0.1", 5061, "tls")]
    assert dns.queries == [
        (f"{DOMAIN}.", "NAPTR"),
        (f"_sips._tcp.{DOMAIN}.", "SRV"),
        (f"sips-tcp0.{DOMAIN}.", "A"),
    ]


async def test_sips_uri_asks_for_tls_only(ep: SipEndpoint, dns: ZoneServer) -> None:
    """RFC 3263 §4.1 / RFC 5630: a sips: URI without NAPTR records asks `_sips._tcp`
    only (never `_sip._udp`), then the host's address on port 5061."""
    dns.set(f"{DOMAIN}. 60 IN A 127.0.0.1\n" + srv("udp", (10, 0, 5072)))
    assert await ep.locate(f"sips:alice@{DOMAIN}") == [Destination("127.0.0.1", 5061, "tls")]
    assert dns.queries == [
        (f"{DOMAIN}.", "NAPTR"),
        (f"_sips._tcp.{DOMAIN}.", "SRV"),
        (f"{DOMAIN}.", "A"),
    ]


async def test_srv_priorities_in_order_with_every_target(ep: SipEndpoint, dns: ZoneServer) -> None:
    """No NAPTR: SRV `_sip._udp` (§4.1); priority 10 before 20 before 30 (§4.2,
    RFC 2782), at most 4 servers; `_sips._tcp` is never asked."""
    dns.set(
        srv("udp", (30, 0, 5073), (10, 0, 5070), (20, 0, 5072), (40, 0, 5074), (50, 0, 5075))
        + "\n"
        + srv("tcp", (1, 0, 5061), service="_sips")
    )
    servers = await ep.locate(f"sip:alice@{DOMAIN}")
    assert [(d.port, d.transport) for d in servers] == [
        (5070, "udp"),
        (5072, "udp"),
        (5073, "udp"),
        (5074, "udp"),
    ]
    assert (f"{DOMAIN}.", "NAPTR") == dns.queries[0]
    assert (f"_sip._udp.{DOMAIN}.", "SRV") == dns.queries[1]
    assert all(not name.startswith("_sips.") for name, _ in dns.queries)


async def test_srv_weights_spread_the_first_server(ep: SipEndpoint, dns: ZoneServer) -> None:
    """RFC 2782: equal priority, weights 90 and 10: the heavy server comes first in
    most lookups, the light one in some (each lookup draws anew)."""
    dns.set(srv("udp", (10, 90, 5070), (10, 10, 5071)))
    firsts = [(await ep.locate(f"sip:alice@{DOMAIN}"))[0].port for _ in range(200)]
    assert firsts.count(5070) > firsts.count(5071) > 0


async def test_only_tcp_srv_means_tcp(ep: SipEndpoint, dns: ZoneServer) -> None:
    dns.set(srv("tcp", (10, 0, 5071)))
    assert await ep.locate(f"sip:alice@{DOMAIN}") == [Destination("127.0.0.1", 5071, "tcp")]
    assert [q for _, q in dns.queries] == ["NAPTR", "SRV", "SRV", "A"]


async def test_no_naptr_no_srv_is_the_a_record_on_5060(ep: SipEndpoint, dns: ZoneServer) -> None:
    """§4.2: without SRV records, the domain's own address at port 5060 over UDP."""
    dns.set(f"{DOMAIN}. 60 IN A 127.0.0.1")
    assert await ep.locate(f"sip:alice@{DOMAIN}") == [Destination("127.0.0.1", 5060, "udp")]
    assert dns.queries == [
        (f"{DOMAIN}.", "NAPTR"),
        (f"_sip._udp.{DOMAIN}.", "SRV"),
        (f"_sip._tcp.{DOMAIN}.", "SRV"),
        (f"_sips._tcp.{DOMAIN}.", "SRV"),  # §4.1: each transport spoken, TLS included
        (f"{DOMAIN}.", "A"),
    ]


async def test_naptr_transport_holds_without_its_srv(ep: SipEndpoint, dns: ZoneServer) -> None:
    """NAPTR says TCP but its SRV records are missing: the A record on 5060, over TCP."""
    dns.set(naptr(10, 10, "SIP+D2T", "_sip._tcp") + f"\n{DOMAIN}. 60 IN A 127.0.0.1")
    assert await ep.locate(f"sip:alice@{DOMAIN}") == [Destination("127.0.0.1", 5060, "tcp")]


async def test_explicit_port_asks_for_addresses_only(ep: SipEndpoint, dns: ZoneServer) -> None:
    """§4.2: a port in the URI means no NAPTR and no SRV, whatever the DNS holds."""
    dns.set(f"{DOMAIN}. 60 IN A 127.0.0.1\n" + srv("udp", (10, 0, 5070)))
    assert await ep.locate(f"sip:alice@{DOMAIN}:5090;transport=tcp") == [
        Destination("127.0.0.1", 5090, "tcp")
    ]
    assert dns.queries == [(f"{DOMAIN}.", "A")]


async def test_explicit_transport_asks_its_srv_only(ep: SipEndpoint, dns: ZoneServer) -> None:
    """§4.2: a transport but no port: SRV for that transport, no NAPTR; without
    one, the A record on 5060 over that transport."""
    dns.set(f"{DOMAIN}. 60 IN A 127.0.0.1\n" + srv("tcp", (10, 0, 5071)))
    assert await ep.locate(f"sip:alice@{DOMAIN};transport=tcp") == [
        Destination("127.0.0.1", 5071, "tcp")
    ]
    assert dns.queries == [(f"_sip._tcp.{DOMAIN}.", "SRV"), (f"sip-tcp0.{DOMAIN}.", "A")]
    assert await ep.locate(f"sip:alice@{DOMAIN}", "udp") == [Destination("127.0.0.1", 5060, "udp")]


@pytest.mark.parametrize(
    ("zone", "uri", "error"),
    [
        ("", f"sip:alice@{DOMAIN}", f"no address for {DOMAIN}"),
        (
            naptr(10, 10, "SIP+D2U", "_sip._udp") + "\n" + srv("udp", (1, 0, 5060)),
            f"sips:alice@{DOMAIN}",
            "offers no SIP over TLS",
        ),
        (  # RFC 2782: target "." means the service is not there; no A fallback
            f"_sip._udp.{DOMAIN}. 60 IN SRV 0 0 0 .\n{DOMAIN}. 60 IN A 127.0.0.1",
            f"sip:alice@{DOMAIN};transport=udp",
            "no usable SIP server",
        ),
        (  # SRV targets without addresses
            f"_sip._udp.{DOMAIN}. 60 IN SRV 0 0 5070 gone.{DOMAIN}.",
            f"sip:alice@{DOMAIN}",
            "no usable SIP server",
        ),
    ],
)
async def test_nothing_to_call_is_an_error(
    ep: SipEndpoint, dns: ZoneServer, zone: str, uri: str, error: str
) -> None:
    dns.set(zone)
    with pytest.raises(OSError, match=error):
        await ep.locate(uri)


async def test_sips_uri_over_udp_is_refused_before_any_query(
    ep: SipEndpoint, dns: ZoneServer
) -> None:
    with pytest.raises(ValueError, match="reached over TLS, not UDP"):
        await ep.locate(f"sips:alice@{DOMAIN}", "udp")
    assert dns.queries == []


async def test_aaaa_records_when_asked(dns: ZoneServer) -> None:
    """The resolver reads AAAA records too (the endpoint asks A only while its
    sockets are IPv4)."""
    dns.set(f"{DOMAIN}. 60 IN A 127.0.0.1\n{DOMAIN}. 60 IN AAAA ::1")
    both = Resolver(dns.address, families=("AAAA", "A"))
    assert await both.addresses(DOMAIN) == ["::1", "127.0.0.1"]
    assert await Resolver(dns.address).addresses(DOMAIN) == ["127.0.0.1"]


async def test_a_silent_dns_server_fails_the_lookup() -> None:
    """A nameserver that never answers: OSError naming the query, within the
    lifetime. Unanswered NAPTR/SRV queries skip to the addresses (which a system
    resolver may still have, e.g. from /etc/hosts), so the error names the A query."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        resolver = Resolver(hole.getsockname(), lifetime=0.3)
        with pytest.raises(OSError, match="no answer to the DNS NAPTR query"):
            await resolver.naptr(DOMAIN)
        with pytest.raises(OSError, match=f"no answer to the DNS A query for {DOMAIN}"):
            await locate(target_of(f"sip:alice@{DOMAIN}"), resolver, random.Random(1))
        queries = []
        while True:
            try:
                queries.append(DNSRecord.parse(hole.recv(512, socket.MSG_DONTWAIT)).q)
            except BlockingIOError:
                break
        asked = {(str(q.qname), QTYPE[q.qtype]) for q in queries}
        assert asked == {(f"{DOMAIN}.", "NAPTR"), (f"{DOMAIN}.", "A")}


# --- calls: SIPp behind the records, §4.3 failover ---------------------------------


@pytest.mark.sipp
async def test_call_by_naptr_goes_over_tcp(
    sipp_bin: str, ep: SipEndpoint, dns: ZoneServer, tmp_path: Path
) -> None:
    """NAPTR prefers SIP+D2T: the INVITE goes over TCP to the SRV target, with a
    TCP Via and Contact; the UDP server of the lower NAPTR gets nothing."""
    with callees(tmp_path, ("uas_answer.xml", "t1"), ("uas_answer.xml", "u1")) as (tcp, udp):
        dns.set(
            "\n".join(
                [
                    naptr(10, 10, "SIP+D2T", "_sip._tcp"),
                    naptr(20, 10, "SIP+D2U", "_sip._udp"),
                    srv("tcp", (10, 0, tcp.port)),
                    srv("udp", (10, 0, udp.port)),
                ]
            )
        )
        call = call_to(ep, f"sip:alice@{DOMAIN}")
        assert await call.setup() is True, call.error
        await call.hangup()
        assert await sipp_done(tcp) == 0, tcp.errors()
        invite = tcp.received()[0]
        assert invite.startswith(f"INVITE sip:alice@{DOMAIN} SIP/2.0")
        assert "SIP/2.0/TCP" in invite and ";transport=tcp>" in invite
        assert methods_received(tcp) == ["INVITE", "ACK", "BYE"]
        assert udp.received() == []


@pytest.mark.sipp
async def test_503_fails_over_to_the_next_srv_target(
    sipp_bin: str, ep: SipEndpoint, dns: ZoneServer, tmp_path: Path
) -> None:
    """§4.3: the priority-10 server answers 503; the same INVITE goes to the
    priority-20 one, which answers; the priority-30 one is never asked."""
    with callees(
        tmp_path,
        ("uas_unavailable.xml", "u1"),
        ("uas_answer.xml", "u1"),
        ("uas_answer.xml", "u1"),
    ) as (busy, good, spare):
        dns.set(srv("udp", (30, 0, spare.port), (10, 0, busy.port), (20, 0, good.port)))
        call = call_to(ep, f"sip:alice@{DOMAIN}")
        assert await call.setup() is True, call.error
        assert call.status_code == 200 and call.error is None
        await call.hangup()
        assert await sipp_done(busy) == 0, busy.errors()
        assert await sipp_done(good) == 0, good.errors()
        assert methods_received(busy) == ["INVITE", "ACK"]
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        assert "CSeq: 1 INVITE" in good.received()[0]
        assert spare.received() == []
        assert call.retry_after == 60


@pytest.mark.sipp
async def test_tcp_target_without_listener_fails_over(
    sipp_bin: str, ep: SipEndpoint, dns: ZoneServer, tmp_path: Path
) -> None:
    """`;transport=tcp` in the recipient: SRV `_sip._tcp` only (§4.2). The first
    target's port has no listener (connection refused): the next one answers."""
    closed = free_port(socket.SOCK_STREAM)
    with callees(tmp_path, ("uas_answer.xml", "t1")) as (good,):
        dns.set(srv("tcp", (10, 0, closed), (20, 0, good.port)))
        call = call_to(ep, f"sip:alice@{DOMAIN};transport=tcp")
        assert await asyncio.wait_for(call.setup(), 15) is True, call.error
        await call.hangup()
        assert await sipp_done(good) == 0, good.errors()
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        assert "SIP/2.0/TCP" in good.received()[0]
        assert (f"{DOMAIN}.", "NAPTR") not in dns.queries


@pytest.mark.sipp
async def test_silent_target_times_out_and_fails_over(
    sipp_bin: str, ep: SipEndpoint, dns: ZoneServer, tmp_path: Path
) -> None:
    """§4.3: the first server never answers (Timer B, 64*T1); the INVITE then goes
    to the next one, which answers."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole,
        callees(tmp_path, ("uas_answer.xml", "u1")) as (good,),
    ):
        hole.bind(("127.0.0.1", 0))
        hole.setblocking(False)
        dns.set(srv("udp", (10, 0, hole.getsockname()[1]), (20, 0, good.port)))
        call = call_to(ep, f"sip:alice@{DOMAIN}")
        assert await asyncio.wait_for(call.setup(), 20) is True, call.error
        await call.hangup()
        assert await sipp_done(good) == 0, good.errors()
        assert methods_received(good) == ["INVITE", "ACK", "BYE"]
        assert hole.recv(65535).startswith(b"INVITE sip:alice@carrier.test SIP/2.0")


@pytest.mark.sipp
async def test_every_srv_target_503_names_each(
    sipp_bin: str, ep: SipEndpoint, dns: ZoneServer, tmp_path: Path
) -> None:
    with callees(tmp_path, ("uas_unavailable.xml", "u1"), ("uas_unavailable.xml", "u1")) as (
        first,
        second,
    ):
        dns.set(srv("udp", (10, 0, first.port), (20, 0, second.port)))
        call = call_to(ep, f"sip:alice@{DOMAIN}")
        assert await call.setup() is False
        assert (call.status_code, call.outcome) == (503, Outcome.FAILED)
        assert call.error is not None and call.error.startswith(
            f"servers unavailable: 127.0.0.1:{first.port} 503 Service Unavailable; "
            f"127.0.0.1:{second.port} 503 Service Unavailable"
        )


@pytest.mark.sipp
async def test_recipient_transport_tcp_is_honoured(
    sipp_bin: str, ep: SipEndpoint, tmp_path: Path
) -> None:
    """RFC 3263 §4.1: `;transport=tcp` in the recipient's URI: the first INVITE goes
    over TCP (Via and Contact say so), to an IP literal with no DNS at all."""
    with callees(tmp_path, ("uas_answer.xml", "t1")) as (uas,):
        call = call_to(ep, f"sip:alice@127.0.0.1:{uas.port};transport=tcp")
        assert await call.setup() is True, call.error
        await call.hangup()
        assert await sipp_done(uas) == 0, uas.errors()
        invite = uas.received()[0]
        assert invite.startswith(f"INVITE sip:alice@127.0.0.1:{uas.port};transport=tcp SIP/2.0")
        assert "SIP/2.0/TCP" in invite and ";transport=tcp>" in invite
        assert methods_received(uas) == ["INVITE", "ACK", "BYE"]


@pytest.mark.parametrize(
    ("to", "error"),
    [
        ("sips:alice@127.0.0.1:5999;transport=udp", "reached over TLS, not UDP"),
        ("sip:alice@127.0.0.1:5999;transport=sctp", "unsupported transport 'sctp'"),
    ],
)
async def test_recipient_transport_ringcast_cannot_speak_fails(
    ep: SipEndpoint, to: str, error: str
) -> None:
    """Refused before anything is sent (RFC 3261 §26.2.2 forbids sending a sips:
    request over anything but TLS)."""
    call = call_to(ep, to)
    assert await call.setup() is False
    assert call.outcome is Outcome.FAILED and call.error is not None
    assert error in call.error
