"""IPv6 without sockets (issue 15 part 5): how hosts are written and read.

``[IPv6]:PORT`` in flags and trunk proxies, ``public_ip`` per family, bracketed
hosts in recipients (RFC 3261 §25, RFC 5954), SDP ``IN IP6`` (RFC 4566 §5.7),
and the endpoint's Via, Contact and From for a peer of each family.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from aiosipua.headers import parse_via

from ringcast.api.fields import check_sip_uri, sip_uri_ok
from ringcast.config import Settings
from ringcast.errors import ConfigError
from ringcast.inet import (
    bind_families,
    bracket,
    canonical_ip,
    hostport,
    ip_version,
    public_ips,
    same_ip,
    split_host_port,
    unmapped,
    v4_mapped,
)
from ringcast.netguard import NetPolicy
from ringcast.sip.call_spec import from_header
from ringcast.sip.endpoint import SipEndpoint
from ringcast.sip.message import Destination, response_destination
from ringcast.sip.sdp import MediaOffer, build_offer, parse_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]:5060", ("::1", 5060)),
        ("[::]:0", ("::", 0)),
        ("[2001:db8::10]", ("2001:db8::10", None)),
        ("2001:db8::10", ("2001:db8::10", None)),
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("pbx.example.com:5080", ("pbx.example.com", 5080)),
        ("pbx.example.com", ("pbx.example.com", None)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[::1", "brackets hold an IPv6 address"),
        ("[127.0.0.1]:5060", "brackets hold an IPv6 address"),
        ("[::1]5060", "expected :PORT after ]"),
        ("[::1]:65536", "the port must be 0..65535"),
        ("::1:zz", "put an IPv6 address in brackets"),
        (":5060", "no host"),
        ("host:port", "the port must be 0..65535"),
    ],
)
def test_split_host_port_refuses(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_host_port(text)


def test_addresses_and_families() -> None:
    assert (bracket("::1"), bracket("[::1]"), bracket("127.0.0.1")) == (
        "[::1]",
        "[::1]",
        "127.0.0.1",
    )
    assert hostport("2001:db8::10", 5060) == "[2001:db8::10]:5060"
    assert (ip_version("[::1]"), ip_version("fe80::1%eth0"), ip_version("10.0.0.1")) == (6, 6, 4)
    assert ip_version("pbx.example.com") is None
    assert bind_families("::") == (4, 6)
    assert bind_families("::1") == (6,)
    assert bind_families("0.0.0.0") == bind_families("127.0.0.1") == (4,)
    assert v4_mapped("127.0.0.1") == "::ffff:127.0.0.1" and v4_mapped("::1") == "::1"
    assert unmapped("::ffff:127.0.0.1") == "127.0.0.1" and unmapped("::1") == "::1"
    assert same_ip("0:0::1", "::1") and same_ip("::FFFF:127.0.0.1", "127.0.0.1")
    assert not same_ip("::1", "127.0.0.1")
    assert canonical_ip("[2001:DB8:0::10]") == "2001:db8::10"


def test_public_ips_one_per_family() -> None:
    assert public_ips("203.0.113.5") == {4: "203.0.113.5"}
    assert public_ips("203.0.113.5, 2001:DB8::5") == {4: "203.0.113.5", 6: "2001:db8::5"}
    with pytest.raises(ValueError, match="two IPv4 addresses"):
        public_ips("203.0.113.5,198.51.100.7")
    with pytest.raises(ValueError, match="is not an IP address"):
        public_ips("[2001:db8::5]")


def settings(**values: str) -> Settings:
    return Settings.from_sources(values)


def test_settings_read_bracketed_hosts() -> None:
    s = settings(sip="[::]:5070", http="[::1]:8081", public_ip="203.0.113.5,2001:db8::5")
    assert (s.sip_host, s.sip_port, s.http_host, s.http_port) == ("::", 5070, "::1", 8081)
    assert s.http_bind == "[::1]:8081"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sip": "::1:5060"}, "put an IPv6 address in brackets, like [::1]:5060"),
        ({"sip": "[::1:5060"}, "brackets hold an IPv6 address"),
        ({"http": "[nope]:80"}, "brackets hold an IPv6 address"),
        ({"sip": "127.0.0.1:5060", "public_ip": "::1"}, "public_ip ::1 is IPv6, but SIP is"),
        ({"sip": "[::1]:5060", "public_ip": "203.0.113.5"}, "public_ip 203.0.113.5 is IPv4"),
        ({"sip": "[::]:5060", "public_ip": "::1,::2"}, "two IPv6 addresses"),
        ({"sip_host": "fe80::zz"}, "sip_host 'fe80::zz' is not an IPv6 address"),
    ],
)
def test_settings_refuse_unusable_addresses(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings(**values)


def test_trunk_proxy_ipv6_needs_brackets(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[trunks.v6]\nproxy = "sip:[::1]:5070"\n')
    assert Settings.from_sources({"config_file": str(good)}).trunks["v6"]["proxy"] == (
        "sip:[::1]:5070"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[trunks.v6]\nproxy = "sip:2001:db8::1"\n')
    with pytest.raises(ConfigError, match=r"trunks.v6.proxy: write an IPv6 host in brackets"):
        Settings.from_sources({"config_file": str(bad)})


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("sip:alice@[2001:db8::10]:5060", True),
        ("sip:alice@[::1];transport=tcp", True),
        ("sip:[::1]", True),
        ("sip:alice@[2001:db8::zz]", False),
        ("sip:alice@[1:2]", False),
        ("sip:alice@[127.0.0.1]", False),
    ],
)
def test_recipient_ipv6_hosts(uri: str, ok: bool) -> None:
    assert sip_uri_ok(uri) is ok
    if ok:
        assert check_sip_uri(uri) == uri
    else:
        with pytest.raises(ValueError, match="must"):
            check_sip_uri(uri)


def test_sdp_offer_and_answer_in_ip6() -> None:
    body = build_offer(MediaOffer(host="::1", port=40000), session_version=1).decode()
    assert "\r\nc=IN IP6 ::1\r\n" in body
    assert " IN IP6 ::1\r\n" in body.split("\r\n", 2)[1] + "\r\n"  # o=
    v4 = build_offer(MediaOffer(host="127.0.0.1", port=40000), session_version=1).decode()
    assert "\r\nc=IN IP4 127.0.0.1\r\n" in v4
    answer = parse_answer(
        b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
        b"m=audio 6000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        ["PCMU", "PCMA"],
    )
    assert (answer.host, answer.port, answer.codec) == ("::1", 6000, "PCMA")
    with pytest.raises(ValueError, match="unknown address type 'X25'"):
        parse_answer(
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN X25 1234\r\nt=0 0\r\n"
            b"m=audio 6000 RTP/AVP 0\r\n",
            ["PCMU"],
        )


def test_via_contact_and_from_per_peer_family() -> None:
    """A dual-stack endpoint writes the address of the peer's family, IPv6 in
    brackets; a public IP per family wins over the local one."""
    ep = SipEndpoint(host="::", port=0, public_ip="198.51.100.7,2001:db8::7")
    six = Destination("::1", 5062)
    four = Destination("127.0.0.1", 5062)
    via6 = parse_via(ep.via_for(six, "z9hG4bKx"))
    assert (via6.host, via6.transport) == ("[2001:db8::7]", "UDP")
    assert ep.contact_for(six, "me") == "<sip:me@[2001:db8::7]:0>"
    assert ep.via_for(four, "z9hG4bKx").startswith("SIP/2.0/UDP 198.51.100.7:0;")
    assert from_header("me", ep.local_host_for(six))[0] == "<sip:me@[2001:db8::7]>"
    local = SipEndpoint(host="::", port=0)
    assert local.local_host_for(six) == "::1"  # what the kernel sends from, per family
    assert local.local_host_for(four) == "127.0.0.1"
    assert str(six) == "[::1]:5062"


async def test_a_one_family_endpoint_refuses_the_other_family() -> None:
    ep = SipEndpoint(host="127.0.0.1", port=0)
    assert ep.resolve_now("sip:alice@[::1]:5062") is None
    with pytest.raises(OSError, match=r"\[::1\] is reached over IPv6 only"):
        await ep.locate("sip:alice@[::1]:5062")
    six = SipEndpoint(host="::1", port=0)
    with pytest.raises(OSError, match="127.0.0.1 is reached over IPv4 only"):
        await six.locate("sip:alice@127.0.0.1:5062")
    assert await six.locate("sip:alice@localhost:5062") == [Destination("::1", 5062)]
    assert (await SipEndpoint(host="::", port=0).locate("sip:a@[::1]:5062"))[0].host == "::1"


def test_responses_to_an_ipv6_via() -> None:
    """A request from [::1] with rport: the answer goes to its source (RFC 3581)."""
    dest = response_destination(
        "SIP/2.0/UDP [::1]:5070;rport;branch=z9hG4bKa", ("::1", 5099), "udp"
    )
    assert dest == Destination("::1", 5099)
    dest = response_destination("SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa", ("::1", 5099), "udp")
    assert dest == Destination("::1", 5070)


def test_netguard_judges_ipv6_and_its_allowlist_frees_what_it_judged() -> None:
    """A v4-mapped loopback is refused as loopback; an IPv4 CIDR in
    private_url_allowlist frees it as it frees 127.0.0.1 (the address judged)."""
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert NetPolicy.build().refusal(mapped) == "loopback"
    assert NetPolicy.build().refusal(ipaddress.ip_address("fd00::1")) == "private"
    allow = NetPolicy.build(allow_networks=["127.0.0.0/8"])
    assert allow.refusal(mapped) is None
    assert allow.refusal(ipaddress.ip_address("::1")) == "loopback"
    assert NetPolicy.build(allow_networks=["::1/128"]).refusal(ipaddress.ip_address("::1")) is None
