"""Recordings in the database: kept per call, served by range, deleted, swept.

The WAV bytes live in the `recordings` table (SQLite BLOB, PostgreSQL bytea),
so every API node of a fleet serves every recording. The call record lists
them in `calls.recordings` (JSON text, see :mod:`ringcast.store.records`);
deleting a recording, by the API or the retention sweep, rewrites that list
in the same transaction. Reads go by pieces (:func:`read_piece`, SQL
``substr``) so a response streams without holding a whole file in memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import utcnow
from ringcast.errors import StoreError
from ringcast.store.db import Store
from ringcast.store.models import calls_table, recordings_table

rec = recordings_table

URL_PREFIX = "/recordings/"
SWEEP_BATCH = 500  # recordings deleted per transaction by the retention sweep


@dataclass(frozen=True, slots=True)
class NewRecording:
    """One recording a call made: its id (chosen by the dialer), WAV bytes and facts."""

    id: str
    wav: bytes
    duration: float  # seconds
    reason: str  # max | silence | digit | hangup


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: str
    tenant: str
    call_id: str
    size: int
    duration: float
    reason: str
    created_at: datetime


def new_id() -> str:
    return str(uuid.uuid4())


def record_list(items: Sequence[NewRecording]) -> list[dict[str, object]]:
    """The record's `recordings` for these: [{"url", "duration"}] (seconds, 2 decimals)."""
    return [{"url": URL_PREFIX + r.id, "duration": round(r.duration, 2)} for r in items]


def record_list_json(items: Sequence[NewRecording]) -> str | None:
    """`calls.recordings` for these (None for none)."""
    return json.dumps(record_list(items), separators=(",", ":")) if items else None


async def add(
    s: AsyncSession,
    *,
    tenant: str,
    call_id: str,
    attempt: int,
    items: Sequence[NewRecording],
    now: datetime | None = None,
) -> None:
    """Insert a call's recordings (in the transaction that writes its final fields)."""
    when = now or utcnow()
    if not items:
        return
    await s.execute(
        sa.insert(rec),
        [
            {
                "id": r.id,
                "tenant": tenant,
                "call_id": call_id,
                "attempt": attempt,
                "seq": i,
                "created_at": when,
                "duration": float(r.duration),
                "size": len(r.wav),
                "reason": r.reason,
                "wav": r.wav,
            }
            for i, r in enumerate(items)
        ],
    )


def _info_columns() -> tuple[sa.ColumnElement[object], ...]:
    c = rec.c
    return (c.id, c.tenant, c.call_id, c.size, c.duration, c.reason, c.created_at)


async def info(store: Store, recording_id: str, *, tenant: str | None) -> RecordingInfo | None:
    """The recording's facts, or None when it does not exist or is another tenant's
    (`tenant` None: any)."""
    query = sa.select(*_info_columns()).where(rec.c.id == recording_id)
    if tenant is not None:
        query = query.where(rec.c.tenant == tenant)
    try:
        async with store.session(readonly=True) as s:
            row = (await s.execute(query)).one_or_none()
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc
    if row is None:
        return None
    return RecordingInfo(
        row.id,
        row.tenant,
        row.call_id,
        int(row.size),
        float(row.duration),
        row.reason,
        row.created_at,
    )


async def read_piece(store: Store, recording_id: str, start: int, length: int) -> bytes:
    """`length` bytes of the WAV from byte `start` (fewer at its end; b"" if gone)."""
    piece = sa.func.substr(rec.c.wav, start + 1, length)
    try:
        async with store.session(readonly=True) as s:
            value = (
                await s.execute(sa.select(piece).where(rec.c.id == recording_id))
            ).scalar_one_or_none()
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc
    return bytes(value) if value is not None else b""


async def _refresh_call_list(s: AsyncSession, call_id: str) -> None:
    """Rewrite the call's `recordings` from the rows left."""
    rows = (
        await s.execute(
            sa.select(rec.c.id, rec.c.duration)
            .where(rec.c.call_id == call_id)
            .order_by(rec.c.attempt, rec.c.seq)
        )
    ).all()
    listed = [{"url": URL_PREFIX + r.id, "duration": round(float(r.duration), 2)} for r in rows]
    value = json.dumps(listed, separators=(",", ":")) if listed else None
    await s.execute(
        sa.update(calls_table).where(calls_table.c.id == call_id).values(recordings=value)
    )


async def delete(store: Store, recording_id: str, *, tenant: str) -> bool:
    """Delete one recording of `tenant`; False when there is none."""
    try:
        async with store.session() as s, s.begin():
            call_id = (
                await s.execute(
                    sa.delete(rec)
                    .where(rec.c.id == recording_id, rec.c.tenant == tenant)
                    .returning(rec.c.call_id)
                )
            ).scalar_one_or_none()
            if call_id is None:
                return False
            await _refresh_call_list(s, call_id)
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc
    return True


async def sweep(store: Store, *, before: datetime, batch: int = SWEEP_BATCH) -> int:
    """Delete the recordings made before `before` (the retention sweep), `batch` per
    transaction; return how many went."""
    total = 0
    while True:
        try:
            async with store.session() as s, s.begin():
                ids = (
                    await s.execute(
                        sa.select(rec.c.id, rec.c.call_id)
                        .where(rec.c.created_at < before)
                        .order_by(rec.c.created_at)
                        .limit(batch)
                    )
                ).all()
                if not ids:
                    return total
                await s.execute(sa.delete(rec).where(rec.c.id.in_([r.id for r in ids])))
                for call_id in sorted({r.call_id for r in ids}):
                    await _refresh_call_list(s, call_id)
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {type(exc).__name__}") from exc
        total += len(ids)
        if len(ids) < batch:
            return total
