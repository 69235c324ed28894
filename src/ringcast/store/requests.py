"""API-side queries: accept a request, look up status, page reports, cancel.

Driver errors become :class:`~ringcast.errors.StoreError` here, so the API
layer sees only ringcast errors.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ringcast.domain import FINAL_RESULTS, LIVE_RESULTS, Outcome, Result, utcnow
from ringcast.errors import RingcastError, StoreError, ValidationFailed
from ringcast.store.db import Store
from ringcast.store.models import call_attempts_table, calls_table, requests_table

logger = logging.getLogger(__name__)

WORK_CHANNEL = "ringcast_work"  # PostgreSQL LISTEN/NOTIFY channel: new calls are queued

INSERT_BATCH = 5000  # call rows per executemany
REPORT_BATCH = 1000  # rows per keyset page when streaming a report
_FINAL = [r.value for r in FINAL_RESULTS]
_LIVE = [r.value for r in LIVE_RESULTS]


class IdempotencyConflict(ValidationFailed):
    """This Idempotency-Key was already used with a different request body."""

    code = 1006


@dataclass(frozen=True, slots=True)
class NewCall:
    """One recipient of a new request, ready to insert."""

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


class _Wrap:
    """Translate driver errors into StoreError at the store boundary."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, SQLAlchemyError | OSError) and not isinstance(exc, RingcastError):
            raise StoreError(f"database error: {type(exc).__name__}") from exc


wrap_errors = _Wrap


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
                )
            )
            insert = sa.insert(calls_table)
            for start in range(0, len(calls), INSERT_BATCH):
                rows = [
                    {
                        "id": str(uuid.uuid4()),
                        "request_id": request_id,
                        "seq": start + i,
                        "to_uri": c.to_uri,
                        "from_uri": c.from_uri,
                        "variables": c.variables,
                        "timezone": c.timezone,
                        "result": Result.QUEUED.value,
                        "attempt": 1,
                        "request_time": now,
                        "duration": 0,
                        "answered": False,
                        "not_before": due,
                        "claim_epoch": 0,
                        "updated_at": now,
                    }
                    for i, c in enumerate(calls[start : start + INSERT_BATCH])
                ]
                await session.execute(insert, rows)
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
    logger.info("request %s canceled: %s queued calls, %s live", request_id, canceled, live)
    return canceled, int(live or 0)
