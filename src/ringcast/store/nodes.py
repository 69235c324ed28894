"""Dialer nodes: each registers under a new epoch (which fences its writes),
beats its heartbeat, and the calls of nodes that stopped beating are rescued
(STYLE habit 6: procrastinate's stalled jobs by heartbeat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ringcast.domain import LIVE_RESULTS, Result
from ringcast.store.db import Store, db_now
from ringcast.store.models import (
    calls_table,
    counters_table,
    leases_table,
    nodes_table,
    requests_table,
)
from ringcast.store.progress import failed_values, queue_next_attempt

log = logging.getLogger(__name__)

calls = calls_table
requests = requests_table
_LIVE_VALUES = [r.value for r in LIVE_RESULTS]


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
            calls.c.result.in_(_LIVE_VALUES),
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
                .values(**failed_values(error, now))
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
                await queue_next_attempt(s, row.id, now + timedelta(seconds=delay))
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
