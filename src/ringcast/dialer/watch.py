"""The dialer's watcher: cancellations, heartbeat, sweeps; and LISTEN for new work.

Every WATCH_INTERVAL the watcher hangs up live calls of requests canceled
through the API; every SWEEP_INTERVAL it marks drained requests inactive and
runs the recordings' retention sweep (and, with no call live, a full garbage
collection: ringcast.heap). Every third of `node_timeout` it refreshes the
node's heartbeat and, on PostgreSQL, rescues the calls of dead nodes, each on
its own loop. On PostgreSQL a LISTEN connection wakes an idle claim loop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ringcast import heap
from ringcast.dialer.recordings import RetentionSweep
from ringcast.dialer.requests_cache import RequestCache
from ringcast.errors import RingcastError
from ringcast.sip.flag import Flag
from ringcast.store import queue
from ringcast.store.db import DB_ERRORS, Outage, Store
from ringcast.store.queue import ClaimedCall
from ringcast.store.requests import WORK_CHANNEL

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5  # seconds between cancellation checks
SWEEP_INTERVAL = 5.0  # seconds between marking finished requests inactive


@dataclass
class LiveCall:
    claimed: ClaimedCall
    cancel: Flag = field(default_factory=Flag)  # no deque per call (sip.flag)
    task: asyncio.Task[None] | None = None
    cut: str | None = None  # why this node hung up a connected call itself (its record's error)


@dataclass
class Watcher:
    """What the watcher looks after; `declared_dead` and `rescue` are the dialer's."""

    store: Store
    node_id: str
    node_timeout: float  # seconds
    single_node: bool
    live: dict[str, LiveCall]
    requests: RequestCache
    retention: RetentionSweep
    declared_dead: Callable[[], Awaitable[None]]
    rescue: Callable[[], Awaitable[None]]

    _swept: float = field(default=0.0, init=False)

    async def run(self, stop: asyncio.Event) -> None:
        """The heartbeat, the rescue of dead nodes' calls and the rest each on a
        loop of its own: a step that waits on a database lock (a rescue's UPDATE
        on rows a frozen node's open transaction holds) must not hold up the
        heartbeat, or this node, alive, goes stale and is declared dead by the
        frozen one as soon as it thaws (seen in test_fleet's SIGSTOP test)."""
        interval = self.node_timeout / 3  # seconds between heartbeats
        loops = [
            self._every(WATCH_INTERVAL, self._watch, "dialer watcher", stop),
            self._every(interval, self._beat, "dialer heartbeat", stop),
        ]
        if not self.single_node:
            loops.append(self._every(interval, self.rescue, "dialer rescue", stop))
        await asyncio.gather(*loops)

    @staticmethod
    async def _every(
        period: float, step: Callable[[], Awaitable[None]], what: str, stop: asyncio.Event
    ) -> None:
        outage = Outage(what, log)
        while not stop.is_set():
            await asyncio.sleep(period)
            try:
                await step()
                outage.ok()
            except DB_ERRORS as exc:
                outage.failed(exc)
            except RingcastError as exc:
                log.warning("%s: %s", what, exc)
            except Exception:
                log.exception("%s failed", what)

    async def _beat(self) -> None:
        if not await queue.heartbeat(self.store, self.node_id):
            await self.declared_dead()

    async def _watch(self) -> None:
        await self.check_cancellations()
        self._swept += WATCH_INTERVAL
        if self._swept >= SWEEP_INTERVAL:
            self._swept = 0.0
            await queue.sweep_drained(self.store)
            await self.retention.tick(self.store, SWEEP_INTERVAL)
            heap.collect_when_idle(len(self.live))  # no stream waits on it

    async def check_cancellations(self) -> None:
        ids = {c.claimed.request_id for c in self.live.values()}
        for rid in await queue.canceled_among(self.store, ids):
            self.requests.mark_canceled(rid)
            for c in self.live.values():
                if c.claimed.request_id == rid:
                    c.cancel.set()


async def listen_loop(store: Store, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """LISTEN for new work on PostgreSQL so idle dialers claim at once; the
    claim loop's polling covers any gap while this connection is down."""
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(store.url).set(drivername="postgresql")
    dsn_text = dsn.render_as_string(hide_password=False)
    while not stop.is_set():
        conn = None
        try:
            conn = await asyncpg.connect(dsn_text)
            await conn.add_listener(WORK_CHANNEL, lambda *_: wake.set())
            while not stop.is_set():
                await asyncio.sleep(5.0)
                await conn.execute("SELECT 1")  # notice a lost connection
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # InterfaceError: asyncpg's own "connection is closed" after a cut
            log.warning("LISTEN %s lost (%s); polling meanwhile", WORK_CHANNEL, exc)
            await asyncio.sleep(2.0)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
