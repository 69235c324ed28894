"""Pure parts of authentication and the SSRF guard: key formats, allowlists, the
token bucket, loopback detection, address classification."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re

import pytest

from ringcast.api.auth import (
    DestinationNotAllowed,
    RateLimiter,
    check_destinations,
    destination_allowed,
    is_loopback_host,
)
from ringcast.config import Settings
from ringcast.domain import utcnow
from ringcast.errors import ConfigError
from ringcast.logfmt import CALL_STATE_FORMAT, JsonFormatter
from ringcast.netguard import AddressRefused, NetPolicy, classify
from ringcast.store.keys import (
    ApiKey,
    hash_key,
    new_key,
    new_webhook_secret,
    normalize_allow,
)


def test_key_format_and_hash() -> None:
    key = new_key()
    assert re.fullmatch(r"rc_[A-Za-z0-9_-]{43}", key), key
    assert new_key() != key
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_key(key)) == 64


def test_webhook_secret_is_standard_webhooks_format() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24


def test_normalize_allow() -> None:
    got = normalize_allow(
        {"hosts": ["GW.Example.com.", " "], "domains": [".Example.org"], "prefixes": [" 371 "]}
    )
    assert got == {"hosts": ["gw.example.com"], "domains": ["example.org"], "prefixes": ["371"]}
    assert normalize_allow({"hosts": [], "prefixes": []}) is None
    assert normalize_allow(None) is None


ALLOW = {"hosts": ("gw.example.com", "127.0.0.1"), "domains": ("carrier.net",)}


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("sip:alice@gw.example.com", True),
        ("sip:alice@GW.EXAMPLE.COM:5060;transport=udp", True),
        ("sip:555@127.0.0.1:5070", True),
        ("sips:bob@edge.carrier.net", True),
        ("sip:bob@carrier.net", True),
        ("sip:bob@evilcarrier.net", False),
        ("sip:bob@carrier.net.evil.com", False),
        ("sip:alice@192.168.1.1", False),
        ("sip:gw.example.com", True),
        ("sip:a@[::1]:5060", False),
    ],
)
def test_destination_hosts_and_domains(uri: str, ok: bool) -> None:
    assert destination_allowed(uri, ALLOW) is ok


def test_destination_prefixes_restrict_the_user_part_and_combine_with_hosts() -> None:
    allow = {"hosts": ("gw.example.com",), "prefixes": ("+3712", "3712")}
    assert destination_allowed("sip:+37120000000@gw.example.com", allow)
    assert destination_allowed("sip:37120000000@gw.example.com", allow)
    assert not destination_allowed("sip:190012345@gw.example.com", allow)  # premium
    assert not destination_allowed("sip:37120000000@other.example.com", allow)
    only_prefix = {"prefixes": ("555",)}
    assert destination_allowed("sip:5551234@anywhere.example", only_prefix)
    assert not destination_allowed("sip:9001234@anywhere.example", only_prefix)
    assert destination_allowed("sip:x@y.z", {})


def _key(**allow: tuple[str, ...]) -> ApiKey:
    return ApiKey(id="k", name="n", tenant="t", key_prefix="rc_x", created_at=utcnow(), allow=allow)


def test_check_destinations_names_the_recipient_and_checks_the_proxy() -> None:
    key = _key(hosts=("gw.example.com",))
    check_destinations(key, [("recipients[0].to", "sip:a@gw.example.com")])
    with pytest.raises(DestinationNotAllowed) as err:
        check_destinations(
            key,
            [("recipients[0].to", "sip:a@gw.example.com"), ("recipients[1].to", "sip:b@x.org")],
        )
    assert err.value.field == "recipients[1].to"
    assert "sip:b@x.org" in err.value.message
    assert err.value.http_status == 422
    with pytest.raises(DestinationNotAllowed) as err:
        check_destinations(key, [("to", "sip:a@gw.example.com")], proxy="sip:premium.example.org")
    assert err.value.field == "sip.proxy"
    check_destinations(None, [("to", "sip:a@anything")])  # open server: no key


def test_rate_limiter_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", 3)
    assert wait == pytest.approx(20.0)  # 3 per minute: one token every 20 s
    assert limiter.take("other", 3) == 0.0  # per key
    now[0] = 19.0
    assert limiter.take("k", 3) == pytest.approx(1.0)
    now[0] = 20.5
    assert limiter.take("k", 3) == 0.0
    assert limiter.take("k", 3) > 0
    # fractional rates still allow one request
    assert RateLimiter(clock=lambda: 0.0).take("slow", 0.5) == 0.0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_classify(ip: str, reason: str | None) -> None:
    assert classify(ipaddress.ip_address(ip)) == reason


async def test_policy_cidr_allowlist_and_allow_private() -> None:
    policy = NetPolicy.build(allow_networks=["10.0.0.0/8", "::1/128"])
    assert policy.refusal(ipaddress.ip_address("10.9.9.9")) is None
    assert policy.refusal(ipaddress.ip_address("::1")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"
    await policy.check_url("http://10.1.1.1/x.wav")
    with pytest.raises(AddressRefused) as err:
        await policy.check_url("http://127.0.0.1:8000/x.wav", field="playlist[0].play")
    assert err.value.field == "playlist[0].play"
    assert err.value.http_status == 422
    with pytest.raises(AddressRefused):
        await policy.check_url("http://localhost/x.wav")
    with pytest.raises(AddressRefused):
        await policy.check_url("http://[::ffff:169.254.169.254]/latest/meta-data")
    await NetPolicy(allow_private=True).check_url("http://127.0.0.1/x.wav")
    # a name that does not resolve is left to the fetch (which fails on its own)
    await NetPolicy().check_url("http://no-such-host.invalid/x.wav")


def test_policy_from_settings() -> None:
    settings = Settings(private_url_allowlist=("192.168.0.0/16",))
    policy = NetPolicy.from_settings(settings)
    assert not policy.allow_private
    assert policy.refusal(ipaddress.ip_address("192.168.3.4")) is None
    assert NetPolicy.from_settings(Settings(allow_private_urls=True)).allow_private


def test_settings_allowlist_from_env_and_validation() -> None:
    s = Settings.from_sources(env={"RINGCAST_PRIVATE_URL_ALLOWLIST": "10.0.0.0/8, fd00::/8"})
    assert s.private_url_allowlist == ("10.0.0.0/8", "fd00::/8")
    with pytest.raises(ConfigError) as err:
        Settings.from_sources(env={"RINGCAST_PRIVATE_URL_ALLOWLIST": "10.0.0.0/33"})
    assert err.value.field == "private_url_allowlist"
    assert Settings.from_sources(env={"RINGCAST_INSECURE_NO_AUTH": "1"}).insecure_no_auth


def test_json_log_line_for_a_call_state_change() -> None:
    record = logging.LogRecord(
        "ringcast.sip.call",
        logging.INFO,
        __file__,
        1,
        CALL_STATE_FORMAT,
        ("abc@host", "calling", "ringing", "sip:a@b", 180),
        None,
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "call_state"
    assert (line["call_id"], line["from_state"], line["to_state"]) == (
        "abc@host",
        "calling",
        "ringing",
    )
    assert line["level"] == "info" and line["logger"] == "ringcast.sip.call"
    assert line["message"] == "call abc@host: calling -> ringing to=sip:a@b status=180"
