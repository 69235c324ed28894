"""Fleet-wide call limits in the database: capacity leases and a token bucket.

A limiter row per scope ("request:<id>", "trunk:<name>") holds its capacity
(concurrent calls) and rate (new calls per second, a token bucket of depth 1).
A call that starts takes one lease row per scope; `in use` is the number of
lease rows, so a node that dies cannot leak capacity: the rescue deletes its
leases. Acquisition locks the limiter rows (`FOR UPDATE` on PostgreSQL, the
`BEGIN IMMEDIATE` write lock on SQLite) in key order, so two dialers can never
both take the last unit, and never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.store.db import Store, db_now
from ringcast.store.models import leases_table, limiters_table

limiters = limiters_table
leases = leases_table


@dataclass(frozen=True)
class Limit:
    """One scope's limits; None means unlimited."""

    key: str
    capacity: int | None = None
    rate: float | None = None  # new calls per second


@dataclass(frozen=True)
class Refusal:
    """Why a call may not start yet, and when to try again (seconds)."""

    key: str
    retry_in: float


async def _ensure(s: AsyncSession, limit: Limit, now: datetime) -> None:
    exists = await s.execute(sa.select(limiters.c.key).where(limiters.c.key == limit.key))
    if exists.first() is None:
        try:
            async with s.begin_nested():
                await s.execute(
                    sa.insert(limiters).values(
                        key=limit.key,
                        capacity=limit.capacity,
                        rate=limit.rate,
                        tokens=1.0,
                        refilled_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another node created it first


async def acquire(
    store: Store, call_id: str, node_id: str, limits: Sequence[Limit]
) -> Refusal | None:
    """Take a lease in every scope for `call_id`, or none at all.

    Returns None when the call may start now, else the first refusal.
    """
    if not limits:
        return None
    ordered = sorted(limits, key=lambda lim: lim.key)
    async with store.session() as s, s.begin():
        now = await db_now(s)
        for lim in ordered:
            await _ensure(s, lim, now)
        stmt = sa.select(limiters).where(limiters.c.key.in_([lim.key for lim in ordered]))
        if store.dialect == "postgresql":
            stmt = stmt.order_by(limiters.c.key).with_for_update()
        rows = {r.key: r for r in (await s.execute(stmt)).all()}
        counted = await s.execute(
            sa.select(leases.c.key, sa.func.count())
            .where(leases.c.key.in_(list(rows)))
            .group_by(leases.c.key)
        )
        used: dict[str, int] = {str(key): int(n) for key, n in counted.all()}
        updates: list[tuple[str, float]] = []
        for lim in ordered:
            row = rows[lim.key]
            capacity = lim.capacity if lim.capacity is not None else row.capacity
            rate = lim.rate if lim.rate is not None else row.rate
            if capacity is not None and used.get(lim.key, 0) >= capacity:
                return Refusal(lim.key, 0.2)
            tokens = 1.0
            if rate:
                elapsed = max(0.0, (now - row.refilled_at).total_seconds())
                tokens = min(1.0, row.tokens + elapsed * rate)
                if tokens < 1.0:
                    return Refusal(lim.key, (1.0 - tokens) / rate)
                tokens -= 1.0
            updates.append((lim.key, tokens))
        for key, tokens in updates:
            await s.execute(
                sa.update(limiters)
                .where(limiters.c.key == key)
                .values(tokens=tokens, refilled_at=now)
            )
        await s.execute(
            sa.insert(leases),
            [
                {"call_id": call_id, "key": lim.key, "node_id": node_id, "created_at": now}
                for lim in ordered
            ],
        )
    return None


async def release(s: AsyncSession, call_id: str) -> None:
    """Give back every lease of a call (inside the transaction that ends it)."""
    await s.execute(sa.delete(leases).where(leases.c.call_id == call_id))


async def in_use(store: Store, key: str) -> int:
    async with store.session(readonly=True) as s, s.begin():
        n = await s.execute(sa.select(sa.func.count()).where(leases.c.key == key))
        return int(n.scalar_one())
