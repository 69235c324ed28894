"""Shared fixtures: free loopback ports, real PostgreSQL databases, the SIPp binary.

With CI=true a missing SIPp, baresip, Kamailio or PostgreSQL fails the run
instead of skipping it.

Markers follow the real peers a test needs, set at collection from what the test
uses (see PEER_FIXTURES), so `-m "not sipp"` and `-m "not postgres"` deselect
every such test; a test that starts SIPp or gets a PostgreSQL database without
its marker fails.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from media_stream_lib import RtpSink

    from ringcast.rtp import PortAllocator, RtpClock
    from ringcast.sip import SipEndpoint
    from ringcast.store.db import Store

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("RINGCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TESTS = Path(__file__).parent

# --- markers from the peers a test uses ---------------------------------------------------

# A test whose fixture closure holds one of these fixtures needs the peer and
# carries its marker. (A marker added while a fixture is set up comes too late
# for `-m` to deselect the test: markers are applied here, at collection.)
PEER_FIXTURES: dict[str, frozenset[str]] = {
    "sipp": frozenset({"sipp_bin"}),
    "postgres": frozenset({"pg_server", "pg_url"}),
    "baresip": frozenset({"baresip_bin"}),
    "kamailio": frozenset({"kamailio_bin"}),
}
# Parametrized fixtures whose parameter picks the peer: (fixture, param) -> marker.
PEER_PARAMS: dict[tuple[str, str], str] = {("db_url", "postgresql"): "postgres"}
# Names that start the peer when a test module's code uses them: a test (or a
# fixture it uses) gets the marker when its function uses one, directly or
# through functions of its own module.
PEER_NAMES: dict[str, frozenset[str]] = {"sipp": frozenset({"SippUas"})}


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _names_used(node: ast.AST) -> set[str]:
    """Names and attributes a definition uses, annotations left out (a type is no use)."""
    annotations: set[int] = set()
    for sub in ast.walk(node):
        hint = getattr(sub, "returns" if isinstance(sub, _FUNCTIONS) else "annotation", None)
        if isinstance(hint, ast.AST):
            annotations.update(id(n) for n in ast.walk(hint))
    used: set[str] = set()
    for sub in ast.walk(node):
        if id(sub) in annotations:
            continue
        if isinstance(sub, ast.Name):
            used.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            used.add(sub.attr)
    return used


@functools.cache
def _defs_using(path: Path, names: frozenset[str]) -> frozenset[str]:
    """The functions and classes of a file that use `names`, directly or through
    other functions and classes of the same file."""
    uses: dict[str, set[str]] = {}
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            uses.setdefault(node.name, set()).update(_names_used(node))
    found: set[str] = set()
    wanted = set(names)
    while True:
        more = {name for name, used in uses.items() if name not in found and used & wanted}
        if not more:
            return frozenset(found)
        found |= more
        wanted |= more


def _uses_names(func: object, names: frozenset[str]) -> bool:
    func = inspect.unwrap(func)  # type: ignore[arg-type]
    try:
        source = inspect.getsourcefile(func)  # type: ignore[arg-type]
    except TypeError:
        return False
    if source is None or not Path(source).is_relative_to(TESTS):
        return False
    return getattr(func, "__name__", None) in _defs_using(Path(source), names)


def peers_of(item: pytest.Item) -> set[str]:
    """The markers of the real peers `item` needs, from its fixtures, its
    parameters and its module's code."""
    closure = set(getattr(item, "fixturenames", ()))
    found = {marker for marker, fixtures in PEER_FIXTURES.items() if closure & fixtures}
    params = getattr(getattr(item, "callspec", None), "params", {})
    found |= {m for (name, value), m in PEER_PARAMS.items() if params.get(name) == value}
    funcs: list[object] = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for name in closure:
        funcs += [d.func for d in getattr(info, "name2fixturedefs", {}).get(name, ())]
    for marker, names in PEER_NAMES.items():
        if any(f is not None and _uses_names(f, names) for f in funcs):
            found.add(marker)
    return found


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(peers_of(item)):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def pytest_runtest_setup(item: pytest.Item) -> None:
    import sipp

    sipp.current_test_marked = item.get_closest_marker("sipp") is not None


def pytest_runtest_teardown(item: pytest.Item) -> None:
    import sipp

    sipp.current_test_marked = None


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


def missing(what: str) -> NoReturn:
    """Skip the test for want of `what`, or fail it under CI=true (where scripts/test
    installs every peer): the one place a test may skip."""
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true (scripts/test installs it)")
    pytest.skip(f"{what} not available")


def require_module(name: str, what: str) -> None:
    """Import `name` or skip (fail under CI=true, where scripts/test installs it)."""
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        missing(what)


@pytest.fixture(scope="session")
def sipp_bin() -> str:
    path = shutil.which("sipp")
    if path is None:
        missing("sipp (Debian package sip-tester)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def baresip_bin() -> str:
    """baresip, the real SIP callee of tests/e2e/test_real_peers.py (scripts/test installs it)."""
    path = shutil.which("baresip")
    if path is None:
        missing("baresip (Debian package baresip-core)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def kamailio_bin() -> str:
    """Kamailio, the real SIP proxy of tests/e2e/test_real_peers.py (scripts/test installs it)."""
    path = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if path is None:
        missing("kamailio (Debian package kamailio)")
    assert path is not None
    return path


def _pg_reachable() -> bool:
    where = urlsplit(PG_ADMIN_URL)
    address = (where.hostname or "127.0.0.1", where.port or 5432)
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the machine's PostgreSQL (fails under CI when it is down)."""
    if not _pg_reachable():
        missing("PostgreSQL at 127.0.0.1:5432")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Returned as a `postgresql://` URL (ringcast's --db form).
    """
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(
            "this test gets a PostgreSQL database without the postgres marker: "
            "name how it does in PEER_FIXTURES / PEER_PARAMS (tests/conftest.py)"
        )
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


# --- media sessions on real sockets (tests/integration/media; a module may override) ----


@pytest.fixture
async def clock() -> AsyncIterator[RtpClock]:
    """The shared 20 ms RTP clock, running."""
    from ringcast.rtp import RtpClock

    c = RtpClock()
    c.start()
    yield c
    await c.stop()


@pytest.fixture
def allocator() -> PortAllocator:
    """RTP ports from a random even base, so concurrent tests rarely meet."""
    import random

    from ringcast.rtp import PortAllocator

    base = random.randrange(40000, 59000, 2)
    return PortAllocator(base, base + 400)


@pytest.fixture
async def sink() -> AsyncIterator[RtpSink]:
    """An RTP receiver on 127.0.0.1 that keeps what it gets (media_stream_lib)."""
    from media_stream_lib import RtpSink

    s = RtpSink.open()
    yield s
    s.close()


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
