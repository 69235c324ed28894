"""The fast paths of the store store and read exactly what the SQLAlchemy paths do."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from ringcast.domain import Result, utcnow
from ringcast.store import Store, open_store
from ringcast.store import requests as q
from ringcast.store.models import calls_table, requests_table


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ringcast.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = open_store(db_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


CALLS = [
    q.NewCall(to_uri="sip:a@example.com", from_uri="me"),
    q.NewCall(to_uri="sip:b@example.com:5070", from_uri="sip:other@example.com"),
    q.NewCall(
        to_uri="sip:c@example.com",
        from_uri='"Zoë" <sip:z@example.com>',
        variables={"name": "Zoë", "quote": 'say "hi"\\'},
    ),
    q.NewCall(to_uri="sip:d@example.com", from_uri="me", timezone="Europe/Riga"),
    q.NewCall(to_uri="sip:e@example.com", from_uri="me", variables={}, timezone="UTC"),
]
_COLUMNS = [c.name for c in calls_table.c if c.name not in ("id", "request_id")]


async def _stored(store: Store, request_id: str) -> list[tuple[Any, ...]]:
    """Every column but the ids, as the database holds it (text, with its type)."""
    if store.dialect == "sqlite":
        cols = ", ".join(f"typeof({c}) || ':' || quote({c})" for c in _COLUMNS)
    else:
        cols = ", ".join(
            f"pg_typeof({c})::text || ':' || coalesce({c}::text, 'NULL')" for c in _COLUMNS
        )
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(f"SELECT {cols} FROM calls WHERE request_id = :r ORDER BY seq"),
            {"r": request_id},
        )
        return [tuple(r) for r in rows]


async def test_create_request_stores_what_a_core_insert_stores(store: Store) -> None:
    due = utcnow().replace(year=2099)
    accepted = await q.create_request(store, body={}, calls=CALLS, body_hash="h", not_before=due)
    async with store.engine.connect() as conn:
        created = (
            await conn.execute(
                sa.select(requests_table.c.created_at).where(
                    requests_table.c.id == accepted.request_id
                )
            )
        ).scalar_one()
    # The same calls through SQLAlchemy Core, as create_request inserted them before.
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(requests_table).values(
                id="core",
                created_at=created,
                body={},
                total=len(CALLS),
                report_id="rep",
                body_hash="h2",
            )
        )
        await s.execute(
            sa.insert(calls_table),
            [
                {
                    "id": str(uuid.uuid4()),
                    "request_id": "core",
                    "seq": i,
                    "to_uri": c.to_uri,
                    "from_uri": c.from_uri,
                    "variables": c.variables,
                    "timezone": c.timezone,
                    "result": Result.QUEUED.value,
                    "attempt": 1,
                    "request_time": created,
                    "duration": 0,
                    "answered": False,
                    "not_before": due,
                    "claim_epoch": 0,
                    "updated_at": created,
                }
                for i, c in enumerate(CALLS)
            ],
        )
    fast = await _stored(store, accepted.request_id)
    assert fast == await _stored(store, "core")
    assert len(fast) == len(CALLS)
    # and read back through the models
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(calls_table)
                .where(calls_table.c.request_id == accepted.request_id)
                .order_by(calls_table.c.seq)
            )
        ).all()
    assert [(r.to_uri, r.from_uri, r.variables, r.timezone) for r in rows] == [
        tuple(c) for c in CALLS
    ]
    assert all(r.request_time == created and r.not_before == due for r in rows)
    assert len({r.id for r in rows}) == len(CALLS)


def test_new_ids_are_uuid4_strings() -> None:
    ids = q.new_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert q.new_ids(0) == []
