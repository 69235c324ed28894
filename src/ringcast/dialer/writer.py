"""Group commit: many small call-state writes share one database transaction.

At hundreds of calls per second every call makes four or five writes
(setup, ringing, answered, final). Each caller submits its write and awaits
it; one task commits whatever has gathered in a single transaction, so a
write is durable when its await returns, and the database sees a few
transactions per second instead of hundreds. If a batch fails, its writes are
retried one transaction each so that one bad write cannot sink the others.

The hot writes (a call's setup, progress and plain final fields) are typed,
not closures: the writer gathers them by kind and runs each kind and shape
as one statement (an executemany on SQLite, an UPDATE over unnested arrays on
PostgreSQL: store/queue.py `update_calls`, `start_dialing_many`), and the
webhook events of a group's updates as one insert (`outbox.notify_calls`). Two
writes of the same call never share such a group, so a call's writes keep
their order; any closure runs after everything submitted before it.

The webhook deliverer of the same process submits its settle-and-claim here
on SQLite (webhooks/deliver.py `share_writer`), so that one transaction at a
time asks for the write lock; it checks :attr:`GroupWriter.accepting` first
and uses transactions of its own once the writer is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.store import outbox, queue
from ringcast.store.db import Store, lost_database
from ringcast.store.outbox import CallEvent
from ringcast.store.queue import CallUpdate, DialStart, Fence, Start

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[AsyncSession], Awaitable[Any]]
BulkItem = CallUpdate | DialStart

# How each kind of typed write runs for a group of items (one result per item).
_BULK: dict[type, Callable[[AsyncSession, list[Any]], Awaitable[list[Any]]]] = {
    CallUpdate: queue.update_calls,
    DialStart: queue.start_dialing_many,
}


@dataclass
class _Write:
    op: Op | None  # a closure, or None for a typed write
    item: BulkItem | None
    fut: asyncio.Future[Any]
    event: CallEvent | None = None  # a webhook event to enqueue if the typed write took


MAX_BATCH = 500  # writes per transaction
OUTAGE_PATIENCE = 120.0  # seconds to keep retrying while the database is unreachable


class GroupWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.writes = 0

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="dialer-group-writer")

    @property
    def accepting(self) -> bool:
        """Running and not stopping: a write submitted now will be committed
        before `stop()` returns. For writers with a way of their own (the
        webhook deliverer), which use it while this is False."""
        return self._task is not None and not self._stopping

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        self._stopping = True
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `op(session)` in the next group transaction; return its result once committed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(op, None, fut))
        return await fut

    async def update_call(
        self,
        call_id: str,
        fence: Fence,
        values: dict[str, Any],
        *,
        event: CallEvent | None = None,
    ) -> bool:
        """`queue.update_call` in the next group transaction: False if the claim was lost.
        With `event`, the webhook event (`outbox.notify_call`) is enqueued in the same
        transaction if the update took; the events of a group take one insert."""
        return bool(await self._submit_item(CallUpdate(call_id, fence, values), event))

    async def start_dialing(self, call_id: str, fence: Fence, setup_time: Any) -> Start:
        """`queue.start_dialing` in the next group transaction."""
        started: Start = await self._submit_item(DialStart(call_id, fence, setup_time))
        return started

    async def _submit_item(self, item: BulkItem, event: CallEvent | None = None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(None, item, fut, event))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_retrying(batch)
            except Exception:  # noqa: BLE001 - retried one by one below
                log.warning("group commit of %d writes failed; retrying singly", len(batch))
                for item in batch:
                    try:  # a database lost meanwhile is waited out here too
                        await self._commit_retrying([item])
                    except Exception as exc:  # noqa: BLE001 - reported to the submitter
                        if not item.fut.done():
                            item.fut.set_exception(exc)
            for _ in batch:
                self._queue.task_done()

    async def _commit_retrying(self, batch: list[_Write]) -> None:
        """Commit a batch; while the database is unreachable, keep trying (with
        backoff, up to OUTAGE_PATIENCE seconds) so calls in progress keep their
        records through a database restart or failover."""
        delay = 0.2
        waited = 0.0
        while True:
            try:
                await self._commit(batch)
                return
            except Exception as exc:
                if not lost_database(exc) or waited >= OUTAGE_PATIENCE:
                    raise
                if waited == 0.0:
                    log.warning("database unreachable (%s); holding %d writes", exc, len(batch))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    async def _commit(self, batch: list[_Write]) -> None:
        results: list[Any] = [None] * len(batch)
        groups: dict[type, list[int]] = {}  # typed writes waiting, by kind
        calls: set[str] = set()  # the calls those writes are for

        async def flush() -> None:
            events: list[CallEvent] = []
            for kind, index in groups.items():
                items = [batch[i].item for i in index]
                for i, res in zip(index, await _BULK[kind](s, items), strict=True):
                    results[i] = res
                    event = batch[i].event
                    if res and event is not None:
                        events.append(event)
            await outbox.notify_calls(s, events)
            groups.clear()
            calls.clear()

        async with self.store.session() as s, s.begin():
            for i, w in enumerate(batch):
                if w.item is None:
                    await flush()
                    assert w.op is not None
                    results[i] = await w.op(s)
                    continue
                if w.item.call_id in calls:
                    await flush()
                groups.setdefault(type(w.item), []).append(i)
                calls.add(w.item.call_id)
            await flush()
        self.batches += 1
        self.writes += len(batch)
        for w, res in zip(batch, results, strict=True):
            if not w.fut.done():
                w.fut.set_result(res)
