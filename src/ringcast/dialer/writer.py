"""Group commit: many small call-state writes share one database transaction.

At hundreds of calls per second every call makes four or five writes
(setup, ringing, answered, final). Each caller submits its write and awaits
it; one task commits whatever has gathered in a single transaction, so a
write is durable when its await returns, and the database sees a few
transactions per second instead of hundreds. If a batch fails, its writes are
retried one transaction each so that one bad write cannot sink the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.store.db import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[AsyncSession], Awaitable[Any]]

MAX_BATCH = 500  # writes per transaction
OUTAGE_PATIENCE = 120.0  # seconds to keep retrying while the database is unreachable


class GroupWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dialer-group-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, op: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `op(session)` in the next group transaction; return its result once committed."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
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
                    try:
                        await self._commit([item])
                    except Exception as exc:  # noqa: BLE001 - reported to the submitter
                        if not item[1].done():
                            item[1].set_exception(exc)
            for _ in batch:
                self._queue.task_done()

    async def _commit_retrying(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        """Commit a batch; while the database is unreachable, keep trying (with
        backoff, up to OUTAGE_PATIENCE seconds) so calls in progress keep their
        records through a database restart or failover."""
        delay = 0.2
        waited = 0.0
        while True:
            try:
                await self._commit(batch)
                return
            except (OperationalError, InterfaceError, OSError) as exc:
                if waited >= OUTAGE_PATIENCE:
                    raise
                if waited == 0.0:
                    log.warning("database unreachable (%s); holding %d writes", exc, len(batch))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)

    async def _commit(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        results = []
        async with self.store.session() as s, s.begin():
            for op, _ in batch:
                results.append(await op(s))
        self.batches += 1
        self.writes += len(batch)
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)
