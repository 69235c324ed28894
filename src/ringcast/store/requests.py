"""API-side requests: accept one (store/accept.py), read its calls and reports
(store/reports.py), cancel, pause and resume it, and replay its recipients.

Driver errors become :class:`~ringcast.errors.StoreError` here, so the API
layer sees only ringcast errors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import LIVE_RESULTS, Outcome, Result, utcnow
from ringcast.store.accept import (
    _COPY_ROWS,
    WORK_CHANNEL,
    Accepted,
    IdempotencyConflict,
    NewCall,
    any_zoned,
    create_request,
    new_id_chunks,
    new_ids,
)
from ringcast.store.db import Store, wrap_errors
from ringcast.store.models import calls_table, requests_table
from ringcast.store.reports import (
    REPORT_BATCH,
    REPORT_LINES_BATCH,
    REPORT_READ_AHEAD,
    ReportFormat,
    ReportInfo,
    call_attempts,
    first_call,
    get_call,
    get_request,
    iter_report,
    iter_report_lines,
    next_cursor,
    report_info,
    report_page,
)

__all__ = [
    "REPORT_BATCH",
    "REPORT_LINES_BATCH",
    "REPORT_READ_AHEAD",
    "WORK_CHANNEL",
    "_COPY_ROWS",
    "Accepted",
    "IdempotencyConflict",
    "NewCall",
    "ReportFormat",
    "ReportInfo",
    "Source",
    "any_zoned",
    "call_attempts",
    "cancel_request",
    "create_request",
    "first_call",
    "get_call",
    "get_request",
    "is_paused",
    "iter_report",
    "iter_report_lines",
    "new_id_chunks",
    "new_ids",
    "next_cursor",
    "replay_source",
    "report_info",
    "report_page",
    "set_paused",
]

logger = logging.getLogger(__name__)

_LIVE = [r.value for r in LIVE_RESULTS]


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
