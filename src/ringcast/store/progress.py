"""What happens to a claimed call after its claim: dial start, progress, the end of
an attempt (and the next one queued), giving a call back, failing a request.

Every write is fenced by `(node_id, claim_epoch)` (store/fence.py): a node that
lost its claim updates nothing. The hot writes have bulk forms that the
dialer's group-commit writer (dialer/writer.py) batches.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ringcast.domain import FINAL_RESULTS, LIVE_RESULTS, Outcome, Result, now_precise, utcnow
from ringcast.store.db import Store
from ringcast.store.fence import Fence
from ringcast.store.models import call_attempts_table, calls_table, requests_table
from ringcast.store.records import attempt_log_entry, record_dict

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
    "recordings": None,  # an attempt's recordings are its own (attempts[] keeps them)
    "outcome": None,
    "node_id": None,
}


@dataclass(frozen=True)
class RequestInfo:
    id: str
    tenant: str
    body: Mapping[str, Any]
    canceled: bool
    prompt_error: str | None


def failed_values(error: str, now: datetime) -> dict[str, Any]:
    """Column values that end a call `failed` with `error`, owned by no node."""
    return {
        "result": Result.FAILED.value,
        "outcome": Outcome.FAILED.value,
        "error": error,
        "disconnect_time": now,
        "node_id": None,
        "updated_at": now,
    }


# Built once: a statement with an IN list built per call leaves its bind parameters
# in reference cycles (the collector's work on every call placed).
_REQUEST_INFO = sa.select(
    requests.c.id,
    requests.c.tenant,
    requests.c.body,
    requests.c.canceled_at,
    requests.c.prompt_error,
).where(requests.c.id.in_(sa.bindparam("ids", expanding=True)))
_CANCELED = sa.select(requests.c.id).where(
    requests.c.id.in_(sa.bindparam("ids", expanding=True)), requests.c.canceled_at.is_not(None)
)


async def load_requests(store: Store, ids: Iterable[str]) -> dict[str, RequestInfo]:
    ids = list(set(ids))
    if not ids:
        return {}
    async with store.session(readonly=True) as s, s.begin():
        rows = (await s.execute(_REQUEST_INFO, {"ids": ids})).all()
    return {
        r.id: RequestInfo(r.id, r.tenant, r.body, r.canceled_at is not None, r.prompt_error)
        for r in rows
    }


async def canceled_among(store: Store, request_ids: Iterable[str]) -> set[str]:
    """Which of these requests were canceled through the API."""
    ids = list(set(request_ids))
    if not ids:
        return set()
    async with store.session(readonly=True) as s, s.begin():
        return set((await s.execute(_CANCELED, {"ids": ids})).scalars())


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
        await queue_next_attempt(s, call_id, retry_at)
    return True


async def queue_next_attempt(s: AsyncSession, call_id: str, retry_at: datetime) -> None:
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
            .values(**failed_values(error, now))
        )
    return int(res.rowcount)  # type: ignore[attr-defined]
