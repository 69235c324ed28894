"""Fleet-wide limits on real SQLite and PostgreSQL: capacity leases and rate."""

from __future__ import annotations

import asyncio

from ringcast.store import limiter, queue
from ringcast.store.db import Store, open_store
from ringcast.store.limiter import Limit


async def test_capacity_is_never_exceeded_by_concurrent_nodes(store: Store) -> None:
    lim = [Limit("request:r1", capacity=3)]
    others = [open_store(store.url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(limiter.acquire(others[i % 3], f"c{i}", f"n{i % 3}", lim) for i in range(12))
        )
    finally:
        for o in others:
            await o.close()
    granted = [r for r in results if r is None]
    assert len(granted) == 3
    assert await limiter.in_use(store, "request:r1") == 3
    holder = next(f"c{i}" for i, r in enumerate(results) if r is None)
    async with store.session() as s, s.begin():
        await limiter.release(s, holder)
    assert await limiter.in_use(store, "request:r1") == 2


async def test_all_or_nothing_across_scopes(store: Store) -> None:
    full = Limit("trunk:t", capacity=1)
    assert await limiter.acquire(store, "a", "n", [full]) is None
    refused = await limiter.acquire(store, "b", "n", [Limit("request:x", capacity=5), full])
    assert refused is not None and refused.key == "trunk:t"
    assert await limiter.in_use(store, "request:x") == 0  # nothing half-taken


async def test_rate_spaces_starts(store: Store) -> None:
    lim = [Limit("request:rate", rate=2.0)]
    assert await limiter.acquire(store, "a", "n", lim) is None
    refused = await limiter.acquire(store, "b", "n", lim)
    assert refused is not None and 0.3 < refused.retry_in <= 0.5
    await asyncio.sleep(refused.retry_in + 0.05)
    assert await limiter.acquire(store, "b", "n", lim) is None


async def test_dead_nodes_leases_are_freed_by_the_rescue(store: Store) -> None:
    await queue.register_node(store, "dead")
    await queue.register_node(store, "alive")
    lim = [Limit("request:r", capacity=1)]
    assert await limiter.acquire(store, "c1", "dead", lim) is None
    assert await limiter.acquire(store, "c2", "alive", lim) is not None
    await queue.rescue_calls(store, me="alive", stale_after=None, error="interrupted")
    assert await limiter.in_use(store, "request:r") == 0
    assert await limiter.acquire(store, "c2", "alive", lim) is None
