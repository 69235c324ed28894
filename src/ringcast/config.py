"""Typed settings, read once at start-up.

Precedence, highest first: CLI flags, environment variables `RINGCAST_<NAME>`,
the TOML file named by `--config` / `RINGCAST_CONFIG`, then the defaults below.
A bad value fails here with :class:`~ringcast.errors.ConfigError` naming the key.

Besides the field names, three composite keys are accepted in every source and
split into fields: `http` (`HOST:PORT`), `sip` (`HOST:PORT`) and `rtp_ports`
(`LO-HI`). The TOML file may also hold `[trunks.NAME]` tables and a
`[piper_voices]` table (voice name -> piper model file or voice package).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringcast.domain import CPS_MAX, CPS_MIN, MAX_CALLS_LIMIT
from ringcast.errors import ConfigError
from ringcast.inet import IPV6, bind_families, hostport, ip_version, public_ips, split_host_port
from ringcast.trunks import CARRIER_KEYS, check_carrier_keys

ENV_PREFIX = "RINGCAST_"
SIP_TRANSPORTS = ("udp", "tcp")  # what `--sip-transport` listens on
CALL_TRANSPORTS = ("udp", "tcp", "tls")  # what a trunk or request may send over
TLS_TRUNK_KEYS = ("ca_file", "cert_file", "key_file")  # file paths (RFC 5630 trunks)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
TRUNK_KEYS = (
    frozenset(
        {"proxy", "username", "password", "transport", "codecs", "headers", "max_calls", "cps"}
    )
    | CARRIER_KEYS
    | {*TLS_TRUNK_KEYS, "tls_verify", "srtp"}
)
SRTP_MODES = ("off", "optional", "required")  # RFC 4568 SDES-SRTP policy of a trunk
CODECS = ("PCMU", "PCMA")
COMPOSITE_KEYS = ("http", "sip", "rtp_ports")


def default_media_cache_dir() -> str:
    """`$XDG_CACHE_HOME/ringcast/media`, else `~/.cache/ringcast/media`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "ringcast" / "media")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a ringcast process is configured with. Immutable once built."""

    db: str = "sqlite:///./ringcast.db"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    sip_host: str = "0.0.0.0"
    sip_port: int = 5060
    sip_transport: str = "udp"
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    public_ip: str | None = None  # address written into SDP and Contact
    max_calls: int = 100  # concurrent calls on this node
    cps: float = 10.0  # new calls per second on this node
    max_recipients: int = 100_000  # per request
    max_body_bytes: int = 50 * 1024 * 1024  # bytes
    media_cache_dir: str = field(default_factory=default_media_cache_dir)
    allow_private_urls: bool = False
    # CIDRs whose addresses media and callback URLs may use despite the SSRF guard
    # (TOML list, or comma-separated in RINGCAST_PRIVATE_URL_ALLOWLIST)
    private_url_allowlist: tuple[str, ...] = ()
    insecure_no_auth: bool = False  # serve beyond loopback with no API key
    sip_t1: float = 0.5  # seconds, RFC 3261 T1
    sip_t2: float = 4.0  # seconds, RFC 3261 T2
    shutdown_grace: float = 30.0  # seconds to finish in-flight calls on SIGTERM
    node_timeout: float = 15.0  # seconds without heartbeat before a dialer is declared dead
    db_pool_size: int = 5  # PostgreSQL connections each process keeps open
    db_pool_overflow: int = 10  # extra PostgreSQL connections a process may open at peaks
    sip_flood_rate: float = 50.0  # SIP requests per second one source IP may send (0: no limit)
    sip_flood_burst: int = 100  # requests a source may send at once before the rate applies
    sip_flood_total_rate: float = 200.0  # SIP requests/s from all sources together (0: no limit)
    sip_silent_invites: bool = False  # out-of-dialog INVITEs get no answer instead of 403
    sip_user_agent: str = "ringcast/0.1"  # User-Agent of the requests our calls send
    sip_identify_to_strangers: bool = False  # strangers' answers carry Server: <sip_user_agent>
    # nameserver for SIP's RFC 3263 lookups (NAPTR, SRV, A): IP or IP:PORT; None: the system's
    dns_server: str | None = None
    event_loop: str = "auto"  # auto (uvloop where installed), uvloop or asyncio
    # the install secret that signs webhooks of requests made without an API key
    # (RINGCAST_WEBHOOK_SECRET; see webhooks.deliver.install_secret): never printed
    webhook_secret: str | None = field(default=None, repr=False)
    trunks: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, repr=False, hash=False
    )  # holds passwords: never printed
    # piper voices requests may name ("piper:NAME"): NAME -> model file or voice package
    piper_voices: Mapping[str, str] = field(default_factory=dict, hash=False)
    default_trunk: str | None = None  # the trunk numbers go through when a request names none
    secret_key: str | None = field(default=None, repr=False)  # RINGCAST_SECRET_KEY (base64)
    config_file: str | None = None
    # recordings older than this many days are deleted by the dialer's sweep (0: kept forever)
    recording_retention_days: float = 30.0
    recording_sweep_interval: float = 3600.0  # seconds between two retention sweeps

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_sources(
        cls,
        cli_overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        require: Iterable[str] = (),
    ) -> Settings:
        """Merge defaults < TOML file < environment < CLI and validate the result.

        `cli_overrides` maps field names (or `http`, `sip`, `rtp_ports`) to values;
        `None` values are ignored so a CLI can pass every option unconditionally.
        `require` names keys that must come from a source rather than a default
        (`ringcast api` requires `db`).
        """
        env = os.environ if env is None else env
        cli = {k: v for k, v in (cli_overrides or {}).items() if v is not None}
        env_values = _from_env(env)

        config_file = cli.pop("config_file", None) or cli.pop("config", None)
        if config_file is None:
            config_file = env_values.pop("config_file", None)
        else:
            env_values.pop("config_file", None)
        file_values: dict[str, Any] = {}
        if config_file is not None:
            file_values = _from_toml(Path(str(config_file)))

        merged: dict[str, Any] = {}
        for layer, source in ((file_values, "config file"), (env_values, "env"), (cli, "cli")):
            merged.update(_expand(layer, source))
        if config_file is not None:
            merged["config_file"] = str(config_file)
        for key in require:
            if key not in merged:
                raise ConfigError(
                    f"{key} is required: pass --{key.replace('_', '-')} or set "
                    f"{ENV_PREFIX}{key.upper()}",
                    field=key,
                )
        return cls(**{k: _coerce(k, v) for k, v in merged.items()})

    @property
    def http_bind(self) -> str:
        return hostport(self.http_host, self.http_port)

    @property
    def dns_nameserver(self) -> tuple[str, int] | None:
        """`dns_server` as (IP, port), port 53 when it names none; None: the system's."""
        return None if self.dns_server is None else _nameserver(self.dns_server)


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS: dict[str, Any] = typing.get_type_hints(Settings)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = [*_FIELDS, *COMPOSITE_KEYS, "config"]
    for name in names:
        if name in ("trunks", "piper_voices"):
            continue
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            out["config_file" if name == "config" else name] = value
    return out


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(
            f"config_file: cannot read {path}: {exc.strerror}", field="config_file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config_file: {path} is not valid TOML: {exc}", field="config_file"
        ) from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "trunks":
            out["trunks"] = _trunks(value)
        elif name == "piper_voices":
            out["piper_voices"] = _piper_voices(value)
        elif name in _FIELDS or name in COMPOSITE_KEYS:
            if name == "config_file":
                raise ConfigError("config_file cannot be set inside the config file", field=key)
            out[name] = value
        else:
            raise ConfigError(f"unknown config key {key!r} in {path}", field=key)
    return out


def _trunks(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError("trunks must be a table of [trunks.NAME] tables", field="trunks")
    trunks: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        where = f"trunks.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table", field=where)
        unknown = sorted(set(table) - TRUNK_KEYS)
        if unknown:
            bad = f"{where}.{unknown[0]}"
            raise ConfigError(f"unknown key {unknown[0]!r} in {where}", field=bad)
        if "proxy" not in table:
            raise ConfigError(f"{where}.proxy is required", field=f"{where}.proxy")
        for key in ("proxy", "username", "password"):
            if key in table and not isinstance(table[key], str):
                raise ConfigError(f"{where}.{key} must be a string", field=f"{where}.{key}")
        if not str(table["proxy"]).lower().startswith(("sip:", "sips:")):
            raise ConfigError(f"{where}.proxy must be a sip: URI", field=f"{where}.proxy")
        try:
            proxy_host = _uri_hostport(str(table["proxy"]))
            if ":" in split_host_port(proxy_host)[0] and not proxy_host.startswith("["):
                raise ValueError(f"write an IPv6 host in brackets, like sip:[{proxy_host}]")
        except ValueError as exc:
            raise ConfigError(f"{where}.proxy: {exc}", field=f"{where}.proxy") from None
        if "transport" in table and table["transport"] not in CALL_TRANSPORTS:
            raise ConfigError(
                f"{where}.transport must be udp, tcp or tls", field=f"{where}.transport"
            )
        _check_trunk_tls(where, table)
        # fleet-wide limits of the trunk (capacity leases and a token bucket in the database)
        if "max_calls" in table and (
            isinstance(table["max_calls"], bool)
            or not isinstance(table["max_calls"], int)
            or not 1 <= table["max_calls"] <= MAX_CALLS_LIMIT
        ):
            raise ConfigError(
                f"{where}.max_calls must be a whole number from 1 to {MAX_CALLS_LIMIT}",
                field=f"{where}.max_calls",
            )
        if "cps" in table and (
            isinstance(table["cps"], bool)
            or not isinstance(table["cps"], int | float)
            or not CPS_MIN <= table["cps"] <= CPS_MAX
        ):
            raise ConfigError(
                f"{where}.cps must be a number from {CPS_MIN} to {CPS_MAX:g}", field=f"{where}.cps"
            )
        codecs = table.get("codecs")
        if codecs is not None and (
            not isinstance(codecs, list) or not codecs or any(c not in CODECS for c in codecs)
        ):
            raise ConfigError(
                f"{where}.codecs must be a non-empty list of PCMU, PCMA", field=f"{where}.codecs"
            )
        if "srtp" in table and table["srtp"] not in SRTP_MODES:
            raise ConfigError(
                f"{where}.srtp must be off, optional or required", field=f"{where}.srtp"
            )
        headers = table.get("headers")
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise ConfigError(
                f"{where}.headers must be a table of strings", field=f"{where}.headers"
            )
        check_carrier_keys(where, table)
        trunks[name] = dict(table)
    return trunks


def _check_trunk_tls(where: str, table: Mapping[str, Any]) -> None:
    """A trunk's TLS keys: readable files, a boolean ``tls_verify`` (loaded at start-up
    by the dialer, which names the file OpenSSL refuses)."""
    for key in TLS_TRUNK_KEYS:
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key} must be a file path", field=f"{where}.{key}")
        if not os.access(value, os.R_OK) or not Path(value).is_file():
            raise ConfigError(
                f"{where}.{key}: {value} is not a readable file", field=f"{where}.{key}"
            )
    if "key_file" in table and "cert_file" not in table:
        raise ConfigError(f"{where}.key_file needs cert_file", field=f"{where}.key_file")
    if "tls_verify" in table and not isinstance(table["tls_verify"], bool):
        raise ConfigError(f"{where}.tls_verify must be true or false", field=f"{where}.tls_verify")


_VOICE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _piper_voices(value: Any) -> dict[str, str]:
    """`[piper_voices]`: NAME = "model.onnx path or voice package" (checked at start-up,
    when the engine resolves them)."""
    if not isinstance(value, dict):
        raise ConfigError("piper_voices must be a table of NAME = model", field="piper_voices")
    out = {}
    for name, model in value.items():
        where = f"piper_voices.{name}"
        if not name or not set(name) <= _VOICE_NAME or len(name) > 48:
            raise ConfigError(f"{where}: a name is 1..48 of A-Z a-z 0-9 - _ .", field=where)
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where} must name a model file or voice package", field=where)
        out[name] = model.strip()
    return out


def _uri_hostport(uri: str) -> str:
    """The ``host[:port]`` of a SIP URI (RFC 3261 §19.1.1), brackets kept."""
    rest = uri.strip().strip("<>").split(":", 1)[1]
    return rest.rsplit("@", 1)[-1].split(";", 1)[0].split("?", 1)[0].split(">", 1)[0]


def _split_host_port(key: str, value: Any) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (RFC 3986 §3.2.2 brackets) -> (host, port)."""
    text = str(value).strip()
    try:
        host, port = split_host_port(text)
    except ValueError as exc:
        raise ConfigError(f"{key} must be HOST:PORT or [IPv6]:PORT: {exc}", field=key) from None
    if port is None:
        hint = ": put an IPv6 address in brackets, like [::1]:5060" if ":" in host else ""
        raise ConfigError(f"{key} must be HOST:PORT or [IPv6]:PORT, got {text!r}{hint}", field=key)
    return host, port


def _expand(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Split the composite keys into fields; the split fields of a layer win."""
    out: dict[str, Any] = {}
    for key in COMPOSITE_KEYS:
        if key not in values:
            continue
        value = values[key]
        if key in ("http", "sip"):
            host, port = _split_host_port(key, value)
            out[f"{key}_host"], out[f"{key}_port"] = host, port
        else:
            lo, sep, hi = str(value).strip().partition("-")
            if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
                raise ConfigError(f"rtp_ports must be LO-HI, got {value!r} ({source})", field=key)
            out["rtp_port_min"], out["rtp_port_max"] = int(lo), int(hi)
    for key, value in values.items():
        if key in COMPOSITE_KEYS:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r} ({source})", field=key)
        out[key] = value
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, value: Any) -> Any:
    hint = _HINTS[key]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if optional and (value is None or value == ""):
        return None
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or isinstance(value, float):
                raise ValueError(value)
            return int(str(value).strip().replace("_", ""))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
        if typing.get_origin(hint) is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ValueError(value)
            return tuple(i.strip() for i in items if i.strip())
    except ValueError:
        raise ConfigError(
            f"{key} must be {getattr(hint, '__name__', hint)}, got {value!r}", field=key
        ) from None
    return value


def _nameserver(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT`, `IPv6` or `[IPv6]:PORT` -> (IP, port); ValueError otherwise."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(text)
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        port = int(digits)
    ipaddress.ip_address(host)
    if not 1 <= port <= 65535:
        raise ValueError(text)
    return host, port


def _validate_addresses(s: Settings) -> None:
    """``sip_host``/``http_host`` without brackets, IPv6 ones well formed; ``public_ip``
    one address per family, each of a family SIP is bound to."""
    for key in ("sip_host", "http_host"):
        host = getattr(s, key)
        if ":" in host and ip_version(host) != IPV6:
            raise ConfigError(f"{key} {host!r} is not an IPv6 address", field=key)
    if s.public_ip is None:
        return
    try:
        public = public_ips(s.public_ip)
    except ValueError as exc:
        raise ConfigError(
            f"public_ip must be an IP address, or an IPv4 and an IPv6 one comma-separated: {exc}",
            field="public_ip",
        ) from None
    bound = bind_families(s.sip_host)
    for version, ip in public.items():
        if version not in bound:
            raise ConfigError(
                f"public_ip {ip} is IPv{version}, but SIP is bound to"
                f" {hostport(s.sip_host, s.sip_port)} (IPv{bound[0]} only); use"
                + (" --sip [::]:PORT" if version == IPV6 else " --sip 0.0.0.0:PORT or [::]:PORT"),
                field="public_ip",
            )


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}", field=key)


def _validate(s: Settings) -> None:
    """Range checks that need no I/O; each names the offending key."""
    _check(
        s.db.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres"),
        "db",
        f"must be sqlite:///PATH or postgresql://..., got {s.db.split('@')[-1]!r}",
    )
    _check(0 <= s.http_port <= 65535, "http_port", "must be 0..65535")
    _check(0 <= s.sip_port <= 65535, "sip_port", "must be 0..65535")
    _check(s.sip_transport in SIP_TRANSPORTS, "sip_transport", "must be udp or tcp")
    _check(s.event_loop in EVENT_LOOPS, "event_loop", "must be auto, uvloop or asyncio")
    _check(1024 <= s.rtp_port_min <= 65534, "rtp_port_min", "must be 1024..65534")
    _check(s.rtp_port_min < s.rtp_port_max <= 65535, "rtp_port_max", "must be above rtp_port_min")
    _validate_addresses(s)
    _check(1 <= s.max_calls <= MAX_CALLS_LIMIT, "max_calls", f"must be 1..{MAX_CALLS_LIMIT}")
    _check(CPS_MIN <= s.cps <= CPS_MAX, "cps", f"must be {CPS_MIN}..{CPS_MAX:g}")
    _check(s.max_recipients >= 1, "max_recipients", "must be at least 1")
    _check(s.max_body_bytes >= 1024, "max_body_bytes", "must be at least 1024")
    _check(bool(s.media_cache_dir), "media_cache_dir", "must not be empty")
    _check(s.sip_t1 > 0, "sip_t1", "must be above 0")
    _check(s.sip_t2 >= s.sip_t1, "sip_t2", "must be at least sip_t1")
    _check(s.shutdown_grace >= 0, "shutdown_grace", "must not be negative")
    _check(s.db_pool_size >= 1, "db_pool_size", "must be at least 1")
    _check(s.db_pool_overflow >= 0, "db_pool_overflow", "must not be negative")
    for cidr in s.private_url_allowlist:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"private_url_allowlist: {cidr!r} is not a CIDR like 10.0.0.0/8",
                field="private_url_allowlist",
            ) from None
    _check(s.node_timeout >= 1, "node_timeout", "must be at least 1 second")
    _check(s.recording_retention_days >= 0, "recording_retention_days", "must not be negative")
    _check(s.recording_sweep_interval >= 1, "recording_sweep_interval", "must be at least 1 s")
    _check(s.sip_flood_rate >= 0, "sip_flood_rate", "must not be negative")
    _check(s.sip_flood_burst >= 1, "sip_flood_burst", "must be at least 1")
    _check(s.sip_flood_total_rate >= 0, "sip_flood_total_rate", "must not be negative")
    _check(
        0 < len(s.sip_user_agent) <= 128 and s.sip_user_agent.isprintable(),
        "sip_user_agent",
        "must be 1..128 printable characters",
    )
    if s.default_trunk is not None and s.default_trunk not in s.trunks:
        raise ConfigError(
            f"default_trunk {s.default_trunk!r} is not a [trunks.NAME] table", field="default_trunk"
        )
    if s.dns_server is not None:
        try:
            _nameserver(s.dns_server)
        except ValueError:
            raise ConfigError(
                f"dns_server must be IP or IP:PORT (a nameserver), got {s.dns_server!r}",
                field="dns_server",
            ) from None
