"""Deliver the webhook outbox: claim due rows, POST them signed, record the result.

One :class:`WebhookDeliverer` per process that should send webhooks (``ringcast
serve``, each ``ringcast dialer``). It owns one named task, the pump, which

1. records the outcomes of the attempts finished since its last pass and claims
   as many due rows as it has free delivery slots, in one transaction (one
   statement claims; the rows are leased so other processes skip them),
2. starts one named delivery task per row (:func:`~ringcast.webhooks.attempt.post`:
   POST with a total time limit, no redirects, through the SSRF-guarded
   connector of an aiohttp session that keeps connections open),

then sleeps until a delivery finishes (the deliveries that finish while a pass
runs are settled together by the next), an event is committed in this process
(:func:`ringcast.store.outbox.on_commit`), or the poll interval passes (what
other processes commit is found by the poll). Deliveries
never run on the dialer's tasks, so a slow or dead receiver costs the calls
nothing; at most `max_concurrency` deliveries are in flight, each cut off after
`timeout` seconds. Nor does one receiver starve the others: a receiver
(``scheme://host:port``) holds at most `max_per_receiver` slots (half of them by
default), and one that timed out or refused the connection is not claimed for
`receiver_down_for` seconds (its rows wait in the database, unattempted).
A claim takes a row per free slot and some more ("ahead", whoever they are
for; how many: :class:`~ringcast.webhooks.ahead.AheadPolicy`, more after a
slow transaction). On SQLite every claim and settlement needs the one write
lock, and while a dialer in the same process dials, its group commits hold it
nearly all the time: a settle-and-claim of its own waited 1.2-1.8 s for it
(SQLite's busy handler sleeps rather than queues; bench/RESULTS.md, webhooks).
So there (:meth:`WebhookDeliverer.share_writer`,
``ringcast serve`` and ``ringcast dialer``) the settle-and-claim is a write of
the dialer's group writer: it rides in the dialer's next commit, and nothing
else of this process competes for the lock. Without a dialer (or once its
writer stops, at shutdown) and on PostgreSQL (row locks: the deliverer's
transactions neither wait for the dialer's nor hold them up) it has
transactions of its own.
Rows claimed for a receiver that is at its share wait in this process, leased,
and start as its deliveries finish, without another claim: a receiver with as
many rows waiting as are taken ahead is left out of claims, no row waits longer
than WAIT_LIMIT (then it is released to the database unsent, well within its
lease), and a receiver that goes down releases its waiting rows.

Retry (:class:`~ringcast.webhooks.backoff.Backoff`): a failed attempt (non-2xx,
timeout, connection error) is retried with the same webhook-id after 5 s, 30 s,
2 min, 10 min, 30 min, 1 h, then every 2 h (±20 % jitter; a longer
``Retry-After`` is honoured up to the cap) until 24 h after the event was
created; then the row is given up
(`gave_up_at`, `last_error`); a sweep every minute gives up rows past the
window that were never tried (their receiver stayed down). ``410 Gone`` gives
up at once (the spec: the receiver asks to stop).

Signing secret: the ``webhook_secret`` of the API key that submitted the
request. Requests without a key (an open server on loopback) are signed with
the install secret (:func:`~ringcast.webhooks.secret.install_secret`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ringcast.domain import now_precise
from ringcast.errors import RingcastError, StoreError
from ringcast.netguard import NetPolicy
from ringcast.netguard_aiohttp import guarded_connector
from ringcast.store import outbox
from ringcast.store.db import DB_ERRORS, Outage, Store
from ringcast.webhooks.ahead import MAX_AHEAD, SLOW_CLAIM, AheadPolicy, claim_size
from ringcast.webhooks.attempt import Attempt, decide, open_session, post, where
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.secret import ENV_SECRET, install_secret

__all__ = [
    "SLOW_CLAIM",
    "Backoff",
    "SharedWriter",
    "WebhookDeliverer",
    "deliverer_lifespan",
    "install_secret",
]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds between claims when nothing finished
PRUNE_INTERVAL = 3600.0  # seconds between deletions of old settled rows
SWEEP_INTERVAL = 60.0  # seconds between give-ups of rows past the retry window
HOST_DOWN_FOR = 30.0  # seconds a receiver that timed out or refused is left alone
RETENTION = timedelta(days=7)  # settled rows are kept this long for inspection
LEASE_MARGIN = 60.0  # seconds a claim outlives the delivery timeout
STOP_MARGIN = 5.0  # seconds stop() waits beyond the delivery timeout
WAIT_LIMIT = LEASE_MARGIN / 2  # seconds a claimed row may wait for a slot before it is released
KEEPALIVE = 4.0  # seconds an idle connection to a receiver is kept (below common servers' 5 s)


class SharedWriter(Protocol):
    """What the deliverer needs of the dialer's group writer
    (:class:`ringcast.dialer.writer.GroupWriter`)."""

    @property
    def accepting(self) -> bool:
        """A write submitted now will be committed (running, not stopping)."""
        ...

    async def submit(self, op: Callable[[AsyncSession], Any]) -> Any:
        """Run `op(session)` in the writer's next transaction; its result once committed."""
        ...


# --- the deliverer -------------------------------------------------------------------------


class WebhookDeliverer:
    """Sends the outbox. `start()` in a running loop, `await stop()` at shutdown.

    Counters for metrics: `delivered`, `failed_attempts`, `gave_up`.

    `clock` (aware UTC datetimes) and `rand` (floats in [0, 1)) may be injected
    by tests.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_concurrency: int = 20,
        timeout: float = 10.0,
        allow_private: bool = False,
        allow_networks: tuple[str, ...] = (),
        secret: str | None = None,
        configured_secret: str | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = now_precise,
        rand: Callable[[], float] = random.random,
        poll_interval: float = POLL_INTERVAL,
        max_per_receiver: int | None = None,
        receiver_down_for: float = HOST_DOWN_FOR,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be above 0")
        self.store = store
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.policy = NetPolicy.build(allow_private=allow_private, allow_networks=allow_networks)
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rand = rand
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=timeout + LEASE_MARGIN)
        self._secret = secret
        self._secret_given = secret is not None
        self._configured_secret = configured_secret  # Settings.webhook_secret, checked in start()
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        # Receivers (scheme://host:port) with deliveries in flight, and those left
        # alone until a monotonic time after timing out: one slow or dead
        # receiver holds at most `max_per_receiver` of the slots.
        self.max_per_receiver = max_per_receiver or max(1, max_concurrency // 2)
        self.receiver_down_for = receiver_down_for
        self.sweep_interval = sweep_interval
        self._busy: Counter[str] = Counter()
        self._down: dict[str, float] = {}
        # Claimed rows waiting for a slot of their receiver, with the monotonic
        # time of their claim.
        self._waiting: dict[str, deque[tuple[outbox.Due, float]]] = {}
        self._last_sweep = 0.0
        self._done: list[outbox.Settlement] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._warned_no_secret = False
        self._more = False  # the last claim was full: more rows are due
        self._policy = AheadPolicy(floor=max_concurrency, cap=max(MAX_AHEAD, max_concurrency))
        self._ahead = max_concurrency  # rows claimed beyond the free slots (see the docstring)
        self._writer: SharedWriter | None = None  # the dialer's group writer, on SQLite
        self.shared_transactions = 0  # settle-and-claims that rode in the writer's commits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.gave_up = 0

    @classmethod
    def from_settings(cls, settings: Any, store: Store, **kwargs: Any) -> WebhookDeliverer:
        """With the SSRF policy of a Settings (`allow_private_urls`, `private_url_allowlist`)
        and its install secret (`webhook_secret`)."""
        return cls(
            store,
            allow_private=bool(getattr(settings, "allow_private_urls", False)),
            allow_networks=tuple(getattr(settings, "private_url_allowlist", ()) or ()),
            configured_secret=getattr(settings, "webhook_secret", None),
            **kwargs,
        )

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Resolve the install secret (ConfigError if malformed) and start the pump."""
        if self._task is not None:
            return
        if not self._secret_given:
            self._secret = install_secret(self.store.url, self._configured_secret)
        if self._secret is None:
            log.warning(
                "no webhook install secret: webhooks of requests without an API key "
                "cannot be signed until %s is set (the same on every node)",
                ENV_SECRET,
            )
        # At most max_concurrency connections, max_per_receiver of them to one
        # receiver (the slots they serve); every new one is checked by the guard.
        self._http = open_session(
            guarded_connector(
                self.policy,
                limit=self.max_concurrency,
                limit_per_host=self.max_per_receiver,
                keepalive_timeout=KEEPALIVE,
            )
        )
        self._stop.clear()
        self._last_prune = self._last_sweep = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = outbox.on_commit(self._committed)
        self._task = asyncio.create_task(self._pump(), name="webhook-deliverer")
        log.info(
            "webhook deliverer started (concurrency %d, timeout %.1fs)",
            self.max_concurrency,
            self.timeout,
        )

    def share_writer(self, writer: SharedWriter | None) -> None:
        """Settle and claim through `writer` (the group writer of a dialer in
        this process) while it accepts writes, on SQLite; None: own
        transactions again. On PostgreSQL this keeps its own transactions."""
        self._writer = writer if writer is not None and self.store.dialect == "sqlite" else None

    def wake(self) -> None:
        """New rows were committed: claim now rather than at the next poll."""
        self._wake.set()

    def _committed(self) -> None:
        """outbox.on_commit: a session of this process committed events."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Stop claiming, let in-flight deliveries end (each is bounded by
        `timeout`), record their outcomes, close the HTTP client."""
        if self._task is None:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._wake.set()
        try:
            async with asyncio.timeout(self.timeout + STOP_MARGIN):
                await self._task
        except TimeoutError:
            log.warning("webhook deliverer did not stop in time; cancelling")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        self._inflight.clear()
        self._release_waiting()
        with contextlib.suppress(RingcastError):
            await self._flush()
        if self._http is not None:
            await self._http.close()
            self._http = None
        log.info("webhook deliverer stopped")

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # --- the pump ---------------------------------------------------------------------

    async def _pump(self) -> None:
        outage = Outage("webhook deliverer", log)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self._housekeeping()
                await self._settle_and_claim()
                outage.ok()
            except DB_ERRORS as exc:
                outage.failed(exc)
            except RingcastError as exc:
                log.warning("webhook deliverer: %s", exc)
            except Exception:
                log.exception("webhook deliverer pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
        self._release_waiting()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.timeout + 1.0)
        self._release_waiting()
        await self._flush()

    def _unavailable(self) -> list[str]:
        """Receivers not to claim for now: down, or at their share of slots with
        as many rows waiting besides as a claim takes ahead."""
        now = time.monotonic()
        for origin in [o for o, until in self._down.items() if until <= now]:
            del self._down[origin]
        full = [
            o
            for o, n in self._busy.items()
            if n >= self.max_per_receiver and len(self._waiting.get(o, ())) >= self._ahead
        ]
        return sorted(set(full) | set(self._down))

    async def _settle_and_claim(self) -> None:
        """Record the finished attempts and claim rows for the free slots and as
        some ahead to wait, in one transaction; start their deliveries."""
        free = max(0, self.max_concurrency - len(self._inflight))
        limit = claim_size(free, self._ahead)
        batch, self._done = self._done, []
        if not batch and not limit:
            return
        now = self.clock()
        began = time.monotonic()
        try:
            rows = await self._settle_and_claim_rows(batch, limit, now)
        except Exception:
            self._done = batch + self._done  # kept; the lease stops double sends meanwhile
            raise
        claimed = time.monotonic()
        self._ahead = self._policy.after(self._ahead, claimed - began)
        for row in rows:
            origin = outbox.origin_of(row.url)
            waiting = self._waiting.get(origin)
            if origin in self._down:
                self._release(row)  # went down since: give it back
            elif self._busy[origin] < self.max_per_receiver and not waiting:
                self._start(row, origin)
            elif waiting is None or len(waiting) < self.max_concurrency + 2 * MAX_AHEAD:
                self._waiting.setdefault(origin, deque()).append((row, claimed))
            else:
                self._release(row)
        self._more = limit > 0 and len(rows) == limit
        if self._more:
            self._wake.set()  # maybe more are due: claim again when a slot frees

    async def _settle_and_claim_rows(
        self, batch: list[outbox.Settlement], limit: int, now: datetime
    ) -> list[outbox.Due]:
        """Settle `batch` and claim up to `limit` rows: in the shared writer's
        next commit if there is one accepting writes, else in a transaction of
        its own. A plain read first when only a claim is to be made and the
        last one was not full (most idle passes find nothing due)."""
        writer = self._writer
        if writer is None or not writer.accepting:
            return await outbox.settle_and_claim(
                self.store,
                batch,
                limit,
                now=now,
                lease=self.lease,
                exclude_origins=self._unavailable(),
                probe=not self._more,
            )
        excluded = self._unavailable()
        if limit and not batch and not self._more:
            if not await outbox.any_due(self.store, now=now, exclude_origins=excluded):
                return []
        if not writer.accepting:  # it began to stop during the read
            return await outbox.settle_and_claim(
                self.store, batch, limit, now=now, lease=self.lease, exclude_origins=excluded
            )

        async def op(s: AsyncSession) -> list[outbox.Due]:
            return await outbox.settle_and_claim_in(
                s, batch, limit, now=now, lease=self.lease, exclude_origins=excluded
            )

        try:
            rows: list[outbox.Due] = await writer.submit(op)
        except SQLAlchemyError as exc:  # the writer retried it alone first
            raise StoreError(f"database error: {type(exc).__name__}") from exc
        self.shared_transactions += 1
        return rows

    async def _flush(self) -> None:
        if not self._done:
            return
        batch, self._done = self._done, []
        try:
            await self._settle_and_claim_rows(batch, 0, batch[0].at)
        except Exception:
            self._done = batch + self._done  # kept; the lease stops double sends meanwhile
            raise

    async def _housekeeping(self) -> None:
        """Give up rows past the retry window (every `sweep_interval`); delete
        settled rows older than RETENTION (hourly)."""
        mono = time.monotonic()
        if mono - self._last_sweep >= self.sweep_interval:
            self._last_sweep = mono
            now = self.clock()
            window = timedelta(seconds=self.backoff.window)
            n = await outbox.give_up_expired(self.store, created_before=now - window, now=now)
            if n:
                self.gave_up += n
                log.warning(
                    "webhook outbox: %d events not delivered within %s: given up", n, window
                )
        if mono - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = mono
            n = await outbox.prune(self.store, before=self.clock() - RETENTION)
            if n:
                log.info("webhook outbox: %d settled rows older than %s deleted", n, RETENTION)

    # --- one delivery -------------------------------------------------------------------

    def _start(self, row: outbox.Due, origin: str) -> None:
        self._busy[origin] += 1
        task = asyncio.create_task(self._deliver(row, origin), name=f"webhook-{row.webhook_id}")
        self._inflight[row.id] = task

    def _release(self, row: outbox.Due) -> None:
        """Give a claimed row back unsent, due now (the next claim may take it)."""
        now = self.clock()
        self._done.append(outbox.Settlement(row.id, now, deferred=True, next_attempt_at=now))

    def _release_waiting(self, origin: str | None = None) -> None:
        for o in [origin] if origin is not None else list(self._waiting):
            for row, _ in self._waiting.pop(o, ()):
                self._release(row)

    def _next_waiting(self, origin: str) -> None:
        """A slot of `origin` is free: start its next waiting row (none while it is
        down, and none that waited past WAIT_LIMIT: those are released)."""
        if origin in self._down or self._stop.is_set():
            self._release_waiting(origin)
            return
        waiting = self._waiting.get(origin)
        mono = time.monotonic()
        while waiting and self._busy[origin] < self.max_per_receiver:
            row, claimed = waiting.popleft()
            if mono - claimed > WAIT_LIMIT:
                self._release(row)
            else:
                self._start(row, origin)
        if not waiting:
            self._waiting.pop(origin, None)

    async def _deliver(self, row: outbox.Due, origin: str) -> None:
        try:
            attempt = await self._attempt(row)
            if attempt.unreachable:
                self._down[origin] = time.monotonic() + self.receiver_down_for
            elif attempt.status is not None:
                self._down.pop(origin, None)
            self._settle(row, attempt)
        except Exception:
            log.exception("webhook %s: delivery crashed", row.webhook_id)
            self._settle(row, Attempt(None, "internal error"))
        finally:
            self._inflight.pop(row.id, None)
            self._busy[origin] -= 1
            if self._busy[origin] <= 0:
                del self._busy[origin]
            self._next_waiting(origin)
            self._wake.set()

    def _signing_secret(self, row: outbox.Due) -> str | None:
        if row.api_key_id is not None:
            return row.secret
        if self._secret is None and not self._warned_no_secret:
            self._warned_no_secret = True
            log.warning("webhook %s has no API key and no install secret is set", row.webhook_id)
        return self._secret

    async def _attempt(self, row: outbox.Due) -> Attempt:
        if self._http is None:
            raise RuntimeError("WebhookDeliverer.start() was not called")
        if row.key_missing:
            return Attempt(None, "the API key of this webhook no longer exists")
        secret = self._signing_secret(row)
        if secret is None:
            return Attempt(None, f"no signing secret: set {ENV_SECRET}")
        return await post(self._http, row, secret, within=self.timeout)

    def _settle(self, row: outbox.Due, attempt: Attempt) -> None:
        """Apply :func:`~ringcast.webhooks.attempt.decide`: count, log, queue the
        settlement for the pump's next transaction."""
        st = decide(row, attempt, now=self.clock(), backoff=self.backoff, rand=self.rand())
        self._done.append(st)
        at = where(row.url)
        if st.delivered:
            self.delivered += 1
            log.debug("webhook %s %s to %s: %s", row.webhook_id, row.event_type, at, attempt.status)
            return
        self.failed_attempts += 1
        if st.gave_up:
            self.gave_up += 1
            log.warning(
                "webhook %s %s to %s: gave up after %d attempts: %s",
                row.webhook_id,
                row.event_type,
                at,
                row.attempts + 1,
                st.error,
            )
            return
        log.info(
            "webhook %s %s to %s: attempt %d failed (%s); next in %.0fs",
            row.webhook_id,
            row.event_type,
            at,
            row.attempts + 1,
            st.error,
            ((st.next_attempt_at or st.at) - st.at).total_seconds(),
        )


def deliverer_lifespan(
    settings: Any, **kwargs: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[WebhookDeliverer]]:
    """A hook for the API's lifespan (like ``dialer_lifespan``): run a
    WebhookDeliverer on the app's store; it is ``state.webhooks`` meanwhile,
    and what the hook's context yields."""

    @asynccontextmanager
    async def hook(state: Any) -> AsyncIterator[WebhookDeliverer]:
        store: Store = state.store if hasattr(state, "store") else state["store"]
        deliverer = WebhookDeliverer.from_settings(settings, store, **kwargs)
        deliverer.start()
        with contextlib.suppress(Exception):
            state.webhooks = deliverer
        try:
            yield deliverer
        finally:
            await deliverer.stop()

    return hook
