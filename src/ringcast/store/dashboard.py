"""Aggregate queries for the dashboard: requests with their progress, one
request's calls filtered by outcome, and a timeline of outcomes.

Every count is a GROUP BY in the database (the `calls` rows of a request are
reached through `uq_calls_request_id_seq`, whose first column is
`request_id`), so a request of 100k calls costs a handful of grouped rows in
Python, never one object per call.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ringcast.domain import LIVE_RESULTS, Result, utcnow
from ringcast.store.db import Store, wrap_errors
from ringcast.store.models import calls_table, requests_table

logger = logging.getLogger(__name__)

RATE_WINDOW = 60.0  # seconds of finished calls that "calls per minute" looks back over
MAX_BUCKETS = 60  # bars in a timeline at most
_NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
_LIVE = [r.value for r in LIVE_RESULTS]
_SQLITE_UNIXEPOCH = sqlite3.sqlite_version_info >= (3, 38, 0)
FINAL_CACHE_SIZE = 2048  # finished requests whose aggregates are kept in memory


class _FinalCache:
    """Aggregates of finished requests: every call is final, so they never change
    (a retry re-queues a call in the transaction that finishes it). Per process,
    least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def get(self, store: Store, kind: str, request_id: str) -> Any:
        key = (store.url, kind, request_id)
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, store: Store, kind: str, request_id: str, value: Any) -> None:
        self._items[(store.url, kind, request_id)] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_final = _FinalCache(FINAL_CACHE_SIZE)

QUEUED = "queued"
IN_PROGRESS = "in-progress"
# The states a call is counted under: where it is, or how it ended.
STATES: tuple[str, ...] = (
    QUEUED,
    IN_PROGRESS,
    "answered",
    "busy",
    "no-answer",
    "declined",
    "rejected",
    "failed",
    "canceled",
    "suppressed",
)


def state_of(result: str, outcome: str | None) -> str:
    """The dashboard state of a call from its `result` and `outcome`."""
    if result == Result.QUEUED.value:
        return QUEUED
    if result in _LIVE:
        return IN_PROGRESS
    if outcome:
        return outcome
    return "canceled" if result == Result.CANCELED.value else "failed"


def state_filter(state: str) -> sa.ColumnElement[bool]:
    """The WHERE clause selecting the calls in `state` (one of STATES)."""
    c = calls_table.c
    if state == QUEUED:
        return c.result == Result.QUEUED.value
    if state == IN_PROGRESS:
        return c.result.in_(_LIVE)
    final = c.result.notin_([Result.QUEUED.value, *_LIVE])
    if state == "failed":
        return sa.and_(final, sa.or_(c.outcome == "failed", c.outcome.is_(None)))
    return sa.and_(final, c.outcome == state)


@dataclass(slots=True)
class Progress:
    """Counts and pace of one request."""

    request_id: str
    report_id: str
    created_at: datetime
    canceled_at: datetime | None
    total: int
    sender: str | None = None
    paused_at: datetime | None = None
    priority: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    first_setup: datetime | None = None
    last_disconnect: datetime | None = None
    recent: int = 0  # calls finished within RATE_WINDOW seconds of now
    answered_by: dict[str, int] = field(default_factory=dict)  # machine detection's verdicts

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in (QUEUED, IN_PROGRESS))

    @property
    def status(self) -> str:
        if self.done >= self.total:
            canceled = self.canceled_at is not None and self.counts.get("canceled", 0) > 0
            return "canceled" if canceled else "done"
        if self.canceled_at is not None:
            return "canceling"
        if self.paused_at is not None:
            return "paused"
        if self.counts.get(IN_PROGRESS) or self.done:
            return "running"
        return "queued"

    def calls_per_minute(self, now: datetime) -> float:
        """Finished calls per minute: over the last RATE_WINDOW seconds while the
        request runs, over its whole run once it is done."""
        if self.first_setup is None or self.done == 0:
            return 0.0
        if self.done >= self.total:
            end = self.last_disconnect or now
            span = max((end - self.first_setup).total_seconds(), 1.0)
            return self.done * 60.0 / span
        window = min(RATE_WINDOW, max((now - self.first_setup).total_seconds(), 1.0))
        return self.recent * 60.0 / window

    def eta_seconds(self, now: datetime) -> float | None:
        """Estimated seconds until every call is final (None while unknown)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self.canceled_at is not None:
            return None
        rate = self.calls_per_minute(now)
        if rate <= 0:
            return None
        return left * 60.0 / rate

    def as_dict(self, now: datetime) -> dict[str, Any]:
        cpm = self.calls_per_minute(now)
        eta = self.eta_seconds(now)
        return {
            "request_id": self.request_id,
            "report_id": self.report_id,
            "created_at": _fmt(self.created_at),
            "canceled_at": _fmt(self.canceled_at),
            "from": self.sender,
            "status": self.status,
            "paused_at": _fmt(self.paused_at),
            "priority": self.priority,
            "total": self.total,
            "done": self.done,
            "counts": {s: self.counts.get(s, 0) for s in STATES}
            | {s: n for s, n in self.counts.items() if s not in STATES},
            "answered_by": dict(sorted(self.answered_by.items())),
            "calls_per_minute": round(cpm, 1),
            "eta_seconds": None if eta is None else round(eta),
        }


def _fmt(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


_REQ_COLS = (
    requests_table.c.id,
    requests_table.c.report_id,
    requests_table.c.created_at,
    requests_table.c.canceled_at,
    requests_table.c.total,
    requests_table.c.body["from"].as_string().label("sender"),
    requests_table.c.paused_at,
    requests_table.c.priority,
)


@dataclass(frozen=True, slots=True)
class _Aggregates:
    counts: dict[str, int]
    first_setup: datetime | None
    last_disconnect: datetime | None
    recent: int
    answered_by: dict[str, int] = field(default_factory=dict)


async def _progress_of(
    store: Store, session: Any, rows: Sequence[Any], now: datetime
) -> list[Progress]:
    """Fill counts for the requests in `rows` with one grouped query (finished
    requests come from the cache)."""
    out = {
        r.id: Progress(
            r.id,
            r.report_id,
            r.created_at,
            r.canceled_at,
            int(r.total),
            sender=r.sender,
            paused_at=r.paused_at,
            priority=int(r.priority),
        )
        for r in rows
    }
    todo = []
    for rid, p in out.items():
        cached: _Aggregates | None = _final.get(store, "progress", rid)
        if cached is None:
            todo.append(rid)
            continue
        p.counts = dict(cached.counts)
        p.answered_by = dict(cached.answered_by)
        p.first_setup, p.last_disconnect, p.recent = (
            cached.first_setup,
            cached.last_disconnect,
            cached.recent,
        )
    if todo:
        c = calls_table.c
        since = now - timedelta(seconds=RATE_WINDOW)
        grouped = await session.execute(
            sa.select(
                c.request_id,
                c.result,
                c.outcome,
                c.answered_by,
                sa.func.count().label("n"),
                sa.func.min(c.setup_time).label("first_setup"),
                sa.func.max(c.disconnect_time).label("last_disconnect"),
                sa.func.sum(sa.case((c.disconnect_time >= since, 1), else_=0)).label("recent"),
            )
            .where(c.request_id.in_(todo))
            .group_by(c.request_id, c.result, c.outcome, c.answered_by)
        )
        for g in grouped:
            p = out[g.request_id]
            state = state_of(g.result, g.outcome)
            p.counts[state] = p.counts.get(state, 0) + int(g.n)
            if g.answered_by:
                p.answered_by[g.answered_by] = p.answered_by.get(g.answered_by, 0) + int(g.n)
            if state not in (QUEUED, IN_PROGRESS):
                p.recent += int(g.recent or 0)
                last = _aware(g.last_disconnect)
                if last is not None and (p.last_disconnect is None or last > p.last_disconnect):
                    p.last_disconnect = last
            first = _aware(g.first_setup)
            if first is not None and (p.first_setup is None or first < p.first_setup):
                p.first_setup = first
        for rid in todo:
            p = out[rid]
            if p.total and p.done >= p.total:
                agg = _Aggregates(
                    dict(p.counts), p.first_setup, p.last_disconnect, 0, dict(p.answered_by)
                )
                _final.put(store, "progress", rid, agg)
    return [out[r.id] for r in rows]


def _aware(value: Any) -> datetime | None:
    """MIN/MAX over a UTCDateTime column loses the type decorator on SQLite."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value if isinstance(value, datetime) else None


async def list_requests(
    store: Store, tenant: str, *, limit: int = 20, before: tuple[datetime, str] | None = None
) -> tuple[list[Progress], tuple[datetime, str] | None]:
    """A page of the tenant's requests, newest first, with their progress, and the
    keyset cursor (created_at, id) of the next page (None on the last)."""
    r = requests_table.c
    query = sa.select(*_REQ_COLS).where(r.tenant == tenant)
    if before is not None:
        at, rid = before
        query = query.where(sa.or_(r.created_at < at, sa.and_(r.created_at == at, r.id < rid)))
    query = query.order_by(r.created_at.desc(), r.id.desc()).limit(limit + 1)
    now = utcnow()
    async with wrap_errors(), store.session(readonly=True) as session:
        rows = list(await session.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        page = await _progress_of(store, session, rows, now)
    cursor = (rows[-1].created_at, rows[-1].id) if more and rows else None
    return page, cursor


async def request_progress(store: Store, tenant: str, request_id: str) -> Progress | None:
    """One request of the tenant with its progress (None when unknown)."""
    r = requests_table.c
    now = utcnow()
    async with wrap_errors(), store.session(readonly=True) as session:
        row = (
            await session.execute(
                sa.select(*_REQ_COLS).where(r.id == request_id, r.tenant == tenant)
            )
        ).first()
        if row is None:
            return None
        return (await _progress_of(store, session, [row], now))[0]


async def calls_page(
    store: Store,
    request_id: str,
    *,
    state: str | None = None,
    after_seq: int = -1,
    limit: int = 100,
) -> list[sa.Row[Any]]:
    """Up to `limit` calls of a request in recipient order after `after_seq`,
    only those in `state` when given."""
    c = calls_table.c
    query = sa.select(calls_table).where(c.request_id == request_id, c.seq > after_seq)
    if state is not None:
        query = query.where(state_filter(state))
    query = query.order_by(c.seq).limit(limit)
    async with wrap_errors(), store.session(readonly=True) as session:
        return list(await session.execute(query))


def _epoch(store: Store, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Whole seconds since 1970 of a UTC timestamp column, in SQL."""
    if store.dialect == "sqlite":
        if _SQLITE_UNIXEPOCH:
            return sa.func.unixepoch(column, type_=sa.Integer)
        return sa.cast(sa.func.strftime("%s", column), sa.Integer)
    return sa.cast(sa.func.floor(sa.extract("epoch", column)), sa.BigInteger)


def bucket_width(span_seconds: float, buckets: int = MAX_BUCKETS) -> int:
    """The smallest 'nice' bar width (seconds) that fits `span_seconds` into `buckets`."""
    need = max(span_seconds, 1.0) / buckets
    for width in _NICE_WIDTHS:
        if width >= need:
            return width
    return int(math.ceil(need / 86400.0)) * 86400


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int  # seconds per bucket
    start: int | None  # epoch seconds of the first bucket
    buckets: list[dict[str, Any]]  # {"t": epoch, "counts": {outcome: n}}


async def timeline(store: Store, request_id: str, *, final: bool = False) -> Timeline:
    """Finished calls of a request per time bucket (by disconnect time) and outcome.
    `final`: every call of the request is final, so the answer may be cached."""
    if final:
        cached: Timeline | None = _final.get(store, "timeline", request_id)
        if cached is not None:
            return cached
    c = calls_table.c
    finished = sa.and_(c.request_id == request_id, c.disconnect_time.is_not(None))
    async with wrap_errors(), store.session(readonly=True) as session:
        bounds = (
            await session.execute(
                sa.select(sa.func.min(c.disconnect_time), sa.func.max(c.disconnect_time)).where(
                    finished
                )
            )
        ).first()
        first, last_time = (_aware(bounds[0]), _aware(bounds[1])) if bounds else (None, None)
        if first is None or last_time is None:
            return Timeline(1, None, [])
        lo, hi = int(first.timestamp()), int(last_time.timestamp())
        width = bucket_width(hi - lo + 1)
        start = lo - lo % width
        slot = sa.cast((_epoch(store, c.disconnect_time) - start) // width, sa.Integer).label(
            "slot"
        )
        rows = await session.execute(
            sa.select(slot, c.result, c.outcome, sa.func.count().label("n"))
            .where(finished)
            .group_by(slot, c.result, c.outcome)
        )
        per: dict[int, dict[str, int]] = {}
        for row in rows:
            counts = per.setdefault(int(row.slot), {})
            state = state_of(row.result, row.outcome)
            counts[state] = counts.get(state, 0) + int(row.n)
    last = max(per) if per else 0
    buckets = [{"t": start + i * width, "counts": per.get(i, {})} for i in range(last + 1)]
    result = Timeline(width, start, buckets)
    if final:
        _final.put(store, "timeline", request_id, result)
    return result
