"""The dialer's group writer on real SQLite and PostgreSQL: typed writes are
batched per kind, yet every call's writes apply in the order submitted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from dbrows import insert_request
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.dialer.writer import GroupWriter
from ringcast.domain import utcnow
from ringcast.store import outbox, queue
from ringcast.store.db import Store
from ringcast.store.models import calls_table
from ringcast.store.queue import Fence


async def test_one_batch_keeps_each_calls_order(store: Store) -> None:
    await insert_request(store, 2, {"playlist": [{"pause": 1}]})
    node = Fence("n", await queue.register_node(store, "n"))
    a, b = await queue.claim_calls(store, node, 2)
    writer = GroupWriter(store)

    async def result_of(s: AsyncSession) -> str:
        q = sa.select(calls_table.c.result).where(calls_table.c.id == a.id)
        return str((await s.execute(q)).scalar_one())

    # Submitted before the writer runs, so they all land in one batch.
    futures = [
        asyncio.ensure_future(writer.start_dialing(a.id, node, utcnow())),
        asyncio.ensure_future(writer.start_dialing(b.id, node, utcnow())),
        asyncio.ensure_future(writer.update_call(a.id, node, {"result": "ringing"})),
        asyncio.ensure_future(writer.submit(result_of)),
        asyncio.ensure_future(
            writer.update_call(a.id, node, {"result": "in-progress", "connect_time": utcnow()})
        ),
        asyncio.ensure_future(
            writer.update_call(a.id, node, {"result": "completed", "outcome": "answered"})
        ),
        asyncio.ensure_future(writer.update_call(a.id, node, {"result": "ringing"})),
        asyncio.ensure_future(writer.update_call(b.id, Fence("n", 0), {"result": "ringing"})),
    ]
    await asyncio.sleep(0)
    writer.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        await writer.stop()
    assert results == [
        queue.Start.DIAL,
        queue.Start.DIAL,
        True,
        "ringing",  # the closure saw the write submitted before it
        True,
        True,
        False,  # a final call takes no more progress
        False,  # a stale fence writes nothing
    ]
    assert writer.batches == 1
    async with store.session(readonly=True) as s, s.begin():
        rows = {r.id: r.result for r in await s.execute(sa.select(calls_table))}
    assert rows == {a.id: "completed", b.id: "dialing"}


async def test_a_lost_database_is_waited_out_in_the_one_by_one_retry(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch fails for a reason of its own, then the database drops while its
    writes are retried one by one: each write still lands once it is back,
    instead of failing its caller (a dialer's progress update) with the outage."""
    await insert_request(store, 2, {"playlist": [{"pause": 1}]})
    node = Fence("n", await queue.register_node(store, "n"))
    a, b = await queue.claim_calls(store, node, 2)
    writer = GroupWriter(store)
    real_commit = writer._commit
    failures = [ValueError("one bad write in the batch"), ConnectionResetError(104, "reset")]

    async def flaky_commit(batch: list[Any]) -> None:
        if failures:
            raise failures.pop(0)
        await real_commit(batch)

    monkeypatch.setattr(writer, "_commit", flaky_commit)
    futures = [
        asyncio.ensure_future(writer.update_call(a.id, node, {"result": "ringing"})),
        asyncio.ensure_future(writer.update_call(b.id, node, {"result": "ringing"})),
    ]
    await asyncio.sleep(0)
    writer.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        await writer.stop()
    assert results == [True, True]
    assert failures == []


async def test_accepting_only_while_running_and_not_stopping(store: Store) -> None:
    """`accepting` tells an optional writer (the webhook deliverer) whether a
    write submitted now is committed: not before start(), not once stop() has
    begun; what was submitted before stop() still commits."""
    writer = GroupWriter(store)
    assert not writer.accepting
    writer.start()
    assert writer.accepting
    gate = asyncio.Event()

    async def held(s: AsyncSession) -> int:
        await gate.wait()
        return int((await s.execute(sa.select(sa.literal(7)))).scalar_one())

    pending = asyncio.ensure_future(writer.submit(held))
    await asyncio.sleep(0.05)
    stopping = asyncio.ensure_future(writer.stop())
    await asyncio.sleep(0.05)
    during_stop = writer.accepting  # stop() is waiting for the held write
    gate.set()
    await asyncio.wait_for(stopping, 30)
    assert during_stop is False
    assert await pending == 7
    assert not writer.accepting
    writer.start()  # a writer started again accepts again
    assert writer.accepting
    await writer.stop()


async def test_a_groups_webhook_events_take_one_insert(store: Store) -> None:
    """Typed updates that carry a webhook event enqueue their events in the same
    transaction, one insert for the whole group, in the order submitted; a write
    that did not take enqueues nothing, and request.completed comes once, after
    the last final event."""
    rid, _ = await insert_request(
        store, 3, {"playlist": [{"pause": 1}], "callback_url": "http://127.0.0.1:9/hook"}
    )
    node = Fence("n", await queue.register_node(store, "n"))
    a, b, c = await queue.claim_calls(store, node, 3)
    async with store.session() as s, s.begin():
        for call in (a, b, c):
            assert await queue.start_dialing(s, call.id, node, utcnow()) == queue.Start.DIAL
    writer = GroupWriter(store)
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO WEBHOOK_OUTBOX"):
            inserts.append(statement)

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    final = {"result": "completed", "outcome": "answered", "disconnect_time": utcnow()}
    futures = [
        asyncio.ensure_future(
            writer.update_call(a.id, node, {"result": "ringing"}, event=outbox.CallEvent(a.id))
        ),
        asyncio.ensure_future(writer.update_call(b.id, node, final, event=outbox.CallEvent(b.id))),
        asyncio.ensure_future(writer.update_call(c.id, node, final, event=outbox.CallEvent(c.id))),
        asyncio.ensure_future(  # a stale fence: no write, no event
            writer.update_call(
                a.id, Fence("n", 0), {"result": "ringing"}, event=outbox.CallEvent(a.id)
            )
        ),
        asyncio.ensure_future(writer.update_call(a.id, node, final, event=outbox.CallEvent(a.id))),
    ]
    await asyncio.sleep(0)
    writer.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*futures), 30)
    finally:
        await writer.stop()
        sa.event.remove(engine, "before_cursor_execute", count)
    assert results == [True, True, True, False, True]
    assert writer.batches == 1
    async with store.session(readonly=True) as s, s.begin():
        rows = (
            await s.execute(
                sa.select(outbox.outbox.c.event_type, outbox.outbox.c.payload).order_by(
                    outbox.outbox.c.id
                )
            )
        ).all()
    events = [(r.event_type, r.payload["data"].get("id")) for r in rows]
    assert events == [
        ("call.ringing", a.id),
        ("call.completed", b.id),
        ("call.completed", c.id),
        ("call.completed", a.id),  # the same call again: a group of its own, after
        ("request.completed", rid),
    ]
    # the first group's three events in one insert; a's final event and
    # request.completed in the second group's
    assert len(inserts) == 3
