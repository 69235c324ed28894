"""The deliverer's side of the outbox, each in its own transaction: claim due
rows in one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), leased by
moving `next_attempt_at` forward; settle attempts in batches; give up rows past
the retry window; prune old settled rows.

:func:`settle_and_claim_in` does a settle-and-claim in a transaction the
caller owns: on SQLite the deliverer hands it to the dialer's group writer in
the same process, so it rides in the dialer's next commit instead of
competing with it for the one write lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.errors import StoreError
from ringcast.store.db import Store
from ringcast.store.models import UTCDateTime, api_keys_table
from ringcast.store.outbox.events import outbox
from ringcast.store.outbox.notify import notify_request_completed


def _wrap(exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"database error: {type(exc).__name__}")


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


def _due(now: datetime, exclude_origins: Sequence[str]) -> sa.ColumnElement[bool]:
    return sa.and_(
        outbox.c.delivered_at.is_(None),
        outbox.c.gave_up_at.is_(None),
        outbox.c.next_attempt_at <= now,
        *(_not_at(o) for o in list(exclude_origins)[:MAX_EXCLUDED]),
    )


async def _any_due(store: Store, due: sa.ColumnElement[bool]) -> bool:
    """A plain read: on SQLite a claim takes the write lock (BEGIN IMMEDIATE)
    that the dialer's writes need, and most idle polls find nothing."""
    try:
        async with store.session(readonly=True) as s, s.begin():
            return (await s.execute(sa.select(outbox.c.id).where(due).limit(1))).first() is not None
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc


async def _claim_in(
    s: AsyncSession, dialect: str, limit: int, due: sa.ColumnElement[bool], until: datetime
) -> list[Due]:
    pick = sa.select(outbox.c.id).where(due).order_by(outbox.c.next_attempt_at, outbox.c.id)
    pick = pick.limit(limit)
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(outbox)
        .where(outbox.c.id.in_(pick.scalar_subquery()))
        .values(next_attempt_at=until)
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


async def claim_due(
    store: Store,
    limit: int,
    *,
    now: datetime,
    lease: timedelta,
    exclude_origins: Sequence[str] = (),
    probe: bool = True,
) -> list[Due]:
    """Claim up to `limit` due rows in one statement and lease them until
    `now + lease` (another process skips them meanwhile; a crashed one's rows
    come back when the lease runs out). Oldest due first. Rows for the
    receivers in `exclude_origins` (see :func:`origin_of`) are left alone: the
    deliverer's receivers that are down or already at their share of slots.
    On SQLite a plain read first checks that something is due, unless `probe`
    is False (the caller knows more rows are due)."""
    return await settle_and_claim(
        store, (), limit, now=now, lease=lease, exclude_origins=exclude_origins, probe=probe
    )


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


def _settle_params(
    settlements: Sequence[Settlement],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(attempt rows, released rows, requests whose final event was settled)."""
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
    return params, released, finished


_UNSETTLED = (outbox.c.delivered_at.is_(None), outbox.c.gave_up_at.is_(None))
_ATTEMPTED = (
    sa.update(outbox)
    .where(outbox.c.id == sa.bindparam("b_id"), *_UNSETTLED)
    .values(
        attempts=outbox.c.attempts + 1,
        delivered_at=sa.bindparam("b_delivered", type_=UTCDateTime()),
        gave_up_at=sa.bindparam("b_gave_up", type_=UTCDateTime()),
        next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime()),
        last_error=sa.bindparam("b_error", type_=sa.Text()),
    )
)
_RELEASED = (
    sa.update(outbox)
    .where(outbox.c.id == sa.bindparam("b_id"), *_UNSETTLED)
    .values(next_attempt_at=sa.bindparam("b_next", type_=UTCDateTime()))
)


async def _settle_in(s: AsyncSession, settlements: Sequence[Settlement]) -> None:
    params, released, finished = _settle_params(settlements)
    if params:
        await s.execute(_ATTEMPTED, params)
    if released:
        await s.execute(_RELEASED, released)
    for request_id in finished:
        await notify_request_completed(s, request_id)


async def settle(store: Store, settlements: Sequence[Settlement]) -> None:
    """Record attempts in one transaction: `attempts + 1` and delivered_at,
    gave_up_at or the next attempt's time with the last error.

    When a final call event is settled (delivered or given up), the request's
    ``request.completed`` is enqueued if the request is finished. Its id is
    fixed, so this is a no-op when the dialer enqueued it already; it also
    covers two nodes finishing a request's last calls at the same time on
    PostgreSQL, where neither transaction saw the other's final write.
    """
    if settlements:
        await settle_and_claim(store, settlements, 0, now=settlements[0].at, lease=timedelta())


async def settle_and_claim(
    store: Store,
    settlements: Sequence[Settlement],
    limit: int,
    *,
    now: datetime,
    lease: timedelta,
    exclude_origins: Sequence[str] = (),
    probe: bool = True,
) -> list[Due]:
    """:func:`settle` then :func:`claim_due`, in one transaction: one round trip
    per batch of deliveries instead of two. With nothing to settle and `probe`
    on SQLite, nothing is claimed (and no write lock taken) unless a plain read
    finds a due row."""
    if limit > 0 and not settlements and probe and store.dialect == "sqlite":
        if not await _any_due(store, _due(now, exclude_origins)):
            return []
    if not settlements and limit <= 0:
        return []
    try:
        async with store.session() as s, s.begin():
            return await settle_and_claim_in(
                s, settlements, limit, now=now, lease=lease, exclude_origins=exclude_origins
            )
    except SQLAlchemyError as exc:
        raise _wrap(exc) from exc


async def any_due(store: Store, *, now: datetime, exclude_origins: Sequence[str] = ()) -> bool:
    """Whether a row is due (outside `exclude_origins`), by a plain read: no
    write lock on SQLite."""
    return await _any_due(store, _due(now, exclude_origins))


async def settle_and_claim_in(
    s: AsyncSession,
    settlements: Sequence[Settlement],
    limit: int,
    *,
    now: datetime,
    lease: timedelta,
    exclude_origins: Sequence[str] = (),
) -> list[Due]:
    """:func:`settle_and_claim` in the caller's transaction `s` (no probe: the
    caller decided to claim). Errors are the database's own."""
    await _settle_in(s, settlements)
    if limit <= 0:
        return []
    dialect = s.get_bind().dialect.name
    return await _claim_in(s, dialect, limit, _due(now, exclude_origins), now + lease)


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
