"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ringcast.store import open_store
from ringcast.store.db import alembic_config
from ringcast.store.models import Base

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

TABLES = {
    "requests",
    "calls",
    "call_attempts",
    "dnc",
    "nodes",
    "api_keys",
    "limiters",
    "leases",
    "counters",
    "webhook_outbox",
    "recordings",
    "trunk_registrations",
    "alembic_version",
}


def _diff(conn: sa.Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(ctx, Base.metadata))


async def test_head_matches_models(db_url: str) -> None:
    store = open_store(db_url)
    try:
        await store.migrate()
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    finally:
        await store.close()
    assert diff == []
    assert tables == TABLES
    assert version == HEAD


async def test_migrate_is_idempotent_and_concurrent_safe(db_url: str) -> None:
    stores = [open_store(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        await stores[0].migrate()
        async with stores[0].engine.connect() as conn:
            versions = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).all()
    finally:
        for s in stores:
            await s.close()
    assert [v[0] for v in versions] == [HEAD]


async def test_server_defaults_let_plain_sql_insert_calls(db_url: str) -> None:
    """Rows inserted without the optional columns get the documented defaults."""
    store = open_store(db_url)
    try:
        await store.migrate()
        async with store.engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO requests (id, created_at, body, total, report_id, body_hash)"
                    " VALUES ('r1', CURRENT_TIMESTAMP, '{}', 1, 'rep1', 'h')"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO calls (id, request_id, seq, to_uri, from_uri, request_time,"
                    " not_before, updated_at) VALUES ('c1', 'r1', 0, 'sip:a@b', 'me',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            row = (
                await conn.execute(
                    sa.text("SELECT result, attempt, duration, answered, claim_epoch FROM calls")
                )
            ).one()
            tenant = await conn.scalar(sa.text("SELECT tenant FROM requests"))
    finally:
        await store.close()
    assert tuple(row) == ("queued", 1, 0, False, 0)
    assert tenant == "default"
