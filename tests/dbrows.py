"""Rows written straight into the store for tests that start below the API."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from ringcast.domain import utcnow
from ringcast.store.db import Store
from ringcast.store.models import calls_table, requests_table


async def insert_request(
    store: Store, n: int, body: dict[str, Any], *, api_key_id: str | None = None
) -> tuple[str, list[str]]:
    """A request with `n` queued calls to sip:u<i>@127.0.0.1; (request id, call ids)."""
    rid = str(uuid.uuid4())
    now = utcnow()
    ids = [str(uuid.uuid4()) for _ in range(n)]
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(requests_table).values(
                id=rid,
                tenant="default",
                created_at=now,
                body=body,
                total=n,
                report_id=str(uuid.uuid4()),
                body_hash="x",
                api_key_id=api_key_id,
            )
        )
        await s.execute(
            sa.insert(calls_table),
            [
                {
                    "id": cid,
                    "request_id": rid,
                    "seq": i,
                    "to_uri": f"sip:u{i}@127.0.0.1",
                    "from_uri": "me",
                    "request_time": now,
                    "not_before": now,
                    "updated_at": now,
                }
                for i, cid in enumerate(ids)
            ],
        )
    return rid, ids
