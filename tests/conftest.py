"""Shared fixtures: free loopback ports, real PostgreSQL databases, the SIPp binary.

With CI=true a missing SIPp, baresip, Kamailio or PostgreSQL fails the run
instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ringcast.sip import SipEndpoint
    from ringcast.store.db import Store

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("RINGCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 that is free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s2:
                s2.bind(("127.0.0.1", port))
        except OSError:
            continue
        return int(port)
    raise RuntimeError("no free port on 127.0.0.1")


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} not available")


def require_module(name: str, what: str) -> None:
    """Import `name` or skip (fail under CI=true, where scripts/test installs it)."""
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        _missing(what)


@pytest.fixture(scope="session")
def sipp_bin() -> str:
    path = shutil.which("sipp")
    if path is None:
        _missing("sipp (Debian package sip-tester)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def baresip_bin() -> str:
    """baresip, the real SIP callee of tests/e2e/test_real_peers.py (scripts/test installs it)."""
    path = shutil.which("baresip")
    if path is None:
        _missing("baresip (Debian package baresip-core)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def kamailio_bin() -> str:
    """Kamailio, the real SIP proxy of tests/e2e/test_real_peers.py (scripts/test installs it)."""
    path = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if path is None:
        _missing("kamailio (Debian package kamailio)")
    assert path is not None
    return path


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the machine's PostgreSQL (fails under CI when it is down)."""
    if not _pg_reachable():
        _missing("PostgreSQL at 127.0.0.1:5432")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Returned as a `postgresql://` URL (ringcast's --db form).
    """
    import asyncio
    import concurrent.futures

    import asyncpg  # type: ignore[import-untyped]

    name = "ringcast_t_" + uuid.uuid4().hex[:12]
    admin = pg_server

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def admin_sql(sql: str) -> None:
        # In a thread of its own: this fixture may be set up inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run(sql)).result()

    admin_sql(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a fresh SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ringcast.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on `db_url` (both backends)."""
    from ringcast.store.db import open_store

    s = open_store(db_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def rtp_sink() -> Iterator[str]:
    """A UDP socket on 127.0.0.1 that receives (and ignores) the RTP ringcast
    sends; its port goes into SIPp's SDP answer (`-key rtp_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield str(s.getsockname()[1])


@pytest.fixture
async def endpoint(sipp_bin: str) -> AsyncIterator[SipEndpoint]:
    """A started SIP endpoint on 127.0.0.1 with fast timers (T1 50 ms, T2 400 ms,
    as on loopback), for tests whose callee is SIPp."""
    from ringcast.sip import SipEndpoint

    ep = SipEndpoint(host="127.0.0.1", port=0, t1=0.05, t2=0.4)
    await ep.start()
    try:
        yield ep
    finally:
        await ep.close()
