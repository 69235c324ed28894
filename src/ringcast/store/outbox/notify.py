"""Call and request events from the database's view of a call: :func:`notify_call`
(in the transaction that changed the call) and ``request.completed`` once every
call of a request is final (:func:`notify_request_completed`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import FINAL_RESULTS, Result, format_time
from ringcast.store.models import call_attempts_table, calls_table, requests_table
from ringcast.store.outbox.events import (
    CALL_DIGITS,
    EVENT_OF_RESULT,
    EVENT_TYPES,
    FINAL_CALL_EVENTS,
    REQUEST_COMPLETED,
    REQUEST_COMPLETED_DELAY,
    build_payload,
    call_event_id,
    enqueue,
    insert_rows,
    outbox,
    outbox_row,
    request_completed_id,
)
from ringcast.store.records import record_dict

_FINAL = [r.value for r in FINAL_RESULTS]


def _event_of(result: Any) -> str | None:
    try:
        return EVENT_OF_RESULT.get(Result(result))
    except ValueError:
        return None


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


@dataclass(frozen=True)
class CallEvent:
    """An event to enqueue for a call, right after the write that changed it
    (:func:`notify_calls`). `event_type` None: the event of the call's result."""

    call_id: str
    event_type: str | None = None
    occurrence: int = 1


_CALLS_WITH_TARGET = (
    sa.select(
        calls_table,
        _CALLBACK_URL.label("callback_url_"),
        requests_table.c.api_key_id.label("api_key_id_"),
    )
    .join(requests_table, requests_table.c.id == calls_table.c.request_id)
    .where(calls_table.c.id.in_(sa.bindparam("ids", expanding=True)))
)


async def notify_call(
    s: AsyncSession,
    call_id: str,
    event_type: str | None = None,
    *,
    occurrence: int = 1,
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

    `occurrence` numbers an event that an attempt may send more than once: the
    n-th gather's ``call.digits`` (its payload says ``"gather": n``).

    Returns the webhook id, or None when the request has no callback URL or the
    call's state has no event. Idempotent per (call, attempt, event, occurrence). Costs two
    statements (three after a final event).
    """
    (webhook_id,) = await notify_calls(s, [CallEvent(call_id, event_type, occurrence)], now=now)
    return webhook_id


async def notify_calls(
    s: AsyncSession, events: Sequence[CallEvent], *, now: datetime | None = None
) -> list[str | None]:
    """:func:`notify_call` for many calls' writes of one transaction, in order, in
    three statements whatever their number: one read of the calls, one insert of
    the events, and one ``request.completed`` check per request that had a final
    event (a re-queued call's finished attempt costs one more read)."""
    if not events:
        return []
    ids = list(dict.fromkeys(e.call_id for e in events))
    calls = {row.id: row for row in await s.execute(_CALLS_WITH_TARGET, {"ids": ids})}
    rows: list[dict[str, Any]] = []
    out: list[str | None] = []
    finished: dict[str, tuple[str, str | None]] = {}  # request id -> its callback target
    for e in events:
        call = calls.get(e.call_id)
        row = None if call is None else await _event_row(s, call, e, now)
        if call is None or row is None:
            out.append(None)
            continue
        rows.append(row)
        out.append(str(row["webhook_id"]))
        if row["event_type"] in FINAL_CALL_EVENTS and not row["payload"]["data"].get("retrying"):
            finished[call.request_id] = (row["url"], row["api_key_id"])
    await insert_rows(s, rows)
    for request_id, (url, api_key_id) in finished.items():
        await _complete_if_finished(s, request_id, url, api_key_id, now=now)
    return out


async def _event_row(
    s: AsyncSession, call: Any, e: CallEvent, now: datetime | None
) -> dict[str, Any] | None:
    """The outbox row of `e` for `call` (a row of :data:`_CALLS_WITH_TARGET`), or None
    when its request has no callback URL or its state has no event."""
    if not call.callback_url_:
        return None
    event_type = e.event_type
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
                    call_attempts_table.c.call_id == call.id,
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
    if event_type == CALL_DIGITS:
        data["gather"] = e.occurrence
    return outbox_row(
        url=str(call.callback_url_),
        api_key_id=call.api_key_id_,
        event_type=event_type,
        payload=build_payload(event_type, data, at=now),
        webhook_id=call_event_id(call.id, attempt, event_type, e.occurrence),
        now=now,
    )
