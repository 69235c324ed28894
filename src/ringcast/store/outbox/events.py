"""Outbox events: their types, ids and payloads, and :func:`enqueue`, which
inserts one in the caller's transaction (the outbox pattern: the event commits
or rolls back with the state change it reports).

A given `webhook_id` is inserted once (``INSERT ... ON CONFLICT DO NOTHING``),
so deterministic ids make enqueueing idempotent: :func:`call_event_id` and
:func:`request_completed_id`.

Same-process wakeup: a session that enqueued calls the callbacks registered
with :func:`on_commit` once it commits, so a deliverer in this process sends
the events at once instead of at its next poll (other processes still poll).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ringcast.domain import Result, now_precise
from ringcast.store.models import webhook_outbox_table

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


# --- ids and payloads ------------------------------------------------------------


def new_webhook_id() -> str:
    """A random webhook id (``msg_`` + 32 hex digits)."""
    return "msg_" + uuid.uuid4().hex


def _bounded_id(readable: str) -> str:
    if len(readable) <= WEBHOOK_ID_MAX:
        return readable
    return "msg_" + hashlib.sha256(readable.encode()).hexdigest()[:40]


def call_event_id(call_id: str, attempt: int, event_type: str, occurrence: int = 1) -> str:
    """The id of `event_type` for one attempt of a call: the same on every
    enqueue, so reporting an event twice inserts one row. Contains no '.'.

    `occurrence` tells apart events that happen more than once in an attempt
    (the second gather's ``call.digits`` is 2); the first keeps the plain id."""
    suffix = f"_{int(occurrence)}" if occurrence != 1 else ""
    return _bounded_id(f"msg_{call_id}_{int(attempt)}_{event_type.replace('.', '_')}{suffix}")


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


def _insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT of outbox rows given as parameters, skipping a `webhook_id` already there."""
    insert = postgresql.insert(outbox) if dialect == "postgresql" else sqlite.insert(outbox)
    return insert.on_conflict_do_nothing(index_elements=["webhook_id"])


def outbox_row(
    *,
    url: str,
    api_key_id: str | None,
    event_type: str,
    payload: dict[str, Any],
    webhook_id: str | None = None,
    now: datetime | None = None,
    delay: float = 0.0,
) -> dict[str, Any]:
    """The outbox row of one event (see :func:`enqueue`), checked."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    webhook_id = webhook_id or new_webhook_id()
    if len(webhook_id) > WEBHOOK_ID_MAX or "." in webhook_id:
        raise ValueError(f"webhook id must be at most {WEBHOOK_ID_MAX} characters, without '.'")
    now = now or now_precise()
    return {
        "webhook_id": webhook_id,
        "api_key_id": api_key_id,
        "url": url,
        "event_type": event_type,
        "payload": payload,
        "created_at": now,
        "next_attempt_at": now + timedelta(seconds=delay),
        "attempts": 0,
    }


async def insert_rows(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert outbox rows (:func:`outbox_row`) in the caller's transaction, in order,
    one statement for all of them; a `webhook_id` already there is skipped."""
    if not rows:
        return
    await s.execute(_insert_ignoring_duplicates(s.get_bind().dialect.name), rows)
    s.sync_session.info[_ENQUEUED] = True


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
    row = outbox_row(
        url=url,
        api_key_id=api_key_id,
        event_type=event_type,
        payload=payload,
        webhook_id=webhook_id,
        now=now,
        delay=delay,
    )
    await insert_rows(s, [row])
    return str(row["webhook_id"])


# --- same-process wakeup ------------------------------------------------------------------

_ENQUEUED = "ringcast.outbox.enqueued"  # Session.info key: this transaction enqueued
_on_commit: list[Callable[[], None]] = []


def on_commit(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback()` after each commit of a session that enqueued an event
    (in the committing thread); returns the function that unregisters it.
    Callbacks must be quick and must not raise."""
    _on_commit.append(callback)

    def unregister() -> None:
        if callback in _on_commit:
            _on_commit.remove(callback)

    return unregister


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_ENQUEUED, False):
        for callback in list(_on_commit):
            try:
                callback()
            except Exception:  # a waker must not turn a commit into an error
                log.exception("outbox commit callback failed")


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)
