"""The dialer's side of the store: claim queued calls, record progress, finish.

Claiming is one statement (STYLE habit 6): an UPDATE of the oldest due
`queued` rows that sets `result = 'dialing'` and the claiming node, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL so dialers never wait for each other;
on SQLite the transaction is `BEGIN IMMEDIATE` (see store/db.py), one writer.

Every write after the claim is fenced by `(node_id, claim_epoch)`: a node
that lost its claim (declared dead, calls rescued) updates nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ringcast.domain import FINAL_RESULTS, LIVE_RESULTS, Outcome, Result, now_precise, utcnow
from ringcast.errors import StoreError
from ringcast.store import fair
from ringcast.store.db import Store, db_now
from ringcast.store.models import (
    call_attempts_table,
    calls_table,
    counters_table,
    leases_table,
    nodes_table,
    requests_table,
)
from ringcast.store.records import attempt_log_entry, record_dict

log = logging.getLogger(__name__)

calls = calls_table
requests = requests_table

_CLEARED_ON_RETRY: dict[str, Any] = {
    "setup_time": None,
    "connect_time": None,
    "disconnect_time": None,
    "disconnect_cause_code": None,
    "disconnect_cause_text": None,
    "duration": 0,
    "answered": False,
    "codec": None,
    "error": None,
    "dtmf": None,
    "answered_by": None,
    "machine_detection_ms": None,
    "voicemail": None,
    "srtp": None,
    "transfer": None,
    "outcome": None,
    "node_id": None,
}


@dataclass(frozen=True)
class ClaimedCall:
    """A call this node now owns, with what is needed to dial it."""

    id: str
    request_id: str
    seq: int
    to_uri: str
    from_uri: str
    variables: Mapping[str, Any] | None
    timezone: str | None
    attempt: int
    epoch: int


@dataclass(frozen=True)
class RequestInfo:
    id: str
    tenant: str
    body: Mapping[str, Any]
    canceled: bool
    prompt_error: str | None


@dataclass(frozen=True)
class Fence:
    """Who may write a claimed call: the node and the epoch it claimed under."""

    node_id: str
    epoch: int

    def where(self) -> sa.ColumnElement[bool]:
        return sa.and_(calls.c.node_id == self.node_id, calls.c.claim_epoch == self.epoch)


def _failed(error: str, now: datetime) -> dict[str, Any]:
    """Column values that end a call `failed` with `error`, owned by no node."""
    return {
        "result": Result.FAILED.value,
        "outcome": Outcome.FAILED.value,
        "error": error,
        "disconnect_time": now,
        "node_id": None,
        "updated_at": now,
    }


def _wrap(exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"database error: {type(exc).__name__}")


_QUEUED: sa.ColumnElement[str] = sa.literal_column(f"'{Result.QUEUED.value}'")
# Aliases of the calls table, made once: an alias copies every column of the
# table into objects that refer to each other, so one made per claim left ~60
# objects per claim for the cycle collector (bench/soak.py).
_DUE = calls.alias("due")
_LIVE = calls.alias("live")
_NOT_FINAL = calls.alias("nf")


def due_calls(
    store: Store, node: Fence, shares: Mapping[str, int], *, now: datetime
) -> sa.Select[tuple[str]]:
    """The ids of the calls a claim takes: of each request in `shares`, its next
    `shares[id]` due queued calls in (not_before, seq) order, which is recipient
    order (a call given back keeps its not_before). ix_calls_claim_order
    (result, request_id, not_before, seq) holds that order per request, so the
    database reads just the rows it takes, whatever is queued behind them.

    PostgreSQL: one LATERAL pick per request, `FOR UPDATE SKIP LOCKED`; SQLite:
    a UNION ALL of the per-request picks (one writer, nothing to skip)."""
    alive = sa.exists().where(nodes_table.c.id == node.node_id, nodes_table.c.epoch == node.epoch)
    if store.dialect == "postgresql":
        q = (
            sa.select(
                sa.func.unnest(sa.literal(list(shares), ARRAY(sa.String))).label("rid"),
                sa.func.unnest(sa.literal(list(shares.values()), ARRAY(sa.Integer))).label("k"),
            )
        ).subquery("q")
        per_request = (
            sa.select(calls.c.id)
            .where(
                calls.c.result == _QUEUED,
                calls.c.request_id == q.c.rid,
                calls.c.not_before <= now,
            )
            .order_by(calls.c.not_before, calls.c.seq)
            .limit(q.c.k)
            .with_for_update(skip_locked=True)
            .lateral("p")
        )
        return sa.select(per_request.c.id).select_from(q).join(per_request, sa.true()).where(alive)
    picks = [
        sa.select(calls.c.id)
        .where(calls.c.result == _QUEUED, calls.c.request_id == rid, calls.c.not_before <= now)
        .order_by(calls.c.not_before, calls.c.seq)
        .limit(k)
        .subquery()
        for rid, k in shares.items()
    ]
    if len(picks) == 1:
        return sa.select(picks[0].c.id).where(alive)
    union = sa.union_all(*(sa.select(p.c.id) for p in picks)).subquery()
    return sa.select(union.c.id).where(alive)


def candidates_query(
    store: Store, node: Fence, *, now: datetime, exclude_requests: Sequence[str] = ()
) -> sa.Select[Any]:
    """The requests a claim divides its calls among (store/fair.py): active, not
    paused, canceled or failed, with a due queued call; with their live calls
    (on every node) and stride pass. Two index lookups per active request."""
    due, live = _DUE, _LIVE
    live_count = (
        sa.select(sa.func.count())
        .select_from(live)
        .where(live.c.result.in_(_live_values()), live.c.request_id == requests.c.id)
        .scalar_subquery()
    )
    has_due = sa.exists().where(
        due.c.result == _QUEUED, due.c.request_id == requests.c.id, due.c.not_before <= now
    )
    alive = sa.exists().where(nodes_table.c.id == node.node_id, nodes_table.c.epoch == node.epoch)
    stmt = sa.select(
        requests.c.id,
        requests.c.tenant,
        requests.c.priority,
        requests.c.vtime,
        live_count.label("live"),
    ).where(
        requests.c.active == sa.true(),
        requests.c.paused_at.is_(None),
        requests.c.canceled_at.is_(None),
        requests.c.prompt_error.is_(None),
        has_due,
        alive,
    )
    if exclude_requests:
        stmt = stmt.where(requests.c.id.not_in(list(exclude_requests)))
    return stmt


async def prefer_claim_order(s: AsyncSession) -> None:
    """On PostgreSQL, make this transaction's claim walk ix_calls_claim_order and
    stop after its rows. A queue's statistics are always stale (a request adds
    its calls all at once): estimating few queued rows, the planner would
    gather every queued call of a request and sort them (~50 ms per claim at
    57,600)."""
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(sa.text("SET LOCAL enable_sort = off"))


@dataclass(frozen=True)
class Claim:
    """What one claim took, and the requests it could not take from because
    their prompt is not ready on this node (`waiting`: prepare them)."""

    calls: list[ClaimedCall]
    waiting: list[str]


async def claim_calls(
    store: Store,
    node: Fence,
    limit: int,
    *,
    now: datetime | None = None,
    exclude_requests: Sequence[str] = (),
) -> list[ClaimedCall]:
    """Claim up to `limit` due queued calls for `node`, shared fairly among
    the requests that have some (see :func:`claim_fair`)."""
    claim = await claim_fair(store, node, limit, now=now, exclude_requests=exclude_requests)
    return claim.calls


_CLAIMED_COLUMNS = (
    calls.c.id,
    calls.c.request_id,
    calls.c.seq,
    calls.c.to_uri,
    calls.c.from_uri,
    calls.c.variables,
    calls.c.timezone,
    calls.c.attempt,
)


async def claim_fair(
    store: Store,
    node: Fence,
    limit: int,
    *,
    now: datetime | None = None,
    exclude_requests: Sequence[str] = (),
    ready: Container[str] | None = None,
    cap: Callable[[fair.Candidate], int] | None = None,
) -> Claim:
    """Claim up to `limit` due queued calls for `node` in one transaction:
    round-robin across tenants, then requests, weighted by priority
    (store/fair.py), each request's calls in recipient order.

    Only requests in `ready` (when given: their prompt is prepared on this
    node) are claimed from; the other candidates are answered in `waiting`.
    `cap(candidate)` bounds one request's share (its own limits). Each
    request's pass advances by what it got. Only a live node claims: its row
    must exist with the epoch it holds, so a node declared dead (its row
    deleted by a rescue) claims nothing until it has rejoined under a new epoch.
    """
    if limit <= 0:
        return Claim([], [])
    now = now or now_precise()
    rows: list[Any] = []
    waiting: list[str] = []
    try:
        async with store.session() as s, s.begin():
            await prefer_claim_order(s)
            found = (
                await s.execute(
                    candidates_query(store, node, now=now, exclude_requests=exclude_requests)
                )
            ).all()
            candidates = []
            for r in found:
                if ready is not None and r.id not in ready:
                    waiting.append(r.id)
                else:
                    candidates.append(fair.Candidate(r.id, r.tenant, r.priority, r.live, r.vtime))
            got: dict[str, int] = {}
            wanted = limit
            for _round in range(2):  # a request with fewer due calls leaves its share over
                split = fair.shares(candidates, wanted, cap)
                if not split:
                    break
                taken = (
                    await s.execute(
                        sa.update(calls)
                        .where(calls.c.id.in_(due_calls(store, node, split, now=now)))
                        .values(
                            result=Result.DIALING.value,
                            node_id=node.node_id,
                            claim_epoch=node.epoch,
                            updated_at=now,
                        )
                        .returning(*_CLAIMED_COLUMNS)
                    )
                ).all()
                rows.extend(taken)
                counts: dict[str, int] = {}
                for t in taken:
                    counts[t.request_id] = counts.get(t.request_id, 0) + 1
                for rid, k in counts.items():
                    got[rid] = got.get(rid, 0) + k
                wanted = limit - len(rows)
                full = {rid for rid, k in split.items() if counts.get(rid, 0) >= k}
                if wanted <= 0 or len(full) == len(split):
                    break
                candidates = [
                    fair.Candidate(c.id, c.tenant, c.priority, c.live + got.get(c.id, 0), c.vtime)
                    for c in candidates
                    if c.id in full
                ]
            passes = fair.advanced_passes(
                [fair.Candidate(r.id, r.tenant, r.priority, r.live, r.vtime) for r in found],
                got,
            )
            if passes:
                await s.execute(
                    sa.update(requests)
                    .where(requests.c.id == sa.bindparam("_rid"))
                    .values(vtime=sa.bindparam("_vtime")),
                    [{"_rid": rid, "_vtime": v} for rid, v in sorted(passes.items())],
                )
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    out = [
        ClaimedCall(
            id=r.id,
            request_id=r.request_id,
            seq=r.seq,
            to_uri=r.to_uri,
            from_uri=r.from_uri,
            variables=r.variables,
            timezone=r.timezone,
            attempt=r.attempt,
            epoch=node.epoch,
        )
        for r in rows
    ]
    return Claim(_round_robin(out), waiting)


async def waiting_requests(
    store: Store, node: Fence, ready: Container[str], *, now: datetime | None = None
) -> list[str]:
    """The requests with due calls whose prompt is not ready on this node (while
    every channel is busy: their prompts are prepared before one frees)."""
    stmt = candidates_query(store, node, now=now or now_precise())
    try:
        async with store.session(readonly=True) as s:
            rows = (await s.execute(stmt)).all()
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    return [r.id for r in rows if r.id not in ready]


def _round_robin(claimed: list[ClaimedCall]) -> list[ClaimedCall]:
    """The claimed calls in the order to start them: each request's calls in
    recipient order, the requests interleaved (the first of each, then the
    second of each, ...)."""
    by_request: dict[str, list[ClaimedCall]] = {}
    for c in sorted(claimed, key=lambda c: (c.request_id, c.seq)):
        by_request.setdefault(c.request_id, []).append(c)
    rank = {c.id: i for group in by_request.values() for i, c in enumerate(group)}
    return sorted(claimed, key=lambda c: (rank[c.id], c.request_id))


async def sweep_drained(store: Store) -> int:
    """Mark requests whose calls are all final as no longer active, so claims stop
    looking at them. A final call never becomes queued again (a retry is queued
    in the transaction that ends its attempt), so nothing can race this."""
    not_final = _NOT_FINAL
    stmt = (
        sa.update(requests)
        .where(
            requests.c.active == sa.true(),
            ~sa.exists().where(
                not_final.c.request_id == requests.c.id,
                not_final.c.result.in_([*_live_values(), Result.QUEUED.value]),
            ),
        )
        .values(active=False)
    )
    try:
        async with store.session() as s, s.begin():
            res = await s.execute(stmt)
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    return int(res.rowcount)  # type: ignore[attr-defined]


async def load_requests(store: Store, ids: Iterable[str]) -> dict[str, RequestInfo]:
    ids = list(set(ids))
    if not ids:
        return {}
    stmt = sa.select(
        requests.c.id,
        requests.c.tenant,
        requests.c.body,
        requests.c.canceled_at,
        requests.c.prompt_error,
    ).where(requests.c.id.in_(ids))
    async with store.session(readonly=True) as s, s.begin():
        rows = (await s.execute(stmt)).all()
    return {
        r.id: RequestInfo(r.id, r.tenant, r.body, r.canceled_at is not None, r.prompt_error)
        for r in rows
    }


async def canceled_among(store: Store, request_ids: Iterable[str]) -> set[str]:
    """Which of these requests were canceled through the API."""
    ids = list(set(request_ids))
    if not ids:
        return set()
    stmt = sa.select(requests.c.id).where(
        requests.c.id.in_(ids), requests.c.canceled_at.is_not(None)
    )
    async with store.session(readonly=True) as s, s.begin():
        return set((await s.execute(stmt)).scalars())


# --- writes inside a group-commit transaction (dialer/writer.py) ---------------


async def update_call(
    s: AsyncSession, call_id: str, fence: Fence, values: Mapping[str, Any]
) -> bool:
    """Set columns of a live call this node owns; False if the claim was lost."""
    return (await update_calls(s, [CallUpdate(call_id, fence, values)]))[0]


# --- bulk forms of the hot writes (dialer/writer.py batches them) --------------
#
# At hundreds of calls per second the per-statement cost of building and
# executing an UPDATE dominates the dialer. The writes below share one cached
# statement per shape and run as one executemany per shape and batch. Callers
# never put two writes of the same call in one list, so grouping by shape
# cannot reorder a call's own writes.


@dataclass(frozen=True)
class CallUpdate:
    """New column values for a live call this node owns."""

    call_id: str
    fence: Fence
    values: Mapping[str, Any]


@dataclass(frozen=True)
class DialStart:
    """The moment the INVITE of a claimed call is about to leave."""

    call_id: str
    fence: Fence
    setup_time: datetime


def _is_live() -> sa.ColumnElement[bool]:
    return calls.c.result.in_([sa.literal_column(f"'{v}'") for v in _live_values()])


def _fenced_by_params() -> sa.ColumnElement[bool]:
    return sa.and_(
        calls.c.id == sa.bindparam("_id"),
        calls.c.node_id == sa.bindparam("_node"),
        calls.c.claim_epoch == sa.bindparam("_epoch"),
    )


_STAMP = sa.bindparam("_stamp", type_=calls.c.updated_at.type)
_update_statements: dict[tuple[str, ...], sa.Update] = {}


def _update_statement(columns: tuple[str, ...]) -> sa.Update:
    stmt = _update_statements.get(columns)
    if stmt is None:
        unknown = set(columns) - set(calls.c.keys())
        if unknown:
            raise ValueError(f"not columns of calls: {sorted(unknown)}")
        stmt = (
            sa.update(calls)
            .where(_fenced_by_params(), _is_live())
            .values({c: sa.bindparam(f"_v_{c}", type_=calls.c[c].type) for c in columns})
            .values(updated_at=_STAMP)
        )
        _update_statements[columns] = stmt
    return stmt


def _fence_params(call_id: str, fence: Fence, stamp: datetime) -> dict[str, Any]:
    return {"_id": call_id, "_node": fence.node_id, "_epoch": fence.epoch, "_stamp": stamp}


async def _stamped(
    s: AsyncSession, ids: Sequence[str], stamp: datetime
) -> dict[str, tuple[str | None, int | None, bool]]:
    """For each call: its owner, claim epoch, and whether this batch's write
    (which set `updated_at` to `stamp`) took."""
    took = sa.case((calls.c.updated_at == stamp, True), else_=False)
    rows = await s.execute(
        sa.select(calls.c.id, calls.c.node_id, calls.c.claim_epoch, took).where(
            calls.c.id.in_(list(ids))
        )
    )
    return {r[0]: (r[1], r[2], bool(r[3])) for r in rows}


def _all_rows_taken(res: Any, n: int, s: AsyncSession) -> bool:
    """True when the executemany's rowcount proves every row was updated
    (only drivers with a summed rowcount can tell; asyncpg cannot)."""
    dialect = s.bind.dialect if s.bind is not None else None
    return bool(dialect and dialect.supports_sane_multi_rowcount and res.rowcount == n)


def _not_canceled() -> sa.ColumnElement[bool]:
    return ~sa.exists().where(
        requests.c.id == calls.c.request_id, requests.c.canceled_at.is_not(None)
    )


_START_STATEMENT = (
    sa.update(calls)
    .where(
        _fenced_by_params(),
        calls.c.result == sa.literal_column(f"'{Result.DIALING.value}'"),
        _not_canceled(),
    )
    .values(setup_time=sa.bindparam("_v_setup_time", type_=calls.c.setup_time.type))
    .values(updated_at=_STAMP)
)

_pg_statements: dict[tuple[tuple[str, ...], bool], sa.Update] = {}


def _pg_bulk_statement(columns: tuple[str, ...], *, start: bool = False) -> sa.Update:
    """PostgreSQL: one UPDATE for a whole group, its rows zipped from arrays
    (`unnest`), answering with the ids it updated — one round trip, where an
    executemany cannot tell which of its rows took. `start`: the condition of
    `start_dialing` (still dialing, request not canceled) instead of "live"."""
    stmt = _pg_statements.get((columns, start))
    if stmt is None:
        _update_statement(columns)  # validates the column names
        v = sa.select(
            *(
                sa.func.unnest(sa.bindparam(f"_a{name}", type_=ARRAY(calls.c[col].type))).label(
                    name
                )
                for name, col in (
                    ("_id", "id"),
                    ("_node", "node_id"),
                    ("_epoch", "claim_epoch"),
                    *((f"_v_{c}", c) for c in columns),
                )
            )
        ).subquery("v")
        if start:
            condition = sa.and_(calls.c.result == Result.DIALING.value, _not_canceled())
        else:
            condition = _is_live()
        stmt = (
            sa.update(calls)
            .where(
                calls.c.id == v.c._id,
                calls.c.node_id == v.c._node,
                calls.c.claim_epoch == v.c._epoch,
                condition,
            )
            .values({c: v.c[f"_v_{c}"] for c in columns})
            .values(updated_at=_STAMP)
            .returning(calls.c.id)
        )
        _pg_statements[(columns, start)] = stmt
    return stmt


async def _pg_bulk_update(
    conn: AsyncConnection,
    rows: Sequence[tuple[str, Fence, Mapping[str, Any]]],
    stamp: datetime,
    *,
    start: bool = False,
) -> set[str]:
    """Apply (call id, fence, values) rows that share their columns; the ids updated."""
    columns = tuple(sorted(rows[0][2]))
    params: dict[str, Any] = {
        "_stamp": stamp,
        "_a_id": [r[0] for r in rows],
        "_a_node": [r[1].node_id for r in rows],
        "_a_epoch": [r[1].epoch for r in rows],
    }
    for c in columns:
        params[f"_a_v_{c}"] = [r[2][c] for r in rows]
    res = await conn.execute(_pg_bulk_statement(columns, start=start), params)
    return set(res.scalars())


async def update_calls(s: AsyncSession, updates: Sequence[CallUpdate]) -> list[bool]:
    """`update_call` for many calls at once; one flag per update, in order."""
    if not updates:
        return []
    stamp = now_precise()
    shapes: dict[tuple[str, ...], list[CallUpdate]] = {}
    for u in updates:
        shapes.setdefault(tuple(sorted(u.values)), []).append(u)
    conn = await s.connection()
    if conn.dialect.name == "postgresql":
        took: set[str] = set()
        for group in shapes.values():
            took |= await _pg_bulk_update(
                conn, [(u.call_id, u.fence, u.values) for u in group], stamp
            )
        return [u.call_id in took for u in updates]
    complete = True
    for columns, group in shapes.items():
        params = [
            {
                **_fence_params(u.call_id, u.fence, stamp),
                **{f"_v_{c}": u.values[c] for c in columns},
            }
            for u in group
        ]
        res = await conn.execute(_update_statement(columns), params)
        complete = complete and _all_rows_taken(res, len(params), s)
    if complete:
        return [True] * len(updates)
    state = await _stamped(s, [u.call_id for u in updates], stamp)
    return [
        state.get(u.call_id, (None, None, False)) == (u.fence.node_id, u.fence.epoch, True)
        for u in updates
    ]


async def start_dialing_many(s: AsyncSession, starts: Sequence[DialStart]) -> list[Start]:
    """`start_dialing` for many calls at once; one answer per call, in order."""
    if not starts:
        return []
    stamp = now_precise()
    conn = await s.connection()
    if conn.dialect.name == "postgresql":
        rows = [(d.call_id, d.fence, {"setup_time": d.setup_time}) for d in starts]
        if len(await _pg_bulk_update(conn, rows, stamp, start=True)) == len(starts):
            return [Start.DIAL] * len(starts)
    else:
        params = [
            {**_fence_params(d.call_id, d.fence, stamp), "_v_setup_time": d.setup_time}
            for d in starts
        ]
        res = await conn.execute(_START_STATEMENT, params)
        if _all_rows_taken(res, len(params), s):
            return [Start.DIAL] * len(starts)
    state = await _stamped(s, [d.call_id for d in starts], stamp)
    out = []
    for d in starts:
        node, epoch, took = state.get(d.call_id, (None, None, False))
        if (node, epoch) != (d.fence.node_id, d.fence.epoch):
            out.append(Start.LOST)
        else:
            out.append(Start.DIAL if took else Start.CANCELED)
    return out


class Start(enum.Enum):
    """What `start_dialing` found."""

    DIAL = "dial"
    CANCELED = "canceled"  # the request was canceled since the claim: do not dial
    LOST = "lost"  # the claim went to another node: do not dial


async def start_dialing(s: AsyncSession, call_id: str, fence: Fence, setup_time: datetime) -> Start:
    """Record `setup_time` just before the INVITE leaves, durably, so that a
    crash from here on can never dial the call again. Refused when the claim
    was lost or the request was canceled meanwhile."""
    return (await start_dialing_many(s, [DialStart(call_id, fence, setup_time)]))[0]


def _live_values() -> list[str]:
    return [r.value for r in LIVE_RESULTS]


async def finish_call(
    s: AsyncSession,
    call_id: str,
    fence: Fence,
    values: Mapping[str, Any],
    *,
    retry_at: datetime | None = None,
) -> bool:
    """Write the final fields of an attempt. With `retry_at`, keep the finished
    attempt in `call_attempts` and queue the next attempt for that time."""
    if not await update_call(s, call_id, fence, values):
        return False
    if retry_at is not None:
        await _queue_next_attempt(s, call_id, retry_at)
    return True


async def _queue_next_attempt(s: AsyncSession, call_id: str, retry_at: datetime) -> None:
    """Keep the finished attempt's record in `call_attempts`, then queue the
    next attempt of the call for `retry_at` with its outcome fields cleared."""
    row = (await s.execute(sa.select(calls).where(calls.c.id == call_id))).one()
    record = record_dict(row)
    await s.execute(
        sa.insert(call_attempts_table).values(call_id=call_id, attempt=row.attempt, record=record)
    )
    entry = attempt_log_entry(record)
    await s.execute(
        sa.update(calls)
        .where(calls.c.id == call_id)
        .values(
            **_CLEARED_ON_RETRY,
            attempts_log=f"{row.attempts_log},{entry}" if row.attempts_log else entry,
            result=Result.QUEUED.value,
            attempt=row.attempt + 1,
            not_before=retry_at,
            updated_at=utcnow(),
        )
    )


async def requeue(s: AsyncSession, call_id: str, fence: Fence) -> bool:
    """Give back a claimed, not yet dialed call as it was: its not_before
    unchanged, so it keeps its place in its request's recipient order."""
    stmt = (
        sa.update(calls)
        .where(calls.c.id == call_id, fence.where(), calls.c.result == Result.DIALING.value)
        .values(result=Result.QUEUED.value, node_id=None, updated_at=utcnow())
    )
    return bool((await s.execute(stmt)).rowcount)  # type: ignore[attr-defined]


async def requeue_later(s: AsyncSession, call_id: str, fence: Fence, not_before: datetime) -> bool:
    """Give back a claimed, not yet dialed call (outside its window, say)."""
    stmt = (
        sa.update(calls)
        .where(calls.c.id == call_id, fence.where(), calls.c.result == Result.DIALING.value)
        .values(
            result=Result.QUEUED.value, node_id=None, not_before=not_before, updated_at=utcnow()
        )
    )
    return bool((await s.execute(stmt)).rowcount)  # type: ignore[attr-defined]


async def fail_request(store: Store, request_id: str, error: str) -> int:
    """The request's prompt could not be prepared: no one is called. Every call
    not yet final ends `failed` with `error`. Returns how many calls it ended."""
    now = utcnow()
    not_final = calls.c.result.not_in([r.value for r in FINAL_RESULTS])
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(requests).where(requests.c.id == request_id).values(prompt_error=error)
        )
        res = await s.execute(
            sa.update(calls)
            .where(calls.c.request_id == request_id, not_final)
            .values(**_failed(error, now))
        )
    return int(res.rowcount)  # type: ignore[attr-defined]


# --- nodes and recovery --------------------------------------------------------


async def register_node(store: Store, node_id: str) -> int:
    """Insert this node's row under a new epoch, which fences every write it
    makes. Epochs come from a counter that only grows, so a node that rejoins
    after being declared dead never gets back an epoch it held before."""
    async with store.session() as s, s.begin():
        now = await db_now(s)
        bumped = await s.execute(
            sa.update(counters_table)
            .where(counters_table.c.name == "node_epoch")
            .values(value=counters_table.c.value + 1)
            .returning(counters_table.c.value)
        )
        epoch = bumped.scalar()
        if epoch is None:
            epoch = 1
            await s.execute(sa.insert(counters_table).values(name="node_epoch", value=epoch))
        await s.execute(sa.delete(nodes_table).where(nodes_table.c.id == node_id))
        await s.execute(
            sa.insert(nodes_table).values(id=node_id, started_at=now, heartbeat_at=now, epoch=epoch)
        )
    return int(epoch)


async def heartbeat(store: Store, node_id: str) -> bool:
    """Refresh the node's heartbeat; False if the node was declared dead."""
    async with store.session() as s, s.begin():
        res = await s.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.id == node_id)
            .values(heartbeat_at=await db_now(s))
        )
    return bool(res.rowcount)  # type: ignore[attr-defined]


async def unregister_node(store: Store, node_id: str) -> None:
    async with store.session() as s, s.begin():
        await s.execute(sa.delete(nodes_table).where(nodes_table.c.id == node_id))


async def rescue_calls(
    store: Store,
    *,
    me: str,
    stale_after: float | None,
    error: str,
    retry_delay: Callable[[Mapping[str, Any], int], float | None] | None = None,
) -> tuple[int, int]:
    """Take back calls owned by dead nodes.

    A node is dead when its heartbeat is older than `stale_after` seconds, or
    (with `stale_after=None`, single-node SQLite) whenever it is not `me`.
    Calls it claimed but had not dialed (no `setup_time`) go back to the queue;
    calls it had dialed end `failed` with `error` — they are never dialed again
    unless their request retries on `failed`: `retry_delay(request body,
    attempt)` gives the delay before the next attempt, or None. Returns
    (requeued, failed).
    """
    async with store.session() as s, s.begin():
        now = await db_now(s)
        alive = sa.select(nodes_table.c.id)
        if stale_after is None:
            alive = alive.where(nodes_table.c.id == me)
        else:
            alive = alive.where(nodes_table.c.heartbeat_at >= now - timedelta(seconds=stale_after))
        orphan = sa.and_(
            calls.c.result.in_(_live_values()),
            sa.or_(calls.c.node_id.is_(None), calls.c.node_id.not_in(alive.scalar_subquery())),
        )
        requeued = await s.execute(
            sa.update(calls)
            .where(orphan, calls.c.setup_time.is_(None))
            .values(result=Result.QUEUED.value, node_id=None, updated_at=now)
        )
        lost = (
            await s.execute(
                sa.update(calls)
                .where(orphan)
                .values(**_failed(error, now))
                .returning(calls.c.id, calls.c.request_id, calls.c.attempt)
            )
        ).all()
        for row in lost:
            if retry_delay is None:
                continue
            body = (
                await s.execute(sa.select(requests.c.body).where(requests.c.id == row.request_id))
            ).scalar_one()
            delay = retry_delay(body, row.attempt)
            if delay is not None:
                await _queue_next_attempt(s, row.id, now + timedelta(seconds=delay))
        # Dead nodes go, and so do their capacity leases (store/limiter.py).
        dead = sa.select(nodes_table.c.id).where(nodes_table.c.id.not_in(alive.scalar_subquery()))
        await s.execute(
            sa.delete(leases_table).where(
                sa.or_(
                    leases_table.c.node_id.in_(dead.scalar_subquery()),
                    leases_table.c.node_id.not_in(sa.select(nodes_table.c.id).scalar_subquery()),
                )
            )
        )
        await s.execute(sa.delete(nodes_table).where(nodes_table.c.id.in_(dead.scalar_subquery())))
    n_requeued = int(requeued.rowcount)  # type: ignore[attr-defined]
    if n_requeued or lost:
        log.warning(
            "rescued calls of dead nodes: %d requeued, %d failed (%s)", n_requeued, len(lost), error
        )
    return n_requeued, len(lost)
