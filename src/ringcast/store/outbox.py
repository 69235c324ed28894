"""The durable webhook outbox: events are rows, written in the same transaction
as the call-state change they report (the outbox pattern), and delivered later
by :class:`ringcast.webhooks.deliver.WebhookDeliverer`.

Writers (inside the caller's transaction):

- :func:`enqueue` inserts one event; a given `webhook_id` is inserted once
  (``INSERT ... ON CONFLICT DO NOTHING``), so deterministic ids make enqueueing
  idempotent: :func:`call_event_id` and :func:`request_completed_id`;
- :func:`notify_call` builds a call event from the call's row as the
  transaction sees it and, after a final event, enqueues ``request.completed``
  once every call of the request is final.

The deliverer's side (own transactions): :func:`claim_due` takes due rows in one
statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and leases them by moving
`next_attempt_at` forward; :func:`settle` records the outcome of attempts.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import FINAL_RESULTS, Result, format_time, now_precise
from ringcast.errors import StoreError
from ringcast.store.db import Store
from ringcast.store.models import (
    UTCDateTime,
    api_keys_table,
    call_attempts_table,
    calls_table,
    requests_table,
    webhook_outbox_table,
)
from ringcast.store.records import record_dict

log = logging.getLogger(__name__)

outbox = webhook_outbox_table

CALL_RINGING = "call.ringing"
CALL_ANSWERED = "call.answered"
CALL_COMPLETED = "call.completed"
CALL_FAILED = "call.failed"
CALL_CANCELED = "call.canceled"
CALL_MACHINE_DETECTED = "call.machine_detected"  # answered_by decided (machine detection)
CALL_DIGITS = "call.digits"  # a gather with actions got its digits (or none)
CALL_TRANSFERRED = "call.transferred"  # a transfer ended: the record's `transfer`
CALL_RECORDED = "call.recorded"  # the call's recordings are stored (record has `recordings`)
REQUEST_COMPLETED = "request.completed"
EVENT_TYPES = frozenset(
    {
        CALL_RINGING,
        CALL_ANSWERED,
        CALL_MACHINE_DETECTED,
        CALL_DIGITS,
        CALL_TRANSFERRED,
        CALL_RECORDED,
        CALL_COMPLETED,
        CALL_FAILED,
        CALL_CANCELED,
        REQUEST_COMPLETED,
    }
)
FINAL_CALL_EVENTS = frozenset({CALL_COMPLETED, CALL_FAILED, CALL_CANCELED})

# The call event that reports a call reaching each result.
EVENT_OF_RESULT: Mapping[Result, str] = {
    Result.RINGING: CALL_RINGING,
    Result.IN_PROGRESS: CALL_ANSWERED,
    Result.COMPLETED: CALL_COMPLETED,
    Result.FAILED: CALL_FAILED,
    Result.CANCELED: CALL_CANCELED,
}

WEBHOOK_ID_MAX = 64  # webhook_outbox.webhook_id is String(64)
# Seconds request.completed waits after it is enqueued, so that it normally
# arrives after the call events committed with it (delivery order is not
# guaranteed: retries reorder events; receivers use the payload timestamps).
REQUEST_COMPLETED_DELAY = 1.0
_FINAL = [r.value for r in FINAL_RESULTS]


def _wrap(exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"database error: {type(exc).__name__}")


# --- ids and payloads ------------------------------------------------------------


def new_webhook_id() -> str:
    """A random webhook id (``msg_`` + 32 hex digits)."""
    return "msg_" + uuid.uuid4().hex


def _bounded_id(readable: str) -> str:
    if len(readable) <= WEBHOOK_ID_MAX:
        return readable
    return "msg_" + hashlib.sha256(readable.encode()).hexdigest()[:40]


def call_event_id(call_id: str, attempt: int, event_type: str) -> str:
    """The id of `event_type` for one attempt of a call: the same on every
    enqueue, so reporting an event twice inserts one row. Contains no '.'."""
    return _bounded_id(f"msg_{call_id}_{int(attempt)}_{event_type.replace('.', '_')}")


def request_completed_id(request_id: str) -> str:
    """The id of a request's one ``request.completed`` event."""
    return _bounded_id(f"msg_{request_id}_request_completed")


def iso_timestamp(value: datetime | None = None) -> str:
    """An event timestamp as the spec shows it: ``2022-11-03T20:26:10.344522Z``."""
    value = (value or now_precise()).astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_payload(
    event_type: str, data: Mapping[str, Any], *, at: datetime | None = None
) -> dict[str, Any]:
    """``{"type", "timestamp", "data"}``: the Standard Webhooks payload shape."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    return {"type": event_type, "timestamp": iso_timestamp(at), "data": dict(data)}


# --- writers (inside the caller's transaction) ---------------------------------------


def _event_of(result: Any) -> str | None:
    try:
        return EVENT_OF_RESULT.get(Result(result))
    except ValueError:
        return None


def _insert_ignoring_duplicates(dialect: str, values: dict[str, Any]) -> Any:
    if dialect == "postgresql":
        return (
            postgresql.insert(outbox)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["webhook_id"])
        )
    return (
        sqlite.insert(outbox).values(**values).on_conflict_do_nothing(index_elements=["webhook_id"])
    )


async def enqueue(
    s: AsyncSession,
    *,
    url: str,
    api_key_id: str | None,
    event_type: str,
    payload: dict[str, Any],
    webhook_id: str | None = None,
    now: datetime | None = None,
    delay: float = 0.0,
) -> str:
    """Insert one outbox row in the caller's transaction; return its webhook id.

    The row commits (or rolls back) with the state change it reports. With a
    `webhook_id` that is already in the outbox nothing is inserted (idempotent).
    `payload` is sent as is (build it with :func:`build_payload`); it must hold
    no secrets. The first attempt is made `delay` seconds after `now`.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    webhook_id = webhook_id or new_webhook_id()
    if len(webhook_id) > WEBHOOK_ID_MAX or "." in webhook_id:
        raise ValueError(f"webhook id must be at most {WEBHOOK_ID_MAX} characters, without '.'")
    now = now or now_precise()
    values = {
        "webhook_id": webhook_id,
        "api_key_id": api_key_id,
        "url": url,
        "event_type": event_type,
        "payload": payload,
        "created_at": now,
        "next_attempt_at": now + timedelta(seconds=delay),
        "attempts": 0,
    }
    await s.execute(_insert_ignoring_duplicates(s.get_bind().dialect.name, values))
    return webhook_id


def _live_call(request_id: str) -> sa.ScalarSelect[Any]:
    """One non-final call of the request, looked for from the highest `seq` down
    (the index on (request_id, seq)): calls are dialed in `seq` order, so while
    the request runs one is found at once, however big the request."""
    return (
        sa.select(calls_table.c.seq)
        .where(calls_table.c.request_id == request_id, calls_table.c.result.not_in(_FINAL))
        .order_by(calls_table.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


def _any_call(request_id: str) -> sa.ScalarSelect[Any]:
    return (
        sa.select(calls_table.c.seq)
        .where(calls_table.c.request_id == request_id)
        .limit(1)
        .scalar_subquery()
    )


async def request_finished(s: AsyncSession, request_id: str) -> bool:
    """True when the request has calls and none of them is non-final (as this
    transaction sees them). One cheap statement, even on big requests."""
    row = (
        await s.execute(
            sa.select(_live_call(request_id).label("live"), _any_call(request_id).label("any"))
        )
    ).one()
    return row.live is None and row.any is not None


async def request_summary(s: AsyncSession, request_id: str) -> dict[str, Any]:
    """The ``request.completed`` data: ids, counts by result and by outcome.

    Nothing of the request body is included (its `sip` part holds passwords).
    """
    req = (
        await s.execute(
            sa.select(
                requests_table.c.id,
                requests_table.c.report_id,
                requests_table.c.total,
                requests_table.c.created_at,
                requests_table.c.canceled_at,
            ).where(requests_table.c.id == request_id)
        )
    ).one_or_none()
    rows = (
        await s.execute(
            sa.select(calls_table.c.result, calls_table.c.outcome, sa.func.count())
            .where(calls_table.c.request_id == request_id)
            .group_by(calls_table.c.result, calls_table.c.outcome)
        )
    ).all()
    results: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for result, outcome, n in rows:
        results[result] = results.get(result, 0) + int(n)
        if outcome is not None:
            outcomes[outcome] = outcomes.get(outcome, 0) + int(n)
    done = sum(n for r, n in results.items() if r in _FINAL)
    summary: dict[str, Any] = {"id": request_id}
    if req is not None:
        summary.update(
            report_id=req.report_id,
            location=f"/report/{req.report_id}",
            request_time=format_time(req.created_at),
            canceled=req.canceled_at is not None,
        )
    summary.update(
        total=int(req.total) if req is not None else sum(results.values()),
        done=done,
        results=dict(sorted(results.items())),
        outcomes=dict(sorted(outcomes.items())),
    )
    return summary


_CALLBACK_URL = requests_table.c.body["callback_url"].as_string()  # not the whole body


async def _request_target(s: AsyncSession, request_id: str) -> tuple[str, str | None] | None:
    """(callback_url, api_key_id) of a request, or None without a callback URL.
    Reads only the URL out of the stored body (the playlist may be large)."""
    row = (
        await s.execute(
            sa.select(_CALLBACK_URL.label("url"), requests_table.c.api_key_id).where(
                requests_table.c.id == request_id
            )
        )
    ).one_or_none()
    if row is None or not row.url:
        return None
    return str(row.url), row.api_key_id


async def notify_request_completed(
    s: AsyncSession, request_id: str, *, now: datetime | None = None
) -> str | None:
    """Enqueue ``request.completed`` (once: its id is fixed) if every call of the
    request is final and it has a callback URL. Returns the webhook id or None."""
    target = await _request_target(s, request_id)
    if target is None:
        return None
    return await _complete_if_finished(s, request_id, *target, now=now)


async def _complete_if_finished(
    s: AsyncSession,
    request_id: str,
    url: str,
    api_key_id: str | None,
    *,
    now: datetime | None,
) -> str | None:
    # One statement answers "already enqueued?" and "finished?"; the summary
    # (a GROUP BY over the request's calls) is built once, for the insert.
    webhook_id = request_completed_id(request_id)
    enqueued = (
        sa.select(outbox.c.id).where(outbox.c.webhook_id == webhook_id).limit(1).scalar_subquery()
    )
    row = (
        await s.execute(
            sa.select(
                enqueued.label("enqueued"),
                _live_call(request_id).label("live"),
                _any_call(request_id).label("any"),
            )
        )
    ).one()
    if row.enqueued is not None:
        return webhook_id
    if row.live is not None or row.any is None:
        return None
    summary = await request_summary(s, request_id)
    return await enqueue(
        s,
        url=url,
        api_key_id=api_key_id,
        event_type=REQUEST_COMPLETED,
        payload=build_payload(REQUEST_COMPLETED, summary, at=now),
        webhook_id=webhook_id,
        now=now,
        delay=REQUEST_COMPLETED_DELAY,
    )


async def notify_call(
    s: AsyncSession,
    call_id: str,
    event_type: str | None = None,
    *,
    now: datetime | None = None,
) -> str | None:
    """Enqueue the event for the call's state as this transaction sees it.

    Call it in the same transaction, right after the write that changed the
    call (``queue.update_call`` / ``queue.finish_call``). `event_type` defaults
    to the event of the call's current result (see :data:`EVENT_OF_RESULT`).
    For a call that `finish_call(retry_at=...)` just re-queued, the event is
    the finished attempt's final one, with that attempt's record (from
    ``call_attempts``) and ``"retrying": true``. After a final event,
    ``request.completed`` is enqueued when no call of the request is left
    non-final.

    Returns the webhook id, or None when the request has no callback URL or the
    call's state has no event. Idempotent per (call, attempt, event). Costs two
    statements (three after a final event).
    """
    call = (
        await s.execute(
            sa.select(
                calls_table,
                _CALLBACK_URL.label("callback_url_"),
                requests_table.c.api_key_id.label("api_key_id_"),
            )
            .join(requests_table, requests_table.c.id == calls_table.c.request_id)
            .where(calls_table.c.id == call_id)
        )
    ).one_or_none()
    if call is None or not call.callback_url_:
        return None
    url, api_key_id = str(call.callback_url_), call.api_key_id_
    attempt = int(call.attempt)
    record = record_dict(call)
    data: dict[str, Any] = {"request_id": call.request_id}
    retried = call.result == Result.QUEUED.value and attempt > 1
    if retried and (event_type is None or event_type in FINAL_CALL_EVENTS):
        # queue.finish_call(retry_at=...) kept the finished attempt in call_attempts
        # and queued the next one: report the finished attempt.
        previous = (
            await s.execute(
                sa.select(call_attempts_table.c.record).where(
                    call_attempts_table.c.call_id == call_id,
                    call_attempts_table.c.attempt == attempt - 1,
                )
            )
        ).scalar_one_or_none()
        if previous is not None:
            attempt -= 1
            record = dict(previous)
            data["retrying"] = True
    if event_type is None:
        event_type = _event_of(record.get("result"))
        if event_type is None:
            return None
    if event_type not in EVENT_TYPES or event_type == REQUEST_COMPLETED:
        raise ValueError(f"not a call event type: {event_type!r}")
    data.update(record)
    webhook_id = await enqueue(
        s,
        url=url,
        api_key_id=api_key_id,
        event_type=event_type,
        payload=build_payload(event_type, data, at=now),
        webhook_id=call_event_id(call_id, attempt, event_type),
        now=now,
    )
    if event_type in FINAL_CALL_EVENTS and not data.get("retrying"):
        await _complete_if_finished(s, call.request_id, url, api_key_id, now=now)
    return webhook_id


# --- the deliverer's side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """One claimed outbox row, with the secret to sign it (never printed)."""

    id: int
    webhook_id: str
    api_key_id: str | None
    url: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime
    attempts: int
    secret: str | None = field(default=None, repr=False)
    key_missing: bool = False  # api_key_id names a key that no longer exists


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` as written at the start of `url` (a receiver)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    return f"{scheme}://{rest if end < 0 else rest[:end]}"


def _not_at(origin: str) -> sa.ColumnElement[bool]:
    url = outbox.c.url
    return sa.not_(
        sa.or_(
            url == origin,
            url.startswith(origin + "/", autoescape=True),
            url.startswith(origin + "?", autoescape=True),
            url.startswith(origin + "#", autoescape=True),
        )
    )


MAX_EXCLUDED = 50  # receivers a claim may skip by name


async def claim_due(
    store: Store,
    limit: int,
    *,
    now: datetime,
    lease: timedelta,
    exclude_origins: Sequence[str] = (),
) -> list[Due]:
    """Claim up to `limit` due rows in one statement and lease them until
    `now + lease` (another process skips them meanwhile; a crashed one's rows
    come back when the lease runs out). Oldest due first. Rows for the
    receivers in `exclude_origins` (see :func:`origin_of`) are left alone: the
    deliverer's receivers that are down or already at their share of slots."""
    if limit <= 0:
        return []
    due = sa.and_(
        outbox.c.delivered_at.is_(None),
        outbox.c.gave_up_at.is_(None),
        outbox.c.next_attempt_at <= now,
        *(_not_at(o) for o in list(exclude_origins)[:MAX_EXCLUDED]),
    )
    if store.dialect == "sqlite":
        # A plain read first: most polls find nothing, and a claim takes
        # SQLite's write lock (BEGIN IMMEDIATE) that the dialer's writes need.
        try:
            async with store.session(readonly=True) as s, s.begin():
                if (await s.execute(sa.select(outbox.c.id).where(due).limit(1))).first() is None:
                    return []
        except SQLAlchemyError as exc:
            raise _wrap(exc) from exc
    pick = sa.select(outbox.c.id).where(due).order_by(outbox.c.next_attempt_at, outbox.c.id)
    pick = pick.limit(limit)
    if store.dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(outbox)
        .where(outbox.c.id.in_(pick.scalar_subquery()))
        .values(next_attempt_at=now + lease)
        .returning(
            outbox.c.id,
            outbox.c.webhook_id,
            outbox.c.api_key_id,
            outbox.c.url,
            outbox.c.event_type,
            outbox.c.payload,
            outbox.c.created_at,
            outbox.c.attempts,
        )
    )
    try:
        async with store.session() as s, s.begin():
            rows = (await s.execute(stmt)).all()
            key_ids = {r.api_key_id for r in rows if r.api_key_id is not None}
            secrets: dict[str, str] = {}
            if key_ids:
                found = await s.execute(
                    sa.select(api_keys_table.c.id, api_keys_table.c.webhook_secret).where(
                        api_keys_table.c.id.in_(sorted(key_ids))
                    )
                )
                secrets = {str(r[0]): str(r[1]) for r in found}
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    out = [
        Due(
            id=r.id,
            webhook_id=r.webhook_id,
            api_key_id=r.api_key_id,
            url=r.url,
            event_type=r.event_type,
            payload=r.payload,
            created_at=r.created_at,
            attempts=int(r.attempts),
            secret=secrets.get(r.api_key_id) if r.api_key_id is not None else None,
            key_missing=r.api_key_id is not None and r.api_key_id not in secrets,
        )
        for r in rows
    ]
    out.sort(key=lambda d: (d.created_at, d.id))
    return out


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one attempt ended in: delivered, given up, or retried at
    `next_attempt_at`; or, `deferred`, a claimed row released unsent (its
    receiver is busy or down) to be claimed again at `next_attempt_at`."""

    row_id: int
    at: datetime
    delivered: bool = False
    gave_up: bool = False
    deferred: bool = False
    next_attempt_at: datetime | None = None
    error: str | None = None
    # For the request.completed safety net: a final call event that is settled.
    request_id: str | None = None


async def settle(store: Store, settlements: Sequence[Settlement]) -> None:
    """Record attempts in one transaction: `attempts + 1` and delivered_at,
    gave_up_at or the next attempt's time with the last error.

    When a final call event is settled (delivered or given up), the request's
    ``request.completed`` is enqueued if the request is finished. Its id is
    fixed, so this is a no-op when the dialer enqueued it already; it also
    covers two nodes finishing a request's last calls at the same time on
    PostgreSQL, where neither transaction saw the other's final write.
    """
    if not settlements:
        return
    stmt = (
        sa.update(outbox)
        .where(
            outbox.c.id == sa.bindparam("b_id"),
            outbox.c.delivered_at.is_(None),
            outbox.c.gave_up_at.is_(None),
        )
        .values(
            attempts=outbox.c.attempts + 1,
            delivered_at=sa.bindparam("b_delivered", type_=UTCDateTime()),
            gave_up_at=sa.bindparam("b_gave_up", type_=UTCDateTime()),
            next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime()),
            last_error=sa.bindparam("b_error", type_=sa.Text()),
        )
    )
    params = [
        {
            "b_id": st.row_id,
            "b_delivered": st.at if st.delivered else None,
            "b_gave_up": st.at if st.gave_up and not st.delivered else None,
            "b_next": st.next_attempt_at or st.at,
            "b_error": None if st.delivered else st.error,
        }
        for st in settlements
        if not st.deferred
    ]
    release = (
        sa.update(outbox)
        .where(
            outbox.c.id == sa.bindparam("b_id"),
            outbox.c.delivered_at.is_(None),
            outbox.c.gave_up_at.is_(None),
        )
        .values(next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime()))
    )
    released = [
        {"b_id": st.row_id, "b_next": st.next_attempt_at or st.at}
        for st in settlements
        if st.deferred
    ]
    finished = sorted(
        {
            st.request_id
            for st in settlements
            if st.request_id is not None and (st.delivered or st.gave_up)
        }
    )
    try:
        async with store.session() as s, s.begin():
            if params:
                await s.execute(stmt, params)
            if released:
                await s.execute(release, released)
            for request_id in finished:
                await notify_request_completed(s, request_id)
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc


async def give_up_expired(store: Store, *, created_before: datetime, now: datetime) -> int:
    """Give up rows still undelivered that were created before `created_before`
    (the retry window has passed, attempted or not: a receiver that stayed down
    may have kept its rows from being tried at all). Returns how many."""
    stmt = (
        sa.update(outbox)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.gave_up_at.is_(None),
            outbox.c.created_at < created_before,
            outbox.c.next_attempt_at <= now,  # not leased: nobody is sending it
        )
        .values(
            gave_up_at=now,
            last_error=sa.func.coalesce(
                outbox.c.last_error, "not delivered within the retry window"
            ),
        )
    )
    try:
        async with store.session() as s, s.begin():
            res = await s.execute(stmt)
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    return int(getattr(res, "rowcount", 0) or 0)


async def prune(store: Store, *, before: datetime) -> int:
    """Delete rows delivered or given up before `before`; return how many."""
    stmt = sa.delete(outbox).where(
        sa.or_(outbox.c.delivered_at < before, outbox.c.gave_up_at < before)
    )
    try:
        async with store.session() as s, s.begin():
            res = await s.execute(stmt)
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc
    return int(getattr(res, "rowcount", 0) or 0)
