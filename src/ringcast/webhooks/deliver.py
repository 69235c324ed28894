"""Deliver the webhook outbox: claim due rows, POST them signed, record the result.

One :class:`WebhookDeliverer` per process that should send webhooks (``ringcast
serve``, each ``ringcast dialer``). It owns one named task, the pump, which

1. records the outcomes of finished attempts (one transaction for all of them),
2. claims as many due rows as it has free delivery slots (one statement; the
   rows are leased so other processes skip them),
3. starts one named delivery task per row: POST with a total time limit, no
   redirects, through the SSRF-guarded transport (netguard),

then sleeps until a delivery finishes or the poll interval passes. Deliveries
never run on the dialer's tasks, so a slow or dead receiver costs the calls
nothing; at most `max_concurrency` deliveries are in flight, each cut off after
`timeout` seconds. Nor does one receiver starve the others: a receiver
(``scheme://host:port``) holds at most `max_per_receiver` slots (half of them by
default), and one that timed out or refused the connection is not claimed for
`receiver_down_for` seconds (its rows wait in the database, unattempted).

Retry (:class:`Backoff`): a failed attempt (non-2xx, timeout, connection error)
is retried with the same webhook-id after 5 s, 30 s, 2 min, 10 min, 30 min, 1 h,
then every 2 h (±20 % jitter; a longer ``Retry-After`` is honoured up to the
cap) until 24 h after the event was created; then the row is given up
(`gave_up_at`, `last_error`); a sweep every minute gives up rows past the
window that were never tried (their receiver stayed down). ``410 Gone`` gives
up at once (the spec: the receiver asks to stop).

Signing secret: the ``webhook_secret`` of the API key that submitted the
request. Requests without a key (an open server on loopback) are signed with
the install secret (:func:`install_secret`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import make_url

import ringcast
from ringcast.domain import now_precise
from ringcast.errors import ConfigError, RingcastError
from ringcast.netguard import AddressRefused, NetPolicy, guarded_transport
from ringcast.store import outbox
from ringcast.store.db import DB_ERRORS, Outage, Store
from ringcast.webhooks.sign import decode_secret, generate_secret, signed_headers

log = logging.getLogger(__name__)

ENV_SECRET = "RINGCAST_WEBHOOK_SECRET"
SECRET_FILE_SUFFIX = ".webhook-secret"  # next to the SQLite file: ringcast.db.webhook-secret
POLL_INTERVAL = 0.5  # seconds between claims when nothing finished
PRUNE_INTERVAL = 3600.0  # seconds between deletions of old settled rows
SWEEP_INTERVAL = 60.0  # seconds between give-ups of rows past the retry window
HOST_DOWN_FOR = 30.0  # seconds a receiver that timed out or refused is left alone
RETENTION = timedelta(days=7)  # settled rows are kept this long for inspection
LEASE_MARGIN = 60.0  # seconds a claim outlives the delivery timeout
STOP_MARGIN = 5.0  # seconds stop() waits beyond the delivery timeout
MAX_ERROR = 300  # characters of last_error
USER_AGENT = f"ringcast-webhooks/{ringcast.__version__}"


# --- retry policy ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a failed delivery again, and when to give up.

    `delays` are the waits after the 1st, 2nd, ... failed attempt (seconds);
    after them every wait is `cap`. Each wait is scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``. Nothing is scheduled later than `window`
    seconds after the event was created; a failure at or after that moment
    gives up.
    """

    delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    cap: float = 7200.0  # seconds between attempts once `delays` are used up
    window: float = 24 * 3600.0  # seconds after creation during which attempts are made
    jitter: float = 0.2  # ± fraction of each delay

    def delay(self, failures: int, rand: float = 0.5) -> float:
        """The wait after `failures` failed attempts (>= 1); `rand` in [0, 1)."""
        base = self.delays[failures - 1] if failures <= len(self.delays) else self.cap
        base = min(base, self.cap)
        return base * (1.0 - self.jitter + 2.0 * self.jitter * rand)

    def next_attempt(
        self,
        *,
        created_at: datetime,
        now: datetime,
        failures: int,
        rand: float = 0.5,
        retry_after: float | None = None,
    ) -> datetime | None:
        """The time of the next attempt after a failure, or None to give up."""
        deadline = created_at + timedelta(seconds=self.window)
        if now >= deadline:
            return None
        wait = self.delay(failures, rand)
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.cap)
        return min(now + timedelta(seconds=wait), deadline)


# --- the install secret -------------------------------------------------------------------


def install_secret(db_url: str, configured: str | None = None) -> str | None:
    """The secret that signs webhooks of requests made without an API key.

    1. `configured`, the setting ``webhook_secret`` (``RINGCAST_WEBHOOK_SECRET``:
       ``whsec_`` + base64 of at least 24 bytes), if set: required when several
       machines share PostgreSQL, and must be the same on all of them;
    2. else, for a SQLite file, the file beside it (``ringcast.db.webhook-secret``,
       mode 0600), generated on first use and read by every later process;
    3. else None (PostgreSQL without the variable): such webhooks cannot be
       signed and are retried until the variable is set or 24 h pass.

    A malformed variable or file raises ConfigError naming it.
    """
    given = (configured or "").strip()
    if given:
        try:
            decode_secret(given)
        except ValueError as exc:
            raise ConfigError(f"{ENV_SECRET}: {exc}", field="webhook_secret") from None
        return given
    try:
        url = make_url(db_url)
    except Exception:  # noqa: BLE001 - not a URL: no file to keep a secret beside
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return _file_secret(Path(url.database + SECRET_FILE_SUFFIX).expanduser())


def _file_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        secret = generate_secret()
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        log.info("webhook install secret created in %s", path)
        return secret
    # Another process created it: it may still be writing (a few lines above).
    for _ in range(50):
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"webhook secret file {path}: {exc.strerror}", field="webhook_secret"
            ) from None
        if text:
            try:
                decode_secret(text)
            except ValueError as exc:
                raise ConfigError(
                    f"webhook secret file {path}: {exc}", field="webhook_secret"
                ) from None
            return text
        time.sleep(0.02)
    raise ConfigError(f"webhook secret file {path} is empty", field="webhook_secret")


# --- the deliverer -------------------------------------------------------------------------


def _where(url: str) -> str:
    """scheme://host:port of a URL, for logs and errors (paths and queries may hold tokens)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<bad url>"


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: the backoff is close enough
    return seconds if seconds >= 0 else None


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    error: str | None
    retry_after: float | None = None
    unreachable: bool = False  # timed out or could not connect: the receiver looks down


class WebhookDeliverer:
    """Sends the outbox. `start()` in a running loop, `await stop()` at shutdown.

    Counters for metrics: `delivered`, `failed_attempts`, `gave_up`.

    `clock` (aware UTC datetimes) and `rand` (floats in [0, 1)) may be injected
    by tests; `transport` replaces the SSRF-guarded httpx transport.
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._transport = transport
        self._http: httpx.AsyncBaseTransport | None = None
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
        self._last_sweep = 0.0
        self._done: list[outbox.Settlement] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_prune = 0.0
        self._warned_no_secret = False
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
        # The transport itself, not an httpx.AsyncClient: the client logs every
        # request's full URL at INFO, and callback URLs may carry tokens.
        self._http = self._transport or guarded_transport(
            self.policy,
            retries=0,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            ),
        )
        self._stop.clear()
        self._last_prune = self._last_sweep = time.monotonic()
        self._task = asyncio.create_task(self._pump(), name="webhook-deliverer")
        log.info(
            "webhook deliverer started (concurrency %d, timeout %.1fs)",
            self.max_concurrency,
            self.timeout,
        )

    def wake(self) -> None:
        """New rows were committed: claim now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming, let in-flight deliveries end (each is bounded by
        `timeout`), record their outcomes, close the HTTP client."""
        if self._task is None:
            return
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
        with contextlib.suppress(RingcastError):
            await self._flush()
        if self._http is not None:
            await self._http.aclose()
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
                await self._flush()
                await self._housekeeping()
                await self._claim_and_start()
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
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self.timeout + 1.0)
        await self._flush()

    def _unavailable(self) -> list[str]:
        """Receivers not to claim for now: down, or at their share of slots."""
        now = time.monotonic()
        for origin in [o for o, until in self._down.items() if until <= now]:
            del self._down[origin]
        full = [o for o, n in self._busy.items() if n >= self.max_per_receiver]
        return sorted(set(full) | set(self._down))

    async def _claim_and_start(self) -> None:
        free = self.max_concurrency - len(self._inflight)
        if free <= 0:
            return
        now = self.clock()
        skip = self._unavailable()
        rows = await outbox.claim_due(
            self.store, free, now=now, lease=self.lease, exclude_origins=skip
        )
        for row in rows:
            origin = outbox.origin_of(row.url)
            if origin in self._down or self._busy[origin] >= self.max_per_receiver:
                # Claimed before this receiver filled up or went down: give it back.
                self._done.append(
                    outbox.Settlement(row.id, now, deferred=True, next_attempt_at=now)
                )
                continue
            self._busy[origin] += 1
            task = asyncio.create_task(self._deliver(row, origin), name=f"webhook-{row.webhook_id}")
            self._inflight[row.id] = task
        if len(rows) == free:
            self._wake.set()  # maybe more are due: claim again when a slot frees

    async def _flush(self) -> None:
        if not self._done:
            return
        batch, self._done = self._done, []
        try:
            await outbox.settle(self.store, batch)
        except RingcastError:
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
            self._settle(row, _Attempt(None, "internal error"))
        finally:
            self._inflight.pop(row.id, None)
            self._busy[origin] -= 1
            if self._busy[origin] <= 0:
                del self._busy[origin]
            self._wake.set()

    def _signing_secret(self, row: outbox.Due) -> str | None:
        if row.api_key_id is not None:
            return row.secret
        if self._secret is None and not self._warned_no_secret:
            self._warned_no_secret = True
            log.warning("webhook %s has no API key and no install secret is set", row.webhook_id)
        return self._secret

    async def _attempt(self, row: outbox.Due) -> _Attempt:
        if self._http is None:
            raise RuntimeError("WebhookDeliverer.start() was not called")
        if row.key_missing:
            return _Attempt(None, "the API key of this webhook no longer exists")
        secret = self._signing_secret(row)
        if secret is None:
            return _Attempt(None, f"no signing secret: set {ENV_SECRET}")
        body = encode_body(row.payload)
        stamp = int(time.time())  # the attempt's wall-clock time: receivers check it
        headers = {
            **signed_headers(secret, row.webhook_id, stamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            request = httpx.Request(
                "POST",
                row.url,
                content=body,
                headers=headers,
                extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
            )
            async with asyncio.timeout(self.timeout):
                resp = await self._http.handle_async_request(request)
                try:
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                    return _Attempt(resp.status_code, None, retry_after)
                finally:
                    await resp.aclose()  # the body is not read: any size, any speed
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt(None, f"timed out after {self.timeout:g}s", unreachable=True)
        except httpx.ConnectError as exc:
            return _Attempt(
                None, f"ConnectError: {_clean(str(exc), row.url)}"[:MAX_ERROR], unreachable=True
            )
        except AddressRefused as exc:
            return _Attempt(None, exc.message.split(":", 1)[0] + ": refused (private address)")
        except httpx.InvalidURL:
            return _Attempt(None, "invalid URL")
        except httpx.HTTPError as exc:
            return _Attempt(None, f"{type(exc).__name__}: {_clean(str(exc), row.url)}")

    def _settle(self, row: outbox.Due, attempt: _Attempt) -> None:
        now = self.clock()
        request_id = None
        if row.event_type in outbox.FINAL_CALL_EVENTS:
            data = row.payload.get("data")
            if isinstance(data, Mapping) and isinstance(data.get("request_id"), str):
                request_id = data["request_id"]
        where = _where(row.url)
        if attempt.status is not None and 200 <= attempt.status < 300:
            self.delivered += 1
            self._done.append(outbox.Settlement(row.id, now, delivered=True, request_id=request_id))
            log.debug(
                "webhook %s %s to %s: %d", row.webhook_id, row.event_type, where, attempt.status
            )
            return
        self.failed_attempts += 1
        error = attempt.error or f"HTTP {attempt.status}"
        error = error[:MAX_ERROR]
        next_at = None
        if attempt.status != 410 and not row.key_missing:
            next_at = self.backoff.next_attempt(
                created_at=row.created_at,
                now=now,
                failures=row.attempts + 1,
                rand=self.rand(),
                retry_after=attempt.retry_after,
            )
        if next_at is None:
            self.gave_up += 1
            self._done.append(
                outbox.Settlement(row.id, now, gave_up=True, error=error, request_id=request_id)
            )
            log.warning(
                "webhook %s %s to %s: gave up after %d attempts: %s",
                row.webhook_id,
                row.event_type,
                where,
                row.attempts + 1,
                error,
            )
            return
        self._done.append(outbox.Settlement(row.id, now, next_attempt_at=next_at, error=error))
        log.info(
            "webhook %s %s to %s: attempt %d failed (%s); next in %.0fs",
            row.webhook_id,
            row.event_type,
            where,
            row.attempts + 1,
            error,
            (next_at - now).total_seconds(),
        )


def _clean(message: str, url: str) -> str:
    """An error message without the URL's path and query (they may hold tokens)."""
    return message.replace(url, _where(url)) if url else message


def deliverer_lifespan(
    settings: Any, **kwargs: Any
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A hook for the API's lifespan (like ``dialer_lifespan``): run a
    WebhookDeliverer on the app's store; it is ``state.webhooks`` meanwhile."""

    @asynccontextmanager
    async def hook(state: Any) -> AsyncIterator[None]:
        store: Store = state.store if hasattr(state, "store") else state["store"]
        deliverer = WebhookDeliverer.from_settings(settings, store, **kwargs)
        deliverer.start()
        with contextlib.suppress(Exception):
            state.webhooks = deliverer
        try:
            yield
        finally:
            await deliverer.stop()

    return hook
