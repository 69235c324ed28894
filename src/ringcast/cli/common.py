"""What the `ringcast` commands share: flag types, settings from flags, the event
loop a command runs on, the one-line error, and the HTTP client of the client
commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import typer

from ringcast.config import Settings
from ringcast.errors import ConfigError, RingcastError

DEFAULT_URL = "http://127.0.0.1:8080"


Db = Annotated[
    str | None,
    typer.Option("--db", envvar="RINGCAST_DB", help="sqlite:///PATH or postgresql://..."),
]
Http = Annotated[
    str | None,
    typer.Option("--http", envvar="RINGCAST_HTTP", help="HTTP bind HOST:PORT or [IPv6]:PORT"),
]
Sip = Annotated[
    str | None,
    typer.Option(
        "--sip", envvar="RINGCAST_SIP", help="SIP bind HOST:PORT, [IPv6]:PORT, [::]:PORT dual stack"
    ),
]
SipTransport = Annotated[
    str | None,
    typer.Option("--sip-transport", envvar="RINGCAST_SIP_TRANSPORT", help="udp or tcp"),
]
RtpPorts = Annotated[
    str | None,
    typer.Option("--rtp-ports", envvar="RINGCAST_RTP_PORTS", help="RTP port range LO-HI"),
]
PublicIp = Annotated[
    str | None,
    typer.Option(
        "--public-ip",
        envvar="RINGCAST_PUBLIC_IP",
        help="address for SDP and Contact (one per family: IPv4,IPv6)",
    ),
]
MaxCalls = Annotated[
    int | None,
    typer.Option("--max-calls", envvar="RINGCAST_MAX_CALLS", help="concurrent calls per node"),
]
Cps = Annotated[
    float | None,
    typer.Option("--cps", envvar="RINGCAST_CPS", help="new calls per second per node"),
]
ConfigFile = Annotated[
    str | None, typer.Option("--config", envvar="RINGCAST_CONFIG", help="TOML config file")
]
AllowPrivate = Annotated[
    bool | None,
    typer.Option(
        "--allow-private-urls/--no-allow-private-urls",
        envvar="RINGCAST_ALLOW_PRIVATE_URLS",
        help="allow media and callback URLs on private addresses",
    ),
]
Url = Annotated[str, typer.Option("--url", envvar="RINGCAST_URL", help="ringcast server URL")]
InsecureNoAuth = Annotated[
    bool | None,
    typer.Option(
        "--insecure-no-auth/--no-insecure-no-auth",
        envvar="RINGCAST_INSECURE_NO_AUTH",
        help="serve beyond loopback with no API key (anyone who can connect may call)",
    ),
]

LifespanHook = Callable[[Any], AbstractAsyncContextManager[Any]]

ApiKey = Annotated[
    str | None,
    typer.Option("--key", envvar="RINGCAST_KEY", help="API key (sent as Authorization: Bearer)"),
]
Priority = Annotated[
    int | None,
    typer.Option(
        "--priority", min=1, max=10, help="share of the channels against other requests, 1-10"
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"ringcast: error: {message}", err=True)
    return typer.Exit(code)


def settings_from(require: Sequence[str] = (), **options: Any) -> Settings:
    overrides = {
        "db": options.get("db"),
        "http": options.get("http"),
        "sip": options.get("sip"),
        "sip_transport": options.get("sip_transport"),
        "rtp_ports": options.get("rtp_ports"),
        "public_ip": options.get("public_ip"),
        "max_calls": options.get("max_calls"),
        "cps": options.get("cps"),
        "allow_private_urls": options.get("allow_private_urls"),
        "insecure_no_auth": options.get("insecure_no_auth"),
        "config_file": options.get("config"),
    }
    try:
        return Settings.from_sources(overrides, require=require)
    except ConfigError as exc:
        raise fail(f"configuration: {exc.message}") from None


def run(coro: Any, event_loop: str = "auto") -> None:
    """Run `coro` to the end on a new event loop: uvloop where installed (`auto`), as
    `event_loop` (the setting) says. uvloop's libuv loop costs the dialer about a
    sixth less CPU per call than asyncio's (bench/RESULTS.md); `asyncio` is the
    fallback an operator can choose when chasing a loop-specific problem."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as runner:
            runner.run(coro)
    except RingcastError as exc:
        raise fail(exc.message, 1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise fail("event_loop is uvloop, but uvloop is not installed", 2) from None
        return None
    return uvloop.new_event_loop


def client(url: str, key: str | None) -> Any:
    from ringcast.client import Client

    return Client(url, key)


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
    """Turn a ClientError into one `ringcast: error: ...` line and exit code 1."""
    from ringcast.client import ClientError

    try:
        yield
    except ClientError as exc:
        raise fail(exc.message, 1) from None
