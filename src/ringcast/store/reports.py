"""Read a request's calls: one call, status counts, report pages and streams.

Every read is its own short transaction (a slow client never holds up the
dialer's writers); report lines are written by the database itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import sqlalchemy as sa

from ringcast.domain import FINAL_RESULTS
from ringcast.errors import StoreError
from ringcast.store.db import Dialect, Store, raw_driver, wrap_errors
from ringcast.store.models import call_attempts_table, calls_table, requests_table
from ringcast.store.records import record_csv_sql, record_json_sql

REPORT_BATCH = 1000  # rows per keyset page when streaming a report
REPORT_LINES_BATCH = 5000  # records per query when the database writes the lines (~1 MB)
REPORT_READ_AHEAD = 2  # pages read (each on its own connection) while one is sent
_FINAL = [r.value for r in FINAL_RESULTS]
# Built once (an IN list built per call leaves its bind parameters in cycles).
_FINAL_COUNT = (
    sa.select(sa.func.count())
    .select_from(calls_table)
    .where(
        calls_table.c.request_id == sa.bindparam("request_id"),
        calls_table.c.result.in_(_FINAL),
    )
)


@dataclass(frozen=True, slots=True)
class ReportInfo:
    request_id: str
    report_id: str
    total: int
    done: int

    @property
    def status(self) -> str:
        return "ready" if self.done >= self.total else "pending"


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
        done = await session.scalar(_FINAL_COUNT, {"request_id": req.id})
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
            driver = await raw_driver(conn)
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
