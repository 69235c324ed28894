"""Accept a request: store it and all its calls in one transaction, fast.

The call rows go through the raw driver (a binary `COPY` on PostgreSQL, an
`executemany` of tuples on SQLite) with values converted once by the columns'
own SQLAlchemy bind processors; an Idempotency-Key replays the first answer.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import utcnow
from ringcast.errors import StoreError, ValidationFailed
from ringcast.store.db import Store, raw_driver, wrap_errors
from ringcast.store.fair import PRIORITY_DEFAULT
from ringcast.store.models import calls_table, requests_table

logger = logging.getLogger(__name__)

WORK_CHANNEL = "ringcast_work"  # PostgreSQL LISTEN/NOTIFY channel: new calls are queued


class IdempotencyConflict(ValidationFailed):
    """This Idempotency-Key was already used with a different request body."""

    code = 1006


class NewCall(NamedTuple):
    """One recipient of a new request, ready to insert (a tuple: 100k of them are cheap)."""

    to_uri: str
    from_uri: str
    variables: dict[str, str] | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    request_id: str
    report_id: str
    created: bool  # False when an Idempotency-Key replayed an earlier request


async def create_request(
    store: Store,
    *,
    body: dict[str, Any],
    calls: Sequence[NewCall],
    body_hash: str,
    tenant: str = "default",
    idempotency_key: str | None = None,
    not_before: datetime | None = None,
    api_key_id: str | None = None,
    priority: int = PRIORITY_DEFAULT,
    zoned: bool | None = None,
) -> Accepted:
    """Store a request and all its calls in one transaction.

    With `idempotency_key`, a replay with the same `body_hash` returns the first
    request's ids and stores nothing; a different hash raises IdempotencyConflict.
    `zoned`: whether any call has a time zone, when the caller knows (None: the
    calls are read to find out, on the event loop: ~0.6 µs per call).
    """
    if idempotency_key is not None:
        earlier = await _find_idempotent(store, tenant, idempotency_key, body_hash)
        if earlier is not None:
            return earlier
    now = utcnow()
    request_id = str(uuid.uuid4())
    report_id = str(uuid.uuid4())
    due = not_before or now
    try:
        async with wrap_errors(), store.session() as session, session.begin():
            await session.execute(
                sa.insert(requests_table).values(
                    id=request_id,
                    tenant=tenant,
                    created_at=now,
                    body=body,
                    total=len(calls),
                    report_id=report_id,
                    idempotency_key=idempotency_key,
                    body_hash=body_hash,
                    api_key_id=api_key_id,
                    priority=priority,
                )
            )
            await _insert_calls(session, store, request_id, calls, now, due, zoned)
            if store.dialect == "postgresql":
                # Delivered at commit: wakes idle dialers (they also poll).
                await session.execute(sa.text(f"NOTIFY {WORK_CHANNEL}"))
    except StoreError as exc:
        cause = exc.__cause__
        if idempotency_key is not None and isinstance(cause, IntegrityError):
            # A concurrent request with the same key won the race.
            earlier = await _find_idempotent(store, tenant, idempotency_key, body_hash)
            if earlier is not None:
                return earlier
        raise
    logger.info("request %s accepted: %s calls", request_id, len(calls))
    return Accepted(request_id, report_id, True)


# The columns a new call sets. The others start NULL or at their server default,
# which is what an ORM insert stores there too (result 'queued', attempt 1,
# duration 0, answered false, claim_epoch 0): 6 fields a row fewer to encode and
# send. `variables` is always sent: SQLAlchemy stores None as JSON 'null', not as
# NULL. `timezone` only when a call has one.
_NEW_CALL_COLUMNS = (
    "id",
    "request_id",
    "seq",
    "to_uri",
    "from_uri",
    "variables",
    "request_time",
    "not_before",
    "updated_at",
)
_UUID_GROUPS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))  # hex digit ranges
_ID_CHUNK = 10_000  # ids formatted at once


def any_zoned(calls: Sequence[NewCall]) -> bool:
    """Whether a call has a time zone: the sequence's own `any_timezone()` when it
    has one (api/play.CallsView answers a bare list without reading it), else read."""
    probe: Callable[[], bool] | None = getattr(calls, "any_timezone", None)
    return probe() if probe is not None else any(c.timezone is not None for c in calls)


def new_ids(n: int) -> list[str]:
    """`n` random (version 4) UUID strings in ascending order (see new_id_chunks)."""
    return [i for chunk in new_id_chunks(n) for i in chunk]


def new_id_chunks(n: int) -> Iterator[list[str]]:
    """`n` random (version 4) UUID strings, as `str(uuid.uuid4())` writes them, in
    ascending order, in lists of up to _ID_CHUNK made when asked for (1M id
    strings at once would cost ~90 MB). numpy does the bits: the first halves
    (8 bytes each) of all ids are drawn and sorted in place, the second halves
    and the hex layout a chunk at a time (~20x cheaper than `uuid4()` per id;
    8 MB held for 1M ids, where drawing and sorting whole ids held ~55 MB).
    Ids whose first halves are equal (about 1 in 10^7 per 1M-id batch) may
    come out of order: that costs the index a little, never uniqueness."""
    high = np.empty(n, dtype=np.uint64)
    for first in range(0, n, _ID_CHUNK):  # drawn in pieces: no second copy of them
        part = high[first : first + _ID_CHUNK]
        part[:] = np.frombuffer(os.urandom(8 * len(part)), dtype=np.uint64)
    high &= np.uint64(0xFFFF_FFFF_FFFF_0FFF)  # byte 6's high nibble: version 4
    high |= np.uint64(0x0000_0000_0000_4000)
    high.sort()
    for first in range(0, n, _ID_CHUNK):  # written a chunk at a time: small temporaries
        m = min(_ID_CHUNK, n - first)
        whole = np.empty((m, 2), dtype=">u8")
        whole[:, 0] = high[first : first + m]
        low = np.frombuffer(os.urandom(8 * m), dtype=np.uint64).copy()
        low &= np.uint64(0x3FFF_FFFF_FFFF_FFFF)  # byte 8's two high bits: RFC 9562 variant
        low |= np.uint64(0x8000_0000_0000_0000)
        whole[:, 1] = low
        hexed = np.frombuffer(whole.tobytes().hex().encode(), dtype=np.uint8).reshape(m, 32)
        text = np.full((m, 37), ord("-"), dtype=np.uint8)  # 8-4-4-4-12 digits, then a space
        for at, (start, stop) in zip((0, 9, 14, 19, 24), _UUID_GROUPS, strict=True):
            text[:, at : at + stop - start] = hexed[:, start:stop]
        text[:, 36] = ord(" ")
        yield text.tobytes().decode("ascii").split()


def _processor(store: Store, column: str) -> Callable[[Any], Any]:
    """What SQLAlchemy itself does to a value for `calls.<column>` before the driver."""
    dialect = store.engine.dialect
    process = calls_table.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _bind(store: Store, column: str, value: Any) -> Any:
    """`value` as SQLAlchemy itself would hand it to the driver for `calls.<column>`."""
    return _processor(store, column)(value)


async def _insert_calls(
    session: AsyncSession,
    store: Store,
    request_id: str,
    calls: Sequence[NewCall],
    now: datetime,
    due: datetime,
    zoned: bool | None = None,
) -> None:
    """Insert the call rows inside the session's open transaction through the raw
    driver: a binary `COPY` on PostgreSQL, `executemany` of tuples on SQLite.

    Values are converted once by the columns' own SQLAlchemy bind processors (the
    constants once per request, `variables` per row that has them), so the rows
    are stored exactly as an ORM/Core insert would store them; SQLAlchemy's
    per-row, per-column processing (most of a 100k-call request's time) is skipped.
    """
    # Ascending ids (still random v4 ids): the primary-key B-tree then takes the
    # batch in key order instead of at random pages (SQLite ~1.5-2x faster).
    if zoned is None:
        zoned = any_zoned(calls)
    batch = _NewRows(store, new_id_chunks(len(calls)), request_id, calls, now, due, zoned)
    columns = batch.columns
    driver = await raw_driver(await session.connection())
    try:
        if store.dialect == "postgresql":
            await driver.copy_to_table(
                calls_table.name, source=batch.copy_chunks(), columns=columns, format="binary"
            )
        else:
            rows = batch.sqlite_rows()
            sql = (
                f"INSERT INTO {calls_table.name} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            cursor = await driver.executemany(sql, rows)
            await cursor.close()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error) as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class _NewRows:
    """The call rows of one new request, encoded for the raw driver: tuples for
    SQLite's executemany, or binary COPY chunks for PostgreSQL."""

    store: Store
    ids: Iterator[list[str]]  # ascending, in chunks: made as the rows are written
    request_id: str
    calls: Sequence[NewCall]
    now: datetime
    due: datetime
    with_zone: bool  # a call has a time zone: the rows carry the column

    @property
    def columns(self) -> tuple[str, ...]:
        """:data:`_NEW_CALL_COLUMNS`, + timezone when any recipient has one."""
        return (*_NEW_CALL_COLUMNS, "timezone") if self.with_zone else _NEW_CALL_COLUMNS

    def sqlite_rows(self) -> Iterator[tuple[Any, ...]]:
        """The rows of :attr:`columns`, as the driver takes them."""
        store, request_id, with_zone = self.store, self.request_id, self.with_zone
        ids = itertools.chain.from_iterable(self.ids)
        stamp = _bind(store, "request_time", self.now)
        due_at = _bind(store, "not_before", self.due)
        no_variables = _bind(store, "variables", None)
        to_json = _processor(store, "variables")
        for seq, (to_uri, from_uri, variables, zone) in enumerate(self.calls):
            row = (
                next(ids),
                request_id,
                seq,
                to_uri,
                from_uri,
                no_variables if variables is None else to_json(variables),
                stamp,
                due_at,
                stamp,
            )
            yield (*row, zone) if with_zone else row

    def copy_chunks(self) -> AsyncIterator[bytes]:
        return _copy_chunks(self)


# PostgreSQL binary COPY: a header, then per row a 16-bit field count and each
# field as a 32-bit length (-1 for NULL) and its bytes; a -1 count ends the data.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_COPY_NULL = struct.pack(">i", -1)
_COPY_ROWS = 5000  # rows per chunk handed to the driver (~0.5 MB)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_pack_length = struct.Struct(">i").pack
_pack_seq = struct.Struct(">ii").pack  # length 4, then the int4


def _copy_text(value: str) -> bytes:
    data = value.encode()
    return _pack_length(len(data)) + data


def _copy_time(value: datetime) -> bytes:
    """A timestamptz as binary COPY takes it: microseconds since 2000-01-01 UTC."""
    delta = value - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return struct.pack(">iq", 8, micros)


async def _copy_chunks(batch: _NewRows) -> AsyncIterator[bytes]:
    """The rows of :attr:`_NewRows.columns` in binary COPY format,
    encoded here in one pass with every constant field encoded once (asyncpg's
    per-value encoding of the same rows costs ~5x more CPU). Yielded in chunks,
    so the server stores one chunk while the next is encoded."""
    store, calls, with_zone = batch.store, batch.calls, batch.with_zone
    ids = itertools.chain.from_iterable(batch.ids)
    now, due, request_id = batch.now, batch.due, batch.request_id
    count = struct.pack(">h", len(batch.columns))
    request = _copy_text(request_id)
    stamp = _copy_time(_bind(store, "request_time", now))
    times = stamp + _copy_time(_bind(store, "not_before", due)) + stamp
    no_variables = _copy_text(_bind(store, "variables", None))
    to_json = _processor(store, "variables")
    senders: dict[str, bytes] = {}
    yield _COPY_HEADER
    every = iter(calls)  # read in order, not by index: a lazy sequence makes each once
    for start in range(0, len(calls), _COPY_ROWS):
        rows = []
        for seq, (to_uri, from_uri, variables, zone) in enumerate(
            itertools.islice(every, _COPY_ROWS), start
        ):
            sender = senders.get(from_uri)
            if sender is None:
                sender = senders[from_uri] = _copy_text(from_uri)
            row: tuple[bytes, ...] = (
                count,
                _copy_text(next(ids)),
                request,
                _pack_seq(4, seq),
                _copy_text(to_uri),
                sender,
                no_variables if variables is None else _copy_text(to_json(variables)),
                times,
            )
            if with_zone:
                row += (_COPY_NULL if zone is None else _copy_text(zone),)
            rows.append(b"".join(row))
        yield b"".join(rows)
    yield _COPY_TRAILER


async def _find_idempotent(store: Store, tenant: str, key: str, body_hash: str) -> Accepted | None:
    async with wrap_errors(), store.session(readonly=True) as session:
        row = (
            await session.execute(
                sa.select(
                    requests_table.c.id, requests_table.c.report_id, requests_table.c.body_hash
                ).where(requests_table.c.tenant == tenant, requests_table.c.idempotency_key == key)
            )
        ).first()
    if row is None:
        return None
    if row.body_hash != body_hash:
        raise IdempotencyConflict(
            "Idempotency-Key was already used with a different request body",
            field="Idempotency-Key",
        )
    return Accepted(row.id, row.report_id, False)
