"""The store on real SQLite files and real PostgreSQL databases."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from ringcast.errors import ConfigError, StoreError
from ringcast.store import Store, open_store, record_dict, to_async_url
from ringcast.store import requests as q
from ringcast.store.models import calls_table, requests_table


def calls(n: int) -> list[q.NewCall]:
    return [q.NewCall(to_uri=f"sip:u{i}@example.com", from_uri="me") for i in range(n)]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./ringcast.db", "sqlite+aiosqlite:///./ringcast.db"),
        ("sqlite:////var/lib/rc.db", "sqlite+aiosqlite:////var/lib/rc.db"),
        ("postgresql://u:p@db:5432/rc", "postgresql+asyncpg://u:p@db:5432/rc"),
        ("postgres://u@db/rc", "postgresql+asyncpg://u@db/rc"),
        ("postgresql+asyncpg://u@db/rc", "postgresql+asyncpg://u@db/rc"),
    ],
)
def test_to_async_url(url: str, expected: str) -> None:
    assert to_async_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@db/x", "not a url"])
def test_to_async_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        to_async_url(url)
    assert err.value.field == "db"


def test_dialect_names(tmp_path: Any) -> None:
    s = open_store(f"sqlite:///{tmp_path}/x.db")
    assert s.dialect == "sqlite"
    asyncio.run(s.close())
    p = open_store("postgresql://u@127.0.0.1:1/x")
    assert p.dialect == "postgresql"
    asyncio.run(p.close())


async def test_sqlite_pragmas(tmp_path: Any) -> None:
    s = open_store(f"sqlite:///{tmp_path}/sub/dir/rc.db")  # parent dirs are created
    try:
        async with s.engine.connect() as conn:
            assert (await conn.scalar(sa.text("PRAGMA journal_mode"))) == "wal"
            assert (await conn.scalar(sa.text("PRAGMA foreign_keys"))) == 1
            assert (await conn.scalar(sa.text("PRAGMA busy_timeout"))) >= 5000
    finally:
        await s.close()


async def test_sqlite_write_sessions_begin_immediate(tmp_path: Any) -> None:
    """A write session holds the write lock from its first statement (BEGIN IMMEDIATE);
    a read-only session does not."""
    path = tmp_path / "rc.db"
    s = open_store(f"sqlite:///{path}")
    await s.migrate()

    def try_write_lock() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    try:
        async with s.session() as session, session.begin():
            await session.execute(sa.select(sa.func.count()).select_from(calls_table))
            assert not await asyncio.to_thread(try_write_lock)
        assert await asyncio.to_thread(try_write_lock)
        async with s.session(readonly=True) as session, session.begin():
            await session.execute(sa.select(sa.func.count()).select_from(calls_table))
            assert await asyncio.to_thread(try_write_lock)
    finally:
        await s.close()


async def test_sqlite_concurrent_writers_wait_instead_of_failing(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/rc.db"
    stores = [open_store(url) for _ in range(4)]
    await stores[0].migrate()
    try:
        results = await asyncio.gather(
            *(
                q.create_request(st, body={}, calls=calls(200), body_hash=str(i))
                for i, st in enumerate(stores * 3)
            )
        )
        assert len({r.request_id for r in results}) == 12
        async with stores[0].engine.connect() as conn:
            n = await conn.scalar(sa.select(sa.func.count()).select_from(calls_table))
        assert n == 12 * 200
    finally:
        for st in stores:
            await st.close()


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_create_request_is_one_transaction(store: Store) -> None:
    bad = [*calls(3), q.NewCall(to_uri="x" * 600, from_uri="me")]  # longer than String(512)
    if store.dialect == "postgresql":
        with pytest.raises(StoreError):
            await q.create_request(store, body={}, calls=bad, body_hash="h")
        async with store.engine.connect() as conn:
            n_req = await conn.scalar(sa.select(sa.func.count()).select_from(requests_table))
            n_calls = await conn.scalar(sa.select(sa.func.count()).select_from(calls_table))
        assert (n_req, n_calls) == (0, 0)
    # a duplicate (request_id, seq) fails on every backend: nothing is kept
    with pytest.raises(StoreError):
        async with store.session() as s, s.begin():
            now = datetime.now(UTC)
            await s.execute(
                sa.insert(requests_table).values(
                    id="r", created_at=now, body={}, total=2, report_id="rep", body_hash="h"
                )
            )
            row = {
                "request_id": "r",
                "seq": 0,
                "to_uri": "sip:a@b",
                "from_uri": "me",
                "request_time": now,
                "not_before": now,
            }
            async with q.wrap_errors():
                await s.execute(sa.insert(calls_table), [{**row, "id": "a"}, {**row, "id": "b"}])
    async with store.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(requests_table)) == 0


async def test_idempotent_create(store: Store) -> None:
    first = await q.create_request(
        store, body={}, calls=calls(2), body_hash="h1", idempotency_key="k"
    )
    again = await q.create_request(
        store, body={}, calls=calls(2), body_hash="h1", idempotency_key="k"
    )
    assert first.created and not again.created
    assert (again.request_id, again.report_id) == (first.request_id, first.report_id)
    with pytest.raises(q.IdempotencyConflict):
        await q.create_request(store, body={}, calls=calls(2), body_hash="h2", idempotency_key="k")
    other_tenant = await q.create_request(
        store, body={}, calls=calls(1), body_hash="h1", idempotency_key="k", tenant="acme"
    )
    assert other_tenant.created


async def test_concurrent_idempotent_creates_store_one_request(store: Store) -> None:
    results = await asyncio.gather(
        *(
            q.create_request(store, body={}, calls=calls(50), body_hash="h", idempotency_key="k")
            for _ in range(5)
        )
    )
    assert len({r.request_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    async with store.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(calls_table)) == 50


async def test_100k_recipients_insert_quickly(store: Store) -> None:
    n = 100_000
    started = time.perf_counter()
    accepted = await q.create_request(store, body={"from": "me"}, calls=calls(n), body_hash="h")
    elapsed = time.perf_counter() - started
    assert elapsed < 60, elapsed
    info = await q.report_info(store, report_id=accepted.report_id)
    assert info is not None and (info.total, info.done, info.status) == (n, 0, "pending")
    seqs = [row.seq async for row in q.iter_report(store, accepted.request_id, after_seq=n - 5)]
    assert seqs == [n - 4, n - 3, n - 2, n - 1]


async def test_iter_report_keyset_batches(store: Store) -> None:
    accepted = await q.create_request(store, body={}, calls=calls(25), body_hash="h")
    rows = [r async for r in q.iter_report(store, accepted.request_id, batch=4)]
    assert [r.seq for r in rows] == list(range(25))
    rows = [r async for r in q.iter_report(store, accepted.request_id, after_seq=9, limit=6)]
    assert [r.seq for r in rows] == list(range(10, 16))


async def test_records_from_stored_rows_are_utc(store: Store) -> None:
    accepted = await q.create_request(store, body={}, calls=calls(1), body_hash="h")
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table).values(
                result="completed",
                setup_time=datetime(2018, 5, 2, 12, 15, 32, tzinfo=UTC),
                connect_time=datetime(2018, 5, 2, 15, 15, 45, tzinfo=_tz(3)),  # +03:00
                disconnect_time=datetime(2018, 5, 2, 12, 16, 2),  # naive = UTC
                disconnect_cause_code="200",
                disconnect_cause_text="OK",
                duration=17,
                answered=True,
            )
        )
    row = await q.first_call(store, accepted.request_id)
    assert row is not None
    assert row.setup_time.tzinfo is not None
    rec = record_dict(row)
    assert rec["setup_time"] == "2018-05-02 12:15:32"
    assert rec["connect_time"] == "2018-05-02 12:15:45"
    assert rec["disconnect_time"] == "2018-05-02 12:16:02"


def _tz(hours: int) -> Any:
    from datetime import timedelta, timezone

    return timezone(timedelta(hours=hours))


def test_record_dict_order_and_omissions() -> None:
    t = datetime(2018, 5, 2, 12, 15, 32, tzinfo=UTC)
    row = SimpleNamespace(
        id="b9e8",
        result="completed",
        request_time=t,
        to_uri="sip:999777@192.168.1.1:5060",
        from_uri="me",
        setup_time=t,
        connect_time=None,
        disconnect_time=datetime(2018, 5, 2, 12, 16, 42, tzinfo=UTC),
        disconnect_cause_code="486",
        disconnect_cause_text="User Busy",
        duration=0,
        answered=False,
        outcome="busy",
        attempt=1,
        codec=None,
        error=None,
        dtmf=None,
    )
    assert record_dict(row) == {
        "type": "voice",
        "id": "b9e8",
        "result": "completed",
        "request_time": "2018-05-02 12:15:32",
        "to": "sip:999777@192.168.1.1:5060",
        "from": "me",
        "setup_time": "2018-05-02 12:15:32",
        "disconnect_time": "2018-05-02 12:16:42",
        "disconnect_cause_code": "486",
        "disconnect_cause_text": "User Busy",
        "duration": 0,
        "answered": False,
        "outcome": "busy",
        "attempt": 1,
        "attempts": [
            {
                "attempt": 1,
                "setup_time": "2018-05-02 12:15:32",
                "disconnect_time": "2018-05-02 12:16:42",
                "disconnect_cause_code": "486",
                "disconnect_cause_text": "User Busy",
                "outcome": "busy",
            }
        ],
    }
    assert list(record_dict(row)) == [
        "type",
        "id",
        "result",
        "request_time",
        "to",
        "from",
        "setup_time",
        "disconnect_time",
        "disconnect_cause_code",
        "disconnect_cause_text",
        "duration",
        "answered",
        "outcome",
        "attempt",
        "attempts",
    ]
    queued = SimpleNamespace(
        **{
            **vars(row),
            "result": "queued",
            "setup_time": None,
            "disconnect_time": None,
            "disconnect_cause_code": None,
            "disconnect_cause_text": None,
            "outcome": None,
            "codec": "PCMA",
            "dtmf": "12",
            "error": "media fetch failed",
        }
    )
    rec = record_dict(queued)
    assert "setup_time" not in rec and "disconnect_cause_code" not in rec
    assert (rec["codec"], rec["dtmf"], rec["error"]) == ("PCMA", "12", "media fetch failed")
    assert list(rec)[-4:] == ["codec", "error", "dtmf", "attempts"]
    assert rec["attempts"] == []  # queued: not attempted yet


async def test_cancel_request(store: Store) -> None:
    accepted = await q.create_request(store, body={}, calls=calls(4), body_hash="h")
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.seq.in_([0, 1]))
            .values(result=sa.case((calls_table.c.seq == 0, "ringing"), else_="completed"))
        )
    assert await q.cancel_request(store, accepted.request_id) == (2, 1)
    assert await q.cancel_request(store, "nope") is None
    info = await q.report_info(store, request_id=accepted.request_id)
    assert info is not None and info.done == 3


async def test_postgresql_pool_follows_the_settings(pg_url: str) -> None:
    from ringcast.config import Settings
    from ringcast.store.db import store_for

    settings = Settings.from_sources(
        {"db": pg_url}, env={"RINGCAST_DB_POOL_SIZE": "3", "RINGCAST_DB_POOL_OVERFLOW": "1"}
    )
    store = store_for(settings)
    try:
        await store.migrate()
        pool = store.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        conns = [await store.engine.connect() for _ in range(4)]  # 3 + 1 overflow
        assert pool.checkedout() == 4  # type: ignore[attr-defined]
        for conn in conns:
            await conn.close()
    finally:
        await store.close()
