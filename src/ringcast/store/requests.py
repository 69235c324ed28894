"""API-side queries: accept a request, look up status, page reports, cancel.

Driver errors become :class:`~ringcast.errors.StoreError` here, so the API
layer sees only ringcast errors.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import sqlite3
import struct
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import asyncpg
import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ringcast.domain import FINAL_RESULTS, LIVE_RESULTS, Outcome, Result, utcnow
from ringcast.errors import StoreError, ValidationFailed
from ringcast.store.db import Dialect, Store, wrap_errors
from ringcast.store.fair import PRIORITY_DEFAULT
from ringcast.store.models import call_attempts_table, calls_table, requests_table
from ringcast.store.records import record_csv_sql, record_json_sql

logger = logging.getLogger(__name__)

WORK_CHANNEL = "ringcast_work"  # PostgreSQL LISTEN/NOTIFY channel: new calls are queued

REPORT_BATCH = 1000  # rows per keyset page when streaming a report
REPORT_LINES_BATCH = 5000  # records per query when the database writes the lines (~1 MB)
REPORT_READ_AHEAD = 2  # pages read (each on its own connection) while one is sent
_FINAL = [r.value for r in FINAL_RESULTS]
_LIVE = [r.value for r in LIVE_RESULTS]


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


@dataclass(frozen=True, slots=True)
class ReportInfo:
    request_id: str
    report_id: str
    total: int
    done: int

    @property
    def status(self) -> str:
        return "ready" if self.done >= self.total else "pending"


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
) -> Accepted:
    """Store a request and all its calls in one transaction.

    With `idempotency_key`, a replay with the same `body_hash` returns the first
    request's ids and stores nothing; a different hash raises IdempotencyConflict.
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
            await _insert_calls(session, store, request_id, calls, now, due)
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
_ID_CHUNK = 50_000  # ids formatted at once


def new_ids(n: int) -> list[str]:
    """`n` random (version 4) UUID strings in ascending order (see new_id_chunks)."""
    return [i for chunk in new_id_chunks(n) for i in chunk]


def new_id_chunks(n: int) -> Iterator[list[str]]:
    """`n` random (version 4) UUID strings, as `str(uuid.uuid4())` writes them, in
    ascending order, in lists of up to _ID_CHUNK made when asked for (1M id
    strings at once would cost ~90 MB): one `os.urandom` call, numpy doing the
    bits and the sorting for all of them and the hex layout a chunk at a time
    (~20x cheaper than `uuid4()` per id, ~3x cheaper than slicing one hex
    string per id)."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = raw[:, 6] & 0x0F | 0x40  # version 4
    raw[:, 8] = raw[:, 8] & 0x3F | 0x80  # RFC 9562 variant
    halves = raw.view(">u8")  # byte order = the order of the hex strings
    raw = raw[np.lexsort((halves[:, 1], halves[:, 0]))]
    for first in range(0, n, _ID_CHUNK):  # written a chunk at a time: small temporaries
        part = raw[first : first + _ID_CHUNK]
        m = len(part)
        hexed = np.frombuffer(part.tobytes().hex().encode(), dtype=np.uint8).reshape(m, 32)
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


async def _driver(connection: AsyncConnection) -> Any:
    """The DBAPI driver's own connection (asyncpg / aiosqlite) under `connection`."""
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise StoreError("the database connection is closed")
    return driver


async def _insert_calls(
    session: AsyncSession,
    store: Store,
    request_id: str,
    calls: Sequence[NewCall],
    now: datetime,
    due: datetime,
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
    batch = _NewRows(store, new_id_chunks(len(calls)), request_id, calls, now, due)
    columns = batch.columns
    driver = await _driver(await session.connection())
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

    @functools.cached_property
    def with_zone(self) -> bool:
        return any(zone is not None for _, _, _, zone in self.calls)

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
    for start in range(0, len(calls), _COPY_ROWS):
        rows = []
        for seq in range(start, min(start + _COPY_ROWS, len(calls))):
            to_uri, from_uri, variables, zone = calls[seq]
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


async def get_call(store: Store, call_id: str, *, tenant: str | None = None) -> sa.Row[Any] | None:
    """A call by id; with `tenant`, only when its request belongs to that tenant."""
    stmt = sa.select(calls_table).where(calls_table.c.id == call_id)
    if tenant is not None:
        stmt = stmt.where(
            calls_table.c.request_id.in_(
                sa.select(requests_table.c.id).where(requests_table.c.tenant == tenant)
            )
        )
    async with wrap_errors(), store.session(readonly=True) as session:
        return (await session.execute(stmt)).first()


async def get_request(
    store: Store, request_id: str, *, tenant: str | None = None
) -> sa.Row[Any] | None:
    """The request row (without its body) by request id (and tenant, when given)."""
    cols = [c for c in requests_table.c if c.name != "body"]
    stmt = sa.select(*cols).where(requests_table.c.id == request_id)
    if tenant is not None:
        stmt = stmt.where(requests_table.c.tenant == tenant)
    async with wrap_errors(), store.session(readonly=True) as session:
        return (await session.execute(stmt)).first()


async def first_call(store: Store, request_id: str) -> sa.Row[Any] | None:
    async with wrap_errors(), store.session(readonly=True) as session:
        return (
            await session.execute(
                sa.select(calls_table)
                .where(calls_table.c.request_id == request_id)
                .order_by(calls_table.c.seq)
                .limit(1)
            )
        ).first()


async def call_attempts(store: Store, call_id: str) -> list[dict[str, Any]]:
    """Records of the finished earlier attempts of a call, oldest first."""
    async with wrap_errors(), store.session(readonly=True) as session:
        rows = await session.execute(
            sa.select(call_attempts_table.c.record)
            .where(call_attempts_table.c.call_id == call_id)
            .order_by(call_attempts_table.c.attempt)
        )
        return [dict(r.record) for r in rows]


async def report_info(
    store: Store,
    *,
    request_id: str | None = None,
    report_id: str | None = None,
    tenant: str | None = None,
) -> ReportInfo | None:
    """Total and finished call counts for a request, found by request or report id
    (None when it does not exist or belongs to another tenant than `tenant`)."""
    where = (
        requests_table.c.id == request_id
        if request_id is not None
        else requests_table.c.report_id == report_id
    )
    if tenant is not None:
        where = sa.and_(where, requests_table.c.tenant == tenant)
    async with wrap_errors(), store.session(readonly=True) as session:
        req = (
            await session.execute(
                sa.select(
                    requests_table.c.id, requests_table.c.report_id, requests_table.c.total
                ).where(where)
            )
        ).first()
        if req is None:
            return None
        done = await session.scalar(
            sa.select(sa.func.count())
            .select_from(calls_table)
            .where(calls_table.c.request_id == req.id, calls_table.c.result.in_(_FINAL))
        )
    return ReportInfo(req.id, req.report_id, int(req.total), int(done or 0))


async def report_page(
    store: Store, request_id: str, *, after_seq: int = -1, limit: int = REPORT_BATCH
) -> list[sa.Row[Any]]:
    """Up to `limit` calls of a request with seq > after_seq, in recipient order."""
    async with wrap_errors(), store.session(readonly=True) as session:
        rows = await session.execute(
            sa.select(calls_table)
            .where(calls_table.c.request_id == request_id, calls_table.c.seq > after_seq)
            .order_by(calls_table.c.seq)
            .limit(limit)
        )
        return list(rows)


async def iter_report(
    store: Store,
    request_id: str,
    *,
    after_seq: int = -1,
    limit: int | None = None,
    batch: int = REPORT_BATCH,
) -> AsyncIterator[sa.Row[Any]]:
    """Every call of a request in recipient order, read in keyset batches.

    Each batch is its own short read transaction, so memory stays constant and
    the dialer's writers are never held up by a slow client.
    """
    sent = 0
    while limit is None or sent < limit:
        size = batch if limit is None else min(batch, limit - sent)
        rows = await report_page(store, request_id, after_seq=after_seq, limit=size)
        for row in rows:
            yield row
        sent += len(rows)
        if len(rows) < size:
            return
        after_seq = rows[-1].seq


ReportFormat = Literal["json", "csv"]
_report_queries: dict[tuple[str, ReportFormat], str] = {}


def _report_query(dialect: Dialect, fmt: ReportFormat) -> str:
    """One keyset page: the calls with `after < seq <= until`, each as one line.

    A seq range rather than ORDER BY ... LIMIT: right after a bulk insert the
    planner has no statistics for the new rows and may pick a bitmap scan of every
    remaining row of the request, then a sort, for each page (quadratic over a
    large report); a range reads only the page's rows whatever the plan.
    """
    query = _report_queries.get((dialect, fmt))
    if query is not None:
        return query
    line = record_json_sql(dialect) if fmt == "json" else record_csv_sql(dialect)
    if dialect == "postgresql":
        # One row per page: the database also joins the lines; Python touches no record.
        query = (
            f"SELECT count(*), string_agg({line}, $4 ORDER BY seq) FROM calls"
            " WHERE request_id = $1 AND seq > $2 AND seq <= $3"
        )
    else:
        # One row per page here too: SQLite builds the whole page inside one
        # sqlite3_step, during which the driver's thread does not hold the GIL, so
        # pages read ahead are built in parallel with the response being sent. The
        # ordered subquery is not flattened into an aggregate, so group_concat
        # takes the lines in seq order.
        query = (
            f"SELECT count(*), group_concat(line, ?) FROM (SELECT {line} AS line FROM calls"
            " WHERE request_id = ? AND seq > ? AND seq <= ? ORDER BY seq)"
        )
    _report_queries[dialect, fmt] = query
    return query


_STREAM_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error, OSError)


async def _last_seq(store: Store, request_id: str) -> int | None:
    async with wrap_errors(), store.session(readonly=True) as session:
        last = await session.scalar(
            sa.select(sa.func.max(calls_table.c.seq)).where(calls_table.c.request_id == request_id)
        )
    return None if last is None else int(last)


async def _report_lines_page(
    store: Store, fmt: ReportFormat, request_id: str, after: int, until: int, sep: str
) -> tuple[int, str]:
    """(records, their lines joined by `sep`) for `after < seq <= until`, read through
    the raw driver in one statement (its own snapshot; no transaction left open)."""
    query = _report_query(store.dialect, fmt)
    try:
        async with wrap_errors(), store.engine.connect() as conn:
            driver = await _driver(conn)
            if store.dialect == "postgresql":
                count, text = await driver.fetchrow(query, request_id, after, until, sep)
                return int(count), text or ""
            cursor = await driver.execute(query, (sep, request_id, after, until))
            try:
                count, text = await cursor.fetchone()
            finally:
                await cursor.close()
            return int(count), text or ""
    except _STREAM_ERRORS as exc:
        raise StoreError(f"database error: {type(exc).__name__}") from exc


async def iter_report_lines(
    store: Store,
    request_id: str,
    *,
    fmt: ReportFormat = "json",
    sep: str = "\n",
    after_seq: int = -1,
    limit: int | None = None,
    batch: int = REPORT_LINES_BATCH,
) -> AsyncIterator[str]:
    """The records of a request in recipient order (seq > `after_seq`, at most
    `limit`), each written by the database as one line: ``fmt="json"`` gives
    compact JSON equal to ``record_dict(row)`` once parsed, ``"csv"`` the CSV row of
    the report. One string per page of up to `batch` records, `sep` between
    records (not after the last one of a page).

    Like :func:`iter_report`, each page is its own short read, so memory stays
    constant and writers are never held up by a slow client. The next
    REPORT_READ_AHEAD pages are read, each on its own connection, while the
    current one is sent (REPORT_READ_AHEAD + 1 pages at most in memory), so the
    database's work overlaps the response's and uses more than one core; on
    SQLite too, as each page is one row built by SQLite without the GIL (see
    _report_query).
    """
    last = await _last_seq(store, request_id)
    if last is None:
        return
    in_flight: deque[tuple[asyncio.Task[tuple[int, str]], int]] = deque()  # (page, size)
    planned = 0  # records asked for by the pages in flight
    sent = 0
    after = after_seq

    def fill() -> None:
        """Keep the next REPORT_READ_AHEAD pages being read, within `limit`."""
        nonlocal planned, after
        while after < last and len(in_flight) <= REPORT_READ_AHEAD:
            size = batch if limit is None else min(batch, limit - sent - planned)
            if size <= 0:
                return
            until = after + size  # seqs are dense from 0: `size` calls (fewer past a gap)
            task = asyncio.create_task(
                _report_lines_page(store, fmt, request_id, after, until, sep),
                name=f"report-page-{request_id}-{after}",
            )
            in_flight.append((task, size))
            planned += size
            after = until

    try:
        fill()
        while in_flight:
            task, size = in_flight[0]
            count, text = await task
            in_flight.popleft()
            planned -= size
            sent += count
            fill()  # a short page (a gap in seq) leaves room for one more
            if count:
                yield text
    finally:
        for task, _ in in_flight:
            task.cancel()


async def next_cursor(store: Store, request_id: str, *, after_seq: int, limit: int) -> int | None:
    """The seq of the `limit`-th call after `after_seq` when calls follow it (a page's
    `next_cursor`), else None. Seqs are dense from 0, so the page is normally the
    range (after_seq, after_seq + limit]: counted by range (fast whatever the
    planner's statistics), with the ORDER BY ... OFFSET query only past a gap."""
    last = await _last_seq(store, request_id)
    if last is None:
        return None
    async with wrap_errors(), store.session(readonly=True) as session:
        in_range = (
            calls_table.c.request_id == request_id,
            calls_table.c.seq > after_seq,
        )
        count, top = (
            await session.execute(
                sa.select(sa.func.count(), sa.func.max(calls_table.c.seq)).where(
                    *in_range, calls_table.c.seq <= after_seq + limit
                )
            )
        ).one()
        if count == limit:
            end: int | None = int(top)
        else:
            end = await session.scalar(
                sa.select(calls_table.c.seq)
                .where(*in_range)
                .order_by(calls_table.c.seq)
                .offset(limit - 1)
                .limit(1)
            )
    if end is None or end >= last:
        return None
    return int(end)


async def cancel_request(
    store: Store, request_id: str, *, tenant: str | None = None
) -> tuple[int, int] | None:
    """Cancel a request: queued calls become canceled now, live ones are left to
    the dialer (it watches `requests.canceled_at`). Returns (canceled, in_progress),
    or None for an unknown request.
    """
    now = utcnow()
    async with wrap_errors(), store.session() as session, session.begin():
        lookup = sa.select(requests_table.c.id).where(requests_table.c.id == request_id)
        if tenant is not None:
            lookup = lookup.where(requests_table.c.tenant == tenant)
        found = await session.scalar(lookup)
        if found is None:
            return None
        await session.execute(
            sa.update(requests_table)
            .where(requests_table.c.id == request_id, requests_table.c.canceled_at.is_(None))
            .values(canceled_at=now)
        )
        result = await session.execute(
            sa.update(calls_table)
            .where(
                calls_table.c.request_id == request_id,
                calls_table.c.result == Result.QUEUED.value,
            )
            .values(
                result=Result.CANCELED.value,
                outcome=Outcome.CANCELED.value,
                disconnect_time=now,
                updated_at=now,
            )
        )
        canceled = int(getattr(result, "rowcount", 0) or 0)
        live = await session.scalar(
            sa.select(sa.func.count())
            .select_from(calls_table)
            .where(calls_table.c.request_id == request_id, calls_table.c.result.in_(_LIVE))
        )
        if not live:
            # Nothing left for the dialer to end: the request is complete now.
            from ringcast.store.outbox import notify_request_completed

            await notify_request_completed(session, request_id)
    logger.info("request %s canceled: %s queued calls, %s live", request_id, canceled, live)
    return canceled, int(live or 0)


# --- pause, resume, replay ---------------------------------------------------------------


async def _notify_work(session: AsyncSession, store: Store) -> None:
    if store.dialect == "postgresql":
        await session.execute(sa.text(f"NOTIFY {WORK_CHANNEL}"))


async def set_paused(
    store: Store, request_id: str, paused: bool, *, tenant: str | None = None
) -> int | None:
    """Pause (or resume) the claiming of a request's queued calls; live calls go on.
    Returns how many calls are queued, or None for an unknown request."""
    now = utcnow()
    async with wrap_errors(), store.session() as session, session.begin():
        lookup = sa.update(requests_table).where(requests_table.c.id == request_id)
        if tenant is not None:
            lookup = lookup.where(requests_table.c.tenant == tenant)
        if paused:  # the first pause's time is kept
            lookup = lookup.values(paused_at=sa.func.coalesce(requests_table.c.paused_at, now))
        else:
            lookup = lookup.values(paused_at=None)
        found = await session.execute(lookup.returning(requests_table.c.id))
        if found.first() is None:
            return None
        queued = await session.scalar(
            sa.select(sa.func.count())
            .select_from(calls_table)
            .where(
                calls_table.c.result == Result.QUEUED.value,
                calls_table.c.request_id == request_id,
            )
        )
        if not paused:
            await _notify_work(session, store)  # delivered at commit: dialers claim now
    logger.info("request %s %s", request_id, "paused" if paused else "resumed")
    return int(queued or 0)


async def is_paused(store: Store, request_id: str) -> bool:
    async with wrap_errors(), store.session(readonly=True) as session:
        at = await session.scalar(
            sa.select(requests_table.c.paused_at).where(requests_table.c.id == request_id)
        )
    return at is not None


@dataclass(frozen=True, slots=True)
class Source:
    """The recipients of an earlier request, to call again (`replay`)."""

    calls: list[NewCall]
    sender: str  # the earlier request's `from`: recipients with it take the new one


async def replay_source(
    store: Store, request_id: str, *, tenant: str | None = None, only: Sequence[str] | None = None
) -> Source | None:
    """The recipients of `request_id` in recipient order, with their own `from`,
    variables and time zone; with `only`, those whose last outcome is one of
    them. None for an unknown request. Read through the raw driver in one
    statement (a 100k-recipient replay reads like a 100k-recipient POST parses)."""
    lookup = sa.select(requests_table.c.body).where(requests_table.c.id == request_id)
    if tenant is not None:
        lookup = lookup.where(requests_table.c.tenant == tenant)
    async with wrap_errors(), store.session(readonly=True) as session:
        body = await session.scalar(lookup)
        if body is None:
            return None
        stmt = (
            sa.select(
                calls_table.c.to_uri,
                calls_table.c.from_uri,
                calls_table.c.variables,
                calls_table.c.timezone,
            )
            .where(calls_table.c.request_id == request_id)
            .order_by(calls_table.c.seq)
        )
        if only is not None:
            stmt = stmt.where(calls_table.c.outcome.in_(list(only)))
        rows = (await session.execute(stmt)).all()
    new_call = NewCall
    return Source(
        [new_call(r[0], r[1], r[2] or None, r[3]) for r in rows], str(body.get("from") or "")
    )
