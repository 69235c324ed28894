"""Claims: the due queued calls a node takes, shared fairly among the requests.

Claiming is one statement (STYLE habit 6): an UPDATE of each request's next due
`queued` rows that sets `result = 'dialing'` and the claiming node, with `FOR
UPDATE SKIP LOCKED` on PostgreSQL so dialers never wait for each other; on
SQLite the transaction is `BEGIN IMMEDIATE` (see store/db.py), one writer. How
many calls each request gets is store/fair.py's.

A claim's statements are built once (on SQLite, once per size class of the
number of requests it takes from) and take the claim's values as parameters:
building a statement per request per claim cost more than the database's work
(bench/RESULTS.md, 2026-12-03). Each request's pick reads only the rows it
takes, through ix_calls_claim_order (result, request_id, not_before, seq).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import LIVE_RESULTS, Result, now_precise
from ringcast.store import fair
from ringcast.store.db import Store
from ringcast.store.fence import ClaimedCall, Fence, wrap
from ringcast.store.models import calls_table, nodes_table, requests_table

calls = calls_table
requests = requests_table

LIVE_VALUES = [r.value for r in LIVE_RESULTS]
_QUEUED: sa.ColumnElement[str] = sa.literal_column(f"'{Result.QUEUED.value}'")
# Aliases of the calls table, made once: an alias copies every column of the
# table into objects that refer to each other, so one made per claim left ~60
# objects per claim for the cycle collector (bench/soak.py).
_DUE = calls.alias("due")
_LIVE = calls.alias("live")
_NOT_FINAL = calls.alias("nf")

# The parameters of a claim's statements.
_NOW = sa.bindparam("_now", type_=calls.c.not_before.type)
_STAMP = sa.bindparam("_stamp", type_=calls.c.updated_at.type)
_NODE = sa.bindparam("_node", type_=sa.String())
_EPOCH = sa.bindparam("_epoch", type_=sa.Integer())
_EXCLUDE = sa.bindparam("_exclude", expanding=True, type_=sa.String())
# Only a live node claims: its row must exist with the epoch it holds.
_ALIVE = sa.exists().where(nodes_table.c.id == _NODE, nodes_table.c.epoch == _EPOCH)
SQLITE_PICKS = 128  # per-request picks in one SQLite statement (compound SELECT limit: 500)


def _size_class(n: int) -> int:
    """`n` rounded up to a power of two (at most SQLITE_PICKS): the SQLite statements
    built are few, and a claim's unused picks are empty (LIMIT 0)."""
    size = 1
    while size < n:
        size *= 2
    return min(size, SQLITE_PICKS)


def _pick(rid: sa.ColumnElement[Any], k: sa.ColumnElement[Any]) -> sa.Select[tuple[str]]:
    """One request's next `k` due queued calls, in (not_before, seq) order, which is
    recipient order (a call given back keeps its not_before)."""
    return (
        sa.select(calls.c.id)
        .where(calls.c.result == _QUEUED, calls.c.request_id == rid, calls.c.not_before <= _NOW)
        .order_by(calls.c.not_before, calls.c.seq)
        .limit(k)
    )


@functools.lru_cache(maxsize=16)
def _picks(dialect: str, size: int) -> sa.Select[tuple[str]]:
    """The ids a claim takes. PostgreSQL: one LATERAL pick per request of the
    arrays `_rids`/`_ks`, `FOR UPDATE SKIP LOCKED`. SQLite: a UNION ALL of `size`
    picks `_r{i}`/`_k{i}` (one writer, nothing to skip)."""
    if dialect == "postgresql":
        q = sa.select(
            sa.func.unnest(sa.bindparam("_rids", type_=ARRAY(sa.String()))).label("rid"),
            sa.func.unnest(sa.bindparam("_ks", type_=ARRAY(sa.Integer()))).label("k"),
        ).subquery("q")
        per_request = _pick(q.c.rid, q.c.k).with_for_update(skip_locked=True).lateral("p")
        return sa.select(per_request.c.id).select_from(q).join(per_request, sa.true())
    picks = [
        _pick(
            sa.bindparam(f"_r{i}", type_=sa.String()), sa.bindparam(f"_k{i}", type_=sa.Integer())
        ).subquery()
        for i in range(size)
    ]
    if size == 1:
        return sa.select(picks[0].c.id)
    union = sa.union_all(*(sa.select(p.c.id) for p in picks)).subquery()
    return sa.select(union.c.id)


def _pick_params(dialect: str, shares: Sequence[tuple[str, int]]) -> dict[str, Any]:
    if dialect == "postgresql":
        return {"_rids": [rid for rid, _ in shares], "_ks": [k for _, k in shares]}
    params: dict[str, Any] = {}
    for i in range(_size_class(len(shares))):
        rid, k = shares[i] if i < len(shares) else ("", 0)
        params[f"_r{i}"] = rid
        params[f"_k{i}"] = k
    return params


def _node_params(node: Fence, now: datetime) -> dict[str, Any]:
    return {"_node": node.node_id, "_epoch": node.epoch, "_now": now}


def due_calls(
    store: Store, node: Fence, shares: Mapping[str, int], *, now: datetime
) -> sa.Select[tuple[str]]:
    """The ids of the calls a claim takes (with its values bound): of each request
    in `shares`, its next `shares[id]` due queued calls in recipient order."""
    items = list(shares.items())[: SQLITE_PICKS if store.dialect == "sqlite" else None]
    stmt = _picks(store.dialect, _size_class(len(items))).where(_ALIVE)
    return stmt.params(**_pick_params(store.dialect, items), **_node_params(node, now))


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


@functools.lru_cache(maxsize=16)
def _claim_statement(dialect: str, size: int) -> sa.Update:
    return (
        sa.update(calls)
        .where(calls.c.id.in_(_picks(dialect, size).scalar_subquery()), _ALIVE)
        .values(result=Result.DIALING.value, node_id=_NODE, claim_epoch=_EPOCH, updated_at=_STAMP)
        .returning(*_CLAIMED_COLUMNS)
    )


@functools.lru_cache(maxsize=4)
def _candidates(excluding: bool) -> sa.Select[Any]:
    due, live = _DUE, _LIVE
    live_count = (
        sa.select(sa.func.count())
        .select_from(live)
        .where(live.c.result.in_(LIVE_VALUES), live.c.request_id == requests.c.id)
        .scalar_subquery()
    )
    has_due = sa.exists().where(
        due.c.result == _QUEUED, due.c.request_id == requests.c.id, due.c.not_before <= _NOW
    )
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
        _ALIVE,
    )
    if excluding:
        stmt = stmt.where(requests.c.id.not_in(_EXCLUDE))
    return stmt


def candidates_query(
    store: Store, node: Fence, *, now: datetime, exclude_requests: Sequence[str] = ()
) -> sa.Select[Any]:
    """The requests a claim divides its calls among (store/fair.py): active, not
    paused, canceled or failed, with a due queued call; with their live calls
    (on every node) and stride pass. Two index lookups per active request."""
    stmt, params = _candidates_with(node, now, exclude_requests)
    return stmt.params(**params)


def _candidates_with(
    node: Fence, now: datetime, exclude_requests: Sequence[str]
) -> tuple[sa.Select[Any], dict[str, Any]]:
    params = _node_params(node, now)
    if exclude_requests:
        params["_exclude"] = list(exclude_requests)
    return _candidates(bool(exclude_requests)), params


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


_PASS_UPDATE = (
    sa.update(requests)
    .where(requests.c.id == sa.bindparam("_rid"))
    .values(vtime=sa.bindparam("_vtime"))
)


async def _take(
    s: AsyncSession, store: Store, node: Fence, split: Mapping[str, int], now: datetime
) -> list[Any]:
    """Claim each request's share of `split` (one statement; on SQLite one per
    SQLITE_PICKS requests)."""
    items = list(split.items())
    step = SQLITE_PICKS if store.dialect == "sqlite" else max(1, len(items))
    rows: list[Any] = []
    for first in range(0, len(items), step):
        part = items[first : first + step]
        params = {**_pick_params(store.dialect, part), **_node_params(node, now), "_stamp": now}
        stmt = _claim_statement(store.dialect, _size_class(len(part)))
        rows.extend((await s.execute(stmt, params)).all())
    return rows


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
            stmt, params = _candidates_with(node, now, exclude_requests)
            found = [
                fair.Candidate(r.id, r.tenant, r.priority, r.live, r.vtime)
                for r in (await s.execute(stmt, params)).all()
            ]
            candidates = []
            for c in found:
                if ready is not None and c.id not in ready:
                    waiting.append(c.id)
                else:
                    candidates.append(c)
            got: dict[str, int] = {}
            wanted = limit
            for _round in range(2):  # a request with fewer due calls leaves its share over
                split = fair.shares(candidates, wanted, cap)
                if not split:
                    break
                taken = await _take(s, store, node, split, now)
                rows.extend(taken)
                counts: dict[str, int] = {}
                for t in taken:
                    counts[t.request_id] = counts.get(t.request_id, 0) + 1
                for rid, k in counts.items():
                    got[rid] = got.get(rid, 0) + k
                wanted = limit - len(rows)
                # those that came short have nothing more to give (or it is locked);
                # the others, served or not (a claim's quanta leave some out), share
                # what is left
                short = {rid for rid, k in split.items() if counts.get(rid, 0) < k}
                if wanted <= 0 or not short:
                    break
                candidates = [
                    fair.Candidate(c.id, c.tenant, c.priority, c.live + got.get(c.id, 0), c.vtime)
                    for c in candidates
                    if c.id not in short
                ]
            passes = fair.advanced_passes(found, got)
            if passes:
                await s.execute(
                    _PASS_UPDATE,
                    [{"_rid": rid, "_vtime": v} for rid, v in sorted(passes.items())],
                )
    except SQLAlchemyError as exc:
        raise wrap(exc) from exc
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
    stmt, params = _candidates_with(node, now or now_precise(), ())
    try:
        async with store.session(readonly=True) as s:
            rows = (await s.execute(stmt, params)).all()
    except SQLAlchemyError as exc:
        raise wrap(exc) from exc
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
                not_final.c.result.in_([*LIVE_VALUES, Result.QUEUED.value]),
            ),
        )
        .values(active=False)
    )
    try:
        async with store.session() as s, s.begin():
            res = await s.execute(stmt)
    except SQLAlchemyError as exc:
        raise wrap(exc) from exc
    return int(res.rowcount)  # type: ignore[attr-defined]
