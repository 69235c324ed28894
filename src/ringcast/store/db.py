"""The database handle: one async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg).

SQLite is tuned for one machine with several writers: WAL journal, a busy
timeout, foreign keys on, and every transaction opened with `BEGIN IMMEDIATE`
so that read-modify-write sequences (claiming a call, cancelling a request)
take the write lock up front instead of failing with SQLITE_BUSY on upgrade.
Long read-only scans (report streaming) use :meth:`Store.session` with
``readonly=True``, which opens a plain deferred transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ringcast.errors import ConfigError, RingcastError, StoreError

if TYPE_CHECKING:
    from ringcast.config import Settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000  # milliseconds a writer waits for the lock
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x72696E67  # pg_advisory_xact_lock key: "ring"
_READONLY = "ringcast_readonly"

Dialect = Literal["sqlite", "postgresql"]


def to_async_url(url: str) -> str:
    """`sqlite:///x` -> `sqlite+aiosqlite:///x`, `postgresql://` -> `postgresql+asyncpg://`."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        raise ConfigError("db is not a database URL", field="db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(f"db: unsupported database {backend!r}", field="db")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (a persistent setting, so usually a no-op).

    Changing the journal mode needs an exclusive lock and SQLite reports
    SQLITE_BUSY at once, without its busy handler, when another connection
    opening the same fresh file holds a lock. Retry for up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0] == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get(_READONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """An open database: engine, sessions, migrations.

    `session()` yields an :class:`AsyncSession` (use ``async with store.session()
    as s, s.begin(): ...``). On SQLite a session's transaction starts with
    BEGIN IMMEDIATE unless ``readonly=True``.
    """

    def __init__(self, url: str, engine: AsyncEngine, dialect: Dialect) -> None:
        self.url = url
        self.engine = engine
        self.dialect: Dialect = dialect
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._ro_sessions = async_sessionmaker(
            engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )

    def session(self, *, readonly: bool = False) -> AsyncSession:
        return (self._ro_sessions if readonly else self._sessions)()

    async def ping(self) -> None:
        """SELECT 1, or StoreError."""
        try:
            async with self.engine.execution_options(**{_READONLY: True}).connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"database unreachable: {type(exc).__name__}") from exc

    async def migrate(self, revision: str = "head") -> None:
        """Run Alembic `upgrade` to `revision`, serialized across processes."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade, revision)
        logger.info("database migrated to %s (%s)", revision, self.dialect)

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: sa.Connection | None = None) -> Any:
    """An Alembic Config for the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: sa.Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def open_store(
    url: str, *, echo: bool = False, pool_size: int = 5, pool_overflow: int = 10
) -> Store:
    """Open (lazily connect) the database at `url` (`sqlite:///…` or `postgresql://…`).

    On PostgreSQL the process keeps `pool_size` connections and opens up to
    `pool_overflow` more at peaks (`RINGCAST_DB_POOL_SIZE`, `RINGCAST_DB_POOL_OVERFLOW`).
    """
    async_url = to_async_url(url)
    backend = make_url(async_url).get_backend_name()
    kwargs: dict[str, Any] = {"echo": echo}
    if backend == "sqlite":
        database = make_url(async_url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_async_engine(async_url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return Store(url, engine, "sqlite")
    engine = create_async_engine(
        async_url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        **kwargs,
    )
    return Store(url, engine, "postgresql")


async def raw_driver(connection: AsyncConnection) -> Any:
    """The DBAPI driver's own connection (asyncpg / aiosqlite) under `connection`."""
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise StoreError("the database connection is closed")
    return driver


async def db_now(s: AsyncSession) -> datetime:
    """Now, by the clock every node of a fleet shares: PostgreSQL's (`now()`, the
    transaction's start) there, this process's on SQLite (one machine). Heartbeat
    expiry and the fleet's token buckets compare times written by different
    machines, which must not depend on how well their clocks agree."""
    bind = s.get_bind()
    if bind.dialect.name == "postgresql":
        value = (await s.execute(sa.select(sa.func.now()))).scalar_one()
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


DRIVER_ERRORS = (SQLAlchemyError, OSError)  # what the drivers raise, a lost database included
DB_ERRORS = (StoreError, *DRIVER_ERRORS)  # the same, once wrapped at the store boundary
# A database that cannot be reached (or SQLite's lock, busy): worth waiting out.
# A bad statement or value is not: retrying it gives the same error forever.
CONNECTION_ERRORS = (OperationalError, InterfaceError, OSError)


def lost_database(exc: BaseException) -> bool:
    """True when `exc`, or the error it wraps, is a CONNECTION_ERROR, or SQLAlchemy
    found the connection gone (`connection_invalidated`, whatever class it raised)."""
    return (
        isinstance(exc, CONNECTION_ERRORS)
        or isinstance(exc.__cause__, CONNECTION_ERRORS)
        or bool(getattr(exc, "connection_invalidated", False))
    )


class _Wrap:
    """Translate driver errors into StoreError at the store boundary."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, DRIVER_ERRORS) and not isinstance(exc, RingcastError):
            raise StoreError(f"database error: {type(exc).__name__}") from exc


wrap_errors = _Wrap


class Outage:
    """One warning when a loop that keeps retrying loses the database, one line
    when it is back: not a traceback on every pass while it is down."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.logger = logger
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self.logger.warning("%s: database unreachable (%s); retrying", self.what, exc)

    def ok(self) -> None:
        if self.down:
            self.down = False
            self.logger.info("%s: database reachable again", self.what)


def store_for(settings: Settings) -> Store:
    """The store a server process's settings name (`db`, `db_pool_size`, `db_pool_overflow`)."""
    return open_store(
        settings.db, pool_size=settings.db_pool_size, pool_overflow=settings.db_pool_overflow
    )
