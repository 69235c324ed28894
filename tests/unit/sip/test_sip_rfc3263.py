"""RFC 3263's pure steps without a socket: the target of a URI, NAPTR choice,
SRV order (RFC 2782 priority and weighted random with a seeded random), and
the servers kept."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ringcast.sip.locate import (
    MAX_TARGETS,
    Naptr,
    Server,
    Srv,
    Target,
    is_localhost,
    naptr_services,
    offers_sip,
    srv_name,
    srv_order,
    target_of,
    usable_servers,
)


@pytest.mark.parametrize(
    ("uri", "transport", "expected"),
    [
        ("sip:alice@127.0.0.1", None, Target("127.0.0.1", None, None)),
        ("sip:alice@[::1]:5070", None, Target("::1", 5070, None)),
        ("sip:alice@Carrier.Example", None, Target("carrier.example", None, None)),
        ("sip:alice@carrier.example:5080", None, Target("carrier.example", 5080, None)),
        ("sip:alice@carrier.example;transport=TCP", None, Target("carrier.example", None, "tcp")),
        ("sip:alice@carrier.example;transport=tcp", "udp", Target("carrier.example", None, "udp")),
        ("sip:carrier.example;maddr=127.0.0.2;lr", None, Target("127.0.0.2", None, None)),
        # RFC 5630: sips: is TLS; its transport=tcp means TLS over TCP
        ("sips:alice@carrier.example", None, Target("carrier.example", None, None, True)),
        ("sips:alice@c.example;transport=tcp", None, Target("c.example", None, "tls", True)),
        ("sip:alice@carrier.example;transport=TLS", None, Target("carrier.example", None, "tls")),
        ("sip:alice@127.0.0.1", "tls", Target("127.0.0.1", None, "tls")),
    ],
)
def test_target_of_a_uri(uri: str, transport: str | None, expected: Target) -> None:
    assert target_of(uri, transport) == expected


def test_tls_targets_default_to_port_5061() -> None:
    """RFC 3261 §19.1.2: 5061 for sips: and transport=tls, 5060 otherwise."""
    assert target_of("sips:a@127.0.0.1").default_port == 5061
    assert target_of("sips:a@127.0.0.1").default_transport == "tls"
    assert target_of("sip:a@127.0.0.1;transport=tls").default_port == 5061
    assert target_of("sip:a@127.0.0.1").default_port == 5060
    assert target_of("sips:a@127.0.0.1:5071").default_port == 5071


@pytest.mark.parametrize(
    ("uri", "transport", "message"),
    [
        ("sips:alice@carrier.example;transport=udp", None, "reached over TLS, not UDP"),
        ("sips:alice@carrier.example", "udp", "reached over TLS, not UDP"),
        ("sip:alice@carrier.example;transport=sctp", None, "unsupported transport 'sctp'"),
    ],
)
def test_target_of_refuses_what_ringcast_cannot_speak(
    uri: str, transport: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        target_of(uri, transport)


def test_localhost_names_and_srv_names() -> None:
    assert is_localhost("localhost") and is_localhost("LocalHost.") and is_localhost("a.localhost")
    assert not is_localhost("localhost.example") and not is_localhost("mylocalhost")
    assert srv_name("udp", "carrier.example") == "_sip._udp.carrier.example."
    assert srv_name("tcp", "carrier.example.") == "_sip._tcp.carrier.example."
    assert srv_name("tls", "carrier.example") == "_sips._tcp.carrier.example."


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> Naptr:
    return Naptr(order, pref, flags, service, replacement)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([], []),
        (  # order first, then preference; SIPS+D2T is TLS
            [
                naptr(20, 10, "SIP+D2U", "_sip._udp.c.example."),
                naptr(10, 50, "SIPS+D2T", "_sips._tcp.c.example."),
                naptr(10, 60, "SIP+D2T", "_sip._tcp.c.example."),
            ],
            [
                ("tls", "_sips._tcp.c.example."),
                ("tcp", "_sip._tcp.c.example."),
                ("udp", "_sip._udp.c.example."),
            ],
        ),
        (  # preference within one order; service names are case-insensitive
            [
                naptr(10, 20, "sip+d2t", "_sip._tcp.c.example"),
                naptr(10, 10, "SIP+D2U", "_sip._udp.c.example"),
            ],
            [("udp", "_sip._udp.c.example."), ("tcp", "_sip._tcp.c.example.")],
        ),
        (  # not flag S, no replacement, SCTP, another application: all left out
            [
                naptr(10, 10, "SIP+D2U", "_sip._udp.c.example.", flags="a"),
                naptr(10, 10, "SIP+D2U", "."),
                naptr(10, 10, "SIP+D2S", "_sip._sctp.c.example."),
                naptr(10, 10, "aaa+ap1:diameter.tcp", "_diameter._tcp.c.example."),
            ],
            [],
        ),
    ],
)
def test_naptr_services(records: list[Naptr], expected: list[tuple[str, str]]) -> None:
    assert naptr_services(records) == expected


def test_naptr_services_of_a_sips_uri_are_tls_only() -> None:
    """RFC 3263 §4.1: a sips: URI takes only the SIPS services."""
    records = [
        naptr(10, 10, "SIP+D2U", "_sip._udp.c.example."),
        naptr(20, 10, "SIPS+D2T", "_sips._tcp.c.example."),
    ]
    assert naptr_services(records, secure=True) == [("tls", "_sips._tcp.c.example.")]
    assert naptr_services(records[:1], secure=True) == []


def test_offers_sip_tells_a_tls_only_domain_from_one_without_sip_records() -> None:
    assert offers_sip([naptr(10, 10, "SIPS+D2T", "_sips._tcp.c.example.")])
    assert not offers_sip([naptr(10, 10, "aaa+ap1:diameter.tcp", "_diameter._tcp.c.example.")])


def srv(priority: int, weight: int, port: int, target: str = "a.c.example.") -> Srv:
    return Srv(priority, weight, port, target)


def test_srv_lowest_priority_first_whatever_the_weights() -> None:
    records = [srv(20, 100, 5072), srv(10, 0, 5070), srv(30, 1, 5073), srv(10, 0, 5071)]
    for seed in range(20):
        ordered = srv_order(records, random.Random(seed))
        assert [r.priority for r in ordered] == [10, 10, 20, 30]
        # weight 0 only: the order listed (RFC 2782: all of them at the start, sum 0)
        assert [r.port for r in ordered[:2]] == [5070, 5071]


def test_srv_target_dot_means_not_available() -> None:
    assert srv_order([srv(0, 0, 0, ".")], random.Random(1)) == []
    assert srv_order([srv(0, 0, 0, "."), srv(5, 1, 5070)], random.Random(1)) == [srv(5, 1, 5070)]


def test_srv_weights_share_the_first_pick() -> None:
    """RFC 2782: within one priority a record is picked first with probability
    weight / sum; a weight 0 record with probability 1 / (sum + 1)."""
    records = [srv(10, 60, 5070), srv(10, 30, 5071), srv(10, 10, 5072), srv(10, 0, 5073)]
    rng = random.Random(3263)
    draws = 20_000
    first = Counter(srv_order(records, rng)[0].port for _ in range(draws))
    total = 60 + 30 + 10 + 1  # the uniform number runs 0..100: 101 values
    for port, share in ((5070, 60), (5071, 30), (5072, 10), (5073, 1)):
        expected = draws * share / total
        assert abs(first[port] - expected) < 4 * expected**0.5, (port, first)


def test_srv_every_record_once_and_a_seed_repeats_the_order() -> None:
    records = [srv(10, w, 5070 + i) for i, w in enumerate((5, 5, 5, 5, 80))]
    orders = {tuple(r.port for r in srv_order(records, random.Random(s))) for s in range(200)}
    assert all(sorted(o) == [5070, 5071, 5072, 5073, 5074] for o in orders)
    assert len(orders) > 10  # the weights shuffle, not a fixed order
    assert srv_order(records, random.Random(7)) == srv_order(records, random.Random(7))


def test_usable_servers_skip_names_bad_ports_and_repeats() -> None:
    found = [
        Server("127.0.0.1", 5070, "udp"),
        Server("127.0.0.1", 5070, "udp"),
        Server("gw.c.example", 5071, "udp"),
        Server("127.0.0.1", 0, "udp"),
        Server("127.0.0.1", 5070, "tcp"),
        *(Server("127.0.0.1", 5080 + i, "udp") for i in range(10)),
    ]
    assert usable_servers(found) == [
        Server("127.0.0.1", 5070, "udp"),
        Server("127.0.0.1", 5070, "tcp"),
        Server("127.0.0.1", 5080, "udp"),
        Server("127.0.0.1", 5081, "udp"),
    ]
    assert len(usable_servers(found, limit=2)) == 2 < MAX_TARGETS
