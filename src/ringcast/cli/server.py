"""The server commands: `serve` (API and dialer), `api`, `dialer`; binds checked at
start, signals drained, the start-up heap settled when the process is ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ringcast import heap
from ringcast.cli.common import (
    AllowPrivate,
    ConfigFile,
    Cps,
    Db,
    Http,
    InsecureNoAuth,
    LifespanHook,
    MaxCalls,
    PublicIp,
    RtpPorts,
    Sip,
    SipTransport,
    fail,
    run,
    settings_from,
)
from ringcast.config import Settings
from ringcast.errors import RingcastError
from ringcast.inet import IPV6, ip_version

logger = logging.getLogger(__name__)


def _dialer_hook(settings: Settings, *, required: bool) -> LifespanHook | None:
    try:
        from ringcast.dialer.service import dialer_lifespan
    except ImportError as exc:
        if required:
            raise fail(f"the dialer is not available in this build ({exc})") from None
        logger.warning("dialer not available (%s): serving the API only, calls stay queued", exc)
        return None
    from ringcast.dialer.call import check_addresses

    try:
        check_addresses(settings)  # one line at start, not a traceback from the lifespan
    except RingcastError as exc:
        raise fail(exc.message, 1) from None
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
    settings = settings_from(**locals())
    hook = _dialer_hook(settings, required=False)
    run(_serve(settings, [hook] if hook else []), settings.event_loop)


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
    settings = settings_from(require=("db",), **locals())
    run(_serve(settings, []), settings.event_loop)


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
    settings = settings_from(require=("db",), **locals())
    hook = _dialer_hook(settings, required=True)
    if hook is not None:
        run(_dial(settings, hook), settings.event_loop)
