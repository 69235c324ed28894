"""The dialer's watcher keeps the node's heartbeat going while another of its
steps waits on the database (a real SQLite store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from ringcast.dialer.recordings import RetentionSweep
from ringcast.dialer.requests_cache import RequestCache
from ringcast.dialer.watch import Watcher
from ringcast.store import queue
from ringcast.store.db import open_store
from ringcast.store.models import nodes_table


async def test_a_rescue_stuck_on_a_lock_does_not_stop_the_heartbeat(tmp_path: Path) -> None:
    """A rescue that waits on rows a frozen node's open transaction holds must not
    hold up this node's heartbeat: stale, it would be declared dead by the frozen
    node as soon as that one thawed."""
    store = open_store(f"sqlite:///{tmp_path / 'watch.db'}")
    await store.migrate()
    try:
        await queue.register_node(store, "me")
        stuck = asyncio.Event()  # never set: the rescue waits as on a held row lock
        rescuing = asyncio.Event()
        rescues = 0

        async def rescue() -> None:
            nonlocal rescues
            rescues += 1
            rescuing.set()
            await stuck.wait()

        async def declared_dead() -> None:
            raise AssertionError("declared dead")

        async def beat() -> object:
            async with store.session(readonly=True) as s, s.begin():
                return (
                    await s.execute(
                        sa.select(nodes_table.c.heartbeat_at).where(nodes_table.c.id == "me")
                    )
                ).scalar_one()

        watcher = Watcher(
            store=store,
            node_id="me",
            node_timeout=0.6,  # a heartbeat every 0.2 s
            single_node=False,
            live={},
            requests=RequestCache(store),
            retention=RetentionSweep(0, 60),
            declared_dead=declared_dead,
            rescue=rescue,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.wait_for(rescuing.wait(), 10)  # the rescue has started and hangs
        first = await beat()
        beats = set()
        async with asyncio.timeout(10):  # a hang guard: heartbeats come every 0.2 s
            while len(beats) < 3:
                await asyncio.sleep(0.1)
                beats.add(await beat())
        assert max(beats) > first and rescues == 1
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()
