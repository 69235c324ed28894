"""The `ringcast` command line.

Server commands (`serve`, `api`, `dialer`, `call`) share the flags below; each
flag is also read from `RINGCAST_<NAME>`, and a `--config` TOML file sits
under both. Client commands (`status`, `report`) talk to a running server at
`--url` (`RINGCAST_URL`).

Hook points: `serve` and `dialer` run `ringcast.dialer.service.dialer_lifespan
(settings)` (a factory `hook(app_state) -> AsyncContextManager`); `call` runs
`ringcast.dialer.single.run_single_call(settings, to, play=, say=, from_=,
ring_timeout=, max_duration=)`. Either module missing gives a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any

import typer

import ringcast
from ringcast import heap
from ringcast.cli_recordings import recordings_app
from ringcast.config import Settings
from ringcast.errors import ConfigError, RingcastError
from ringcast.inet import IPV6, ip_version

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="ringcast",
    help="Self-hosted voice broadcast: SIP calls that play audio, with call records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"ringcast: error: {message}", err=True)
    return typer.Exit(code)


def _settings(require: Sequence[str] = (), **options: Any) -> Settings:
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
        raise _fail(f"configuration: {exc.message}") from None


def _dialer_hook(settings: Settings, *, required: bool) -> LifespanHook | None:
    try:
        from ringcast.dialer.service import dialer_lifespan
    except ImportError as exc:
        if required:
            raise _fail(f"the dialer is not available in this build ({exc})") from None
        logger.warning("dialer not available (%s): serving the API only, calls stay queued", exc)
        return None
    from ringcast.dialer.call import check_addresses

    try:
        check_addresses(settings)  # one line at start, not a traceback from the lifespan
    except RingcastError as exc:
        raise _fail(exc.message, 1) from None
    hook: LifespanHook = dialer_lifespan(settings)
    return hook


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _after_shutdown(signum: int, _frame: Any) -> None:
    logger.info("stopped by signal %s", signal.Signals(signum).name)


@contextlib.asynccontextmanager
async def _settle_heap(_state: Any) -> AsyncIterator[None]:
    """The last lifespan hook: the process is ready, its startup objects stay."""
    heap.settle()
    yield


async def _serve(settings: Settings, hooks: Sequence[LifespanHook]) -> None:
    import uvicorn

    from ringcast.api.app import create_app
    from ringcast.store.db import store_for

    store = store_for(settings)
    try:
        await store.migrate()
        from ringcast.api.auth import check_bind_policy

        await check_bind_policy(settings, store)  # no key beyond loopback: refuse
        _check_http_bind(settings)
        app_ = create_app(settings, store, lifespan_hooks=[*hooks, _settle_heap])
        config = uvicorn.Config(
            app_,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="on",
            log_config=None,
            timeout_graceful_shutdown=int(settings.shutdown_grace) or None,
            server_header=False,
        )
        server = uvicorn.Server(config)
        # uvicorn handles SIGINT/SIGTERM (stop accepting, drain, run the lifespan exit:
        # the dialer finishes its calls), then re-raises the signal to the handler
        # found at start; a no-op one lets us close the store and exit 0.
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, _after_shutdown) for sig in _STOP_SIGNALS}
        try:
            await server.serve()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started:
            raise RingcastError(f"could not serve HTTP on {settings.http_bind}")
    finally:
        await store.close()


def _check_http_bind(settings: Settings) -> None:
    """A RingcastError in one line when `--http` cannot be bound (an address this
    host lacks, a family it has not, a port in use), before anything listens."""
    family = socket.AF_INET6 if ip_version(settings.http_host) == IPV6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((settings.http_host, settings.http_port))
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise RingcastError(f"cannot serve HTTP on --http {settings.http_bind}: {why}") from None


def _run(coro: Any, event_loop: str = "auto") -> None:
    """Run `coro` to the end on a new event loop: uvloop where installed (`auto`), as
    `event_loop` (the setting) says. uvloop's libuv loop costs the dialer about a
    sixth less CPU per call than asyncio's (bench/RESULTS.md); `asyncio` is the
    fallback an operator can choose when chasing a loop-specific problem."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as runner:
            runner.run(coro)
    except RingcastError as exc:
        raise _fail(exc.message, 1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise _fail("event_loop is uvloop, but uvloop is not installed", 2) from None
        return None
    return uvloop.new_event_loop


@app.callback()
def _main(
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="RINGCAST_LOG_LEVEL", help="debug, info, warning")
    ] = "info",
    log_json: Annotated[
        bool,
        typer.Option("--log-json", envvar="RINGCAST_JSON_LOGS", help="one JSON object per line"),
    ] = False,
) -> None:
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise _fail(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from ringcast.logfmt import install_key_redaction

    install_key_redaction()  # SDES-SRTP keys never reach a log line
    if log_json:
        from ringcast.logfmt import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if level > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite's debug lines are every SQL statement with its parameters: request
    # bodies (SIP passwords) and webhook secrets. Never at any --log-level.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))


@app.command()
def serve(
    db: Db = None,
    http: Http = None,
    sip: Sip = None,
    sip_transport: SipTransport = None,
    rtp_ports: RtpPorts = None,
    public_ip: PublicIp = None,
    max_calls: MaxCalls = None,
    cps: Cps = None,
    config: ConfigFile = None,
    allow_private_urls: AllowPrivate = None,
    insecure_no_auth: InsecureNoAuth = None,
) -> None:
    """HTTP API and dialer in one process (default: SQLite ./ringcast.db)."""
    settings = _settings(**locals())
    hook = _dialer_hook(settings, required=False)
    _run(_serve(settings, [hook] if hook else []), settings.event_loop)


@app.command()
def api(
    db: Db = None,
    http: Http = None,
    sip: Sip = None,
    sip_transport: SipTransport = None,
    rtp_ports: RtpPorts = None,
    public_ip: PublicIp = None,
    max_calls: MaxCalls = None,
    cps: Cps = None,
    config: ConfigFile = None,
    allow_private_urls: AllowPrivate = None,
    insecure_no_auth: InsecureNoAuth = None,
) -> None:
    """HTTP API only (needs --db); calls wait for a `ringcast dialer`."""
    settings = _settings(require=("db",), **locals())
    _run(_serve(settings, []), settings.event_loop)


async def _dial(settings: Settings, hook: LifespanHook) -> None:
    from starlette.datastructures import State

    from ringcast.store.db import store_for

    store = store_for(settings)
    try:
        await store.migrate()
        state = State()
        state.store = store
        state.settings = settings
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with hook(state):
                heap.settle()
                logger.info("dialer running; SIGTERM stops it")
                await stop.wait()
                logger.info("dialer stopping")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        await store.close()


@app.command()
def dialer(
    db: Db = None,
    http: Http = None,
    sip: Sip = None,
    sip_transport: SipTransport = None,
    rtp_ports: RtpPorts = None,
    public_ip: PublicIp = None,
    max_calls: MaxCalls = None,
    cps: Cps = None,
    config: ConfigFile = None,
    allow_private_urls: AllowPrivate = None,
) -> None:
    """Dialer only (needs --db): claims queued calls from the database and places them."""
    settings = _settings(require=("db",), **locals())
    hook = _dialer_hook(settings, required=True)
    if hook is not None:
        _run(_dial(settings, hook), settings.event_loop)


# --- ringcast keys -------------------------------------------------------------------------

keys_app = typer.Typer(
    help="API keys (stored in --db): create, list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _keys_db(db: str | None) -> str:
    return _settings(require=("db",), db=db).db


async def _with_store(db: str, action: Callable[[Any], Any]) -> Any:
    from ringcast.store.db import open_store

    store = open_store(db)
    try:
        await store.migrate()
        return await action(store)
    finally:
        await store.close()


def _key_json(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "tenant": info.tenant,
        "key_prefix": info.key_prefix,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "rate_limit": info.rate_limit,
        "allow": {k: list(v) for k, v in info.allow.items()},
        "operator": info.operator,
    }


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="a label for the key")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="tenant (default: the key is its own tenant)")
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="POST requests per minute (default: no limit)")
    ] = None,
    allow_host: Annotated[
        list[str] | None, typer.Option("--allow-host", help="recipient host it may call")
    ] = None,
    allow_domain: Annotated[
        list[str] | None, typer.Option("--allow-domain", help="recipient domain (and subdomains)")
    ] = None,
    allow_prefix: Annotated[
        list[str] | None, typer.Option("--allow-prefix", help="recipient user-part prefix")
    ] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="may edit the install-wide do-not-call list")
    ] = False,
    db: Db = None,
    as_json: AsJson = False,
) -> None:
    """Create a key; prints the key and its webhook signing secret once (only hashes are kept).

    What was made while the server had no key belongs to the tenant `default`:
    create the key with `--tenant default` to see it."""
    from ringcast.store.keys import create_key

    allow = {
        "hosts": allow_host or [],
        "domains": allow_domain or [],
        "prefixes": allow_prefix or [],
    }

    async def create(store: Any) -> Any:
        return await create_key(
            store, name, tenant=tenant, rate_limit=rate, allow=allow, operator=operator
        )

    url = _keys_db(db)
    created: list[Any] = []

    async def run() -> None:
        created.append(await _with_store(url, create))

    _run(run())
    made = created[0]
    if as_json:
        out = {"key": made.key, "webhook_secret": made.webhook_secret, **_key_json(made.info)}
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo("API key created. The key and its webhook secret are shown only now:")
    typer.echo(f"key:            {made.key}")
    typer.echo(f"webhook_secret: {made.webhook_secret}")
    typer.echo(f"id:             {made.info.id}")
    typer.echo(f"tenant:         {made.info.tenant}")


@keys_app.command("list")
def keys_list(db: Db = None, as_json: AsJson = False) -> None:
    """List keys (prefix, tenant, limits; never the key or its secret)."""
    from ringcast.store.keys import list_keys

    url = _keys_db(db)
    found: list[Any] = []

    async def run() -> None:
        found.extend(await _with_store(url, list_keys))

    _run(run())
    if as_json:
        typer.echo(json.dumps([_key_json(k) for k in found], indent=2))
        return
    for k in found:
        state = "revoked" if k.revoked_at else "active"
        rate_text = f"{k.rate_limit:g}/min" if k.rate_limit else "-"
        allow = ";".join(f"{kind}={','.join(v)}" for kind, v in k.allow.items()) or "-"
        typer.echo(
            f"{k.id}  {k.key_prefix}...  {state:7}  tenant={k.tenant}  name={k.name}  "
            f"rate={rate_text}  allow={allow}{'  operator' if k.operator else ''}"
        )


@keys_app.command("revoke")
def keys_revoke(
    ident: Annotated[str, typer.Argument(help="key id (or a unique id prefix, or its name)")],
    db: Db = None,
) -> None:
    """Revoke a key: running servers refuse it within a few seconds."""
    from ringcast.store.keys import revoke_key

    url = _keys_db(db)
    done: list[Any] = []

    async def revoke(store: Any) -> Any:
        return await revoke_key(store, ident)

    async def run() -> None:
        done.append(await _with_store(url, revoke))

    _run(run())
    if done[0] is None:
        raise _fail(f"no API key {ident!r}", 1)
    typer.echo(f"revoked {done[0].id} ({done[0].name})")


# --- ringcast dnc -------------------------------------------------------------------------

dnc_app = typer.Typer(
    help="Do-not-call lists (stored in --db): the install-wide list, or --tenant's.",
    no_args_is_help=True,
)
app.add_typer(dnc_app, name="dnc")
DncTenant = Annotated[
    str | None,
    typer.Option("--tenant", help="a tenant's list (default: the install-wide list)"),
]


def _dnc_owner(tenant: str | None) -> str:
    from ringcast.store.dnc import INSTALL_WIDE

    if tenant is None:
        return INSTALL_WIDE
    if not tenant.strip():
        raise _fail("--tenant must not be blank")
    return tenant.strip()


def _dnc_run(db: str | None, action: Callable[[Any], Any]) -> Any:
    url = _keys_db(db)
    out: list[Any] = []

    async def run() -> None:
        out.append(await _with_store(url, action))

    _run(run())
    return out[0]


@dnc_app.command("add")
def dnc_add(
    entries: Annotated[list[str], typer.Argument(help="numbers or users: +15550100001, alice")],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Add numbers or users (sip:/tel: URIs are reduced to their number or user)."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)
    keys = [dnc.normalize(e) for e in entries]
    if not all(keys):
        raise _fail("an entry must hold a number or a user name")
    added = _dnc_run(db, lambda store: dnc.add_entries(store, owner, entries))
    typer.echo(f"added {added} of {len(set(keys))} ({', '.join(dict.fromkeys(keys))})")


@dnc_app.command("remove")
def dnc_remove(
    entries: Annotated[list[str], typer.Argument(help="numbers or users to remove")],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Remove numbers or users; exit 1 when one was not listed."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)

    async def remove(store: Any) -> list[str]:
        return [e for e in entries if not await dnc.remove_entry(store, owner, e)]

    missing = _dnc_run(db, remove)
    typer.echo(f"removed {len(entries) - len(missing)}")
    if missing:
        raise _fail(f"not on the list: {', '.join(missing)}", 1)


@dnc_app.command("list")
def dnc_list(tenant: DncTenant = None, db: Db = None, as_json: AsJson = False) -> None:
    """Print the list, one entry a line (with the time it was added)."""
    from ringcast.store import dnc

    owner = _dnc_owner(tenant)

    async def read(store: Any) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        after = None
        while True:
            page = await dnc.list_entries(store, owner, after=after, limit=10_000)
            rows.extend(page)
            if len(page) < 10_000:
                return rows
            after = page[-1][0]

    rows = _dnc_run(db, read)
    if as_json:
        typer.echo(json.dumps([{"entry": e, "created_at": t} for e, t in rows], indent=2))
        return
    for entry, created in rows:
        typer.echo(f"{entry}\t{created}")


_DNC_COLUMNS = ("number", "entry", "to", "phone", "user")  # by preference


@dnc_app.command("import")
def dnc_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: numbers or users in the first column, or in a column "
            "headed number, entry, to, phone or user"
        ),
    ],
    tenant: DncTenant = None,
    db: Db = None,
) -> None:
    """Add every number or user of a CSV file (a header row is recognised and skipped)."""
    import csv

    from ringcast.store import dnc

    owner = _dnc_owner(tenant)
    try:
        with file.open(newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(f"cannot read {file}: {exc}") from None
    column = 0
    if rows:  # a header row names the column: number, entry, to, phone or user
        header = [c.strip().lower() for c in rows[0]]
        named = [header.index(c) for c in _DNC_COLUMNS if c in header]
        if named:
            column, rows = named[0], rows[1:]
    entries = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    bad = [e for e in entries if not dnc.normalize(e)]
    if bad:
        raise _fail(f"{file}: {len(bad)} rows hold no number or user (first: {bad[0][:64]!r})")
    added = _dnc_run(db, lambda store: dnc.add_entries(store, owner, entries))
    typer.echo(f"imported {len(entries)} rows: {added} new entries")


@app.command()
def call(
    uri: Annotated[
        str,
        typer.Argument(
            help="SIP URI to call, e.g. sip:alice@192.0.2.1:5060, or a number "
            "(+15550100001, tel:...) dialled through --trunk or the config's default_trunk"
        ),
    ],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[str | None, typer.Option("--say", help="text to speak")] = None,
    from_: Annotated[str, typer.Option("--from", help="From user or SIP URI")] = "ringcast",
    ring_timeout: Annotated[float, typer.Option("--ring-timeout", help="seconds")] = 30.0,
    max_duration: Annotated[float, typer.Option("--max-duration", help="seconds")] = 3600.0,
    machine_detection: Annotated[
        str | None,
        typer.Option(
            "--machine-detection",
            help="detect | drop | hangup: tell a person from a machine (record: answered_by)",
        ),
    ] = None,
    trunk: Annotated[
        str | None, typer.Option("--trunk", help="trunk of the config file to call through")
    ] = None,
    country: Annotated[
        str | None, typer.Option("--country", help="country of a national number, e.g. US")
    ] = None,
    srtp: Annotated[
        str,
        typer.Option("--srtp", help="off | optional | required: SDES-SRTP media (record: srtp)"),
    ] = "off",
    sip: Sip = None,
    sip_transport: SipTransport = None,
    rtp_ports: RtpPorts = None,
    public_ip: PublicIp = None,
    config: ConfigFile = None,
) -> None:
    """Place one call from the terminal and print its record (no server, no database)."""
    if play is None and say is None:
        raise _fail("give --play URL and/or --say TEXT")
    if machine_detection not in (None, "detect", "drop", "hangup"):
        raise _fail("--machine-detection is detect, drop or hangup")
    if srtp not in ("off", "optional", "required"):
        raise _fail("--srtp is off, optional or required")
    settings = _settings(
        sip=sip,
        sip_transport=sip_transport,
        rtp_ports=rtp_ports,
        public_ip=public_ip,
        config=config,
    )
    if trunk is not None and trunk not in settings.trunks:
        raise _fail(f"--trunk {trunk}: no [trunks.{trunk}] table in the config file (--config)")
    try:
        from ringcast.dialer.single import run_single_call
    except ImportError as exc:
        raise _fail(f"single calls are not available in this build ({exc})") from None
    from ringcast.dialer.call import check_addresses

    try:
        check_addresses(settings)
    except RingcastError as exc:
        raise _fail(exc.message, 1) from None
    record: dict[str, Any] = {}

    async def one() -> None:
        record.update(
            await run_single_call(
                settings,
                uri,
                play=play,
                say=say,
                from_=from_,
                ring_timeout=ring_timeout,
                max_duration=max_duration,
                machine_detection=machine_detection,
                trunk=trunk,
                country=country,
                sip_options={"srtp": srtp} if srtp != "off" else None,
            )
        )

    _run(one(), settings.event_loop)
    typer.echo(json.dumps(record, indent=2))
    if record.get("result") == "failed":
        raise typer.Exit(1)


ApiKey = Annotated[
    str | None,
    typer.Option("--key", envvar="RINGCAST_KEY", help="API key (sent as Authorization: Bearer)"),
]


def _client(url: str, key: str | None) -> Any:
    from ringcast.client import Client

    return Client(url, key)


def _client_errors() -> Any:
    """Turn a ClientError into one `ringcast: error: ...` line and exit code 1."""
    from ringcast.client import ClientError

    @contextlib.contextmanager
    def wrap() -> Any:
        try:
            yield
        except ClientError as exc:
            raise _fail(exc.message, 1) from None

    return wrap()


@app.command()
def broadcast(
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV with a header row: to (SIP URI, tel: URI or phone number), optional "
            "from and timezone; "
            "other columns become say variables ({name})",
            metavar="RECIPIENTS.csv",
        ),
    ],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[
        str | None, typer.Option("--say", help='text to speak, e.g. "Hello {name}"')
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="From user, SIP URI or E.164 caller ID")
    ] = None,
    ring_timeout: Annotated[
        int | None, typer.Option("--ring-timeout", help="seconds of ringing before no-answer")
    ] = None,
    trunk: Annotated[
        str | None, typer.Option("--trunk", help="the server's trunk numbers go through")
    ] = None,
    country: Annotated[
        str | None, typer.Option("--country", help="country of national numbers, e.g. US")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="seconds between polls")] = 1.0,
    priority: Priority = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Submit a broadcast from a CSV, show live progress until its report is ready,
    then a summary table of outcomes."""
    import uuid

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from ringcast import client as rc

    if (play is None) == (say is None):
        raise _fail("give exactly one of --play URL or --say TEXT")
    if interval <= 0:
        raise _fail("--interval must be above 0")
    with _client_errors(), _client(url, key) as api:
        recipients = rc.read_recipients(csv_file)
        body = rc.build_request(
            recipients,
            play=play,
            say=say,
            from_=from_,
            ring_timeout=ring_timeout,
            priority=priority,
            trunk=trunk,
            country=country,
        )
        request_id = api.submit(body, idempotency_key=str(uuid.uuid4()))
        err = Console(stderr=True)
        err.print(f"request [bold]{request_id}[/] accepted: {len(recipients)} calls")
        progress = Progress(
            TextColumn("[bold]calls"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        try:
            with progress:
                task = progress.add_task("calls", total=len(recipients), counts="queued")

                def show(p: dict[str, Any]) -> None:
                    progress.update(
                        task,
                        total=p["total"],
                        completed=p["done"],
                        counts=rc.counts_text(p["counts"]),
                    )

                final = rc.wait_until_done(api, request_id, show, interval=interval)
        except KeyboardInterrupt:
            err.print(f"still running: ringcast status {request_id}")
            raise typer.Exit(130) from None
        summary = rc.summarize(api.iter_records(final["report_id"]))
        table = Table()
        table.add_column("outcome")
        table.add_column("calls", justify="right")
        table.add_column("share", justify="right")
        for outcome, n in summary.rows():
            table.add_row(outcome, str(n), f"{100 * n / max(summary.total, 1):.0f}%")
        table.add_section()
        table.add_row("total", str(summary.total), "100%")
        out = Console(width=max(Console().width, 60))
        out.print(f"request {request_id}: {summary.total} calls, report ready")
        out.print(table)
        out.print(
            f"connected seconds: {summary.connected_seconds}"
            f" · pace: {final['calls_per_minute']:.1f} calls/min"
        )
        out.print(f"report: ringcast report {final['report_id']} --format csv > report.csv")


Priority = Annotated[
    int | None,
    typer.Option(
        "--priority", min=1, max=10, help="share of the channels against other requests, 1-10"
    ),
]


@app.command()
def pause(
    request_id: Annotated[str, typer.Argument(help="request id")],
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Stop dialing a request's queued calls (POST /voice/call/ID/pause); live calls finish."""
    with _client_errors(), _client(url, key) as api:
        answer = api.pause(request_id)
        typer.echo(f"request {request_id} paused: {answer['queued']} calls wait")


@app.command()
def resume(
    request_id: Annotated[str, typer.Argument(help="request id")],
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Dial a paused request's queued calls again (POST /voice/call/ID/resume)."""
    with _client_errors(), _client(url, key) as api:
        answer = api.pause(request_id, resume=True)
        typer.echo(f"request {request_id} resumed: {answer['queued']} calls queued")


@app.command()
def replay(
    request_id: Annotated[str, typer.Argument(help="the earlier request's id")],
    play: Annotated[str | None, typer.Option("--play", help="URL of audio to play")] = None,
    say: Annotated[
        str | None, typer.Option("--say", help='text to speak, e.g. "Hello {name}"')
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="only recipients with these outcomes, e.g. busy,no-answer"),
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="From user or SIP URI")] = None,
    priority: Priority = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Call a request's recipients again with a new message
    (POST /voice/call/ID/replay); prints the new request id."""
    import uuid

    from ringcast import client as rc

    if (play is None) == (say is None):
        raise _fail("give exactly one of --play URL or --say TEXT")
    body = rc.build_request(None, play=play, say=say, from_=from_, priority=priority)
    if only is not None:
        body["only"] = [o.strip() for o in only.split(",") if o.strip()]
    with _client_errors(), _client(url, key) as api:
        typer.echo(api.replay(request_id, body, idempotency_key=str(uuid.uuid4())))


@app.command()
def status(
    id: Annotated[str, typer.Argument(help="request id or call id")],
    json_: Annotated[
        bool | None,
        typer.Option("--json/--text", help="raw JSON (default when stdout is not a terminal)"),
    ] = None,
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Print the status of a request or a call (GET /voice/call/status/ID)."""
    from ringcast import client as rc

    with _client_errors(), _client(url, key) as api:
        body = api.status(id)
        as_json = json_ if json_ is not None else not sys.stdout.isatty()
        if as_json:
            typer.echo(json.dumps(body, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, box=None)
        if "report" in body:
            ref = body["report"]
            p = api.progress(id)
            table.add_row("request", id)
            table.add_row("status", f"{p['status']} (report {ref['status']})")
            table.add_row("done", f"{ref['done']} / {ref['total']}")
            table.add_row("calls", rc.counts_text(p["counts"]))
            table.add_row("calls/min", f"{p['calls_per_minute']:.1f}")
            table.add_row("report", f"{ref['id']} ({ref['location']})")
        else:
            for name, value in body.get("record", {}).items():
                table.add_row(name, str(value))
        Console().print(table)


@app.command()
def report(
    id: Annotated[str, typer.Argument(help="report id (from status), or a request id")],
    format: Annotated[str, typer.Option("--format", help="json, csv or ndjson")] = "json",
    url: Url = DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Print a report (GET /report/ID), streamed: `--format csv > out.csv`."""
    if format not in ("json", "csv", "ndjson"):
        raise _fail("--format must be json, csv or ndjson")
    with _client_errors(), _client(url, key) as api:
        out = sys.stdout
        for chunk in api.stream_report(api.report_id_for(id), format):
            out.write(chunk)
        if format == "json":
            out.write("\n")
        out.flush()


app.add_typer(recordings_app, name="recordings")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(ringcast.__version__)


def main() -> None:
    """Console-script entry point."""
    with contextlib.suppress(BrokenPipeError):
        app()
