"""The dialer service: claim due calls within limits, place them, record them.

One `Dialer` per process. Its tasks (each named, owned and stopped here):

- the claim loop: claims as many due calls as free channels and the CPS pacer
  allow, shared fairly among requests (store/fair.py), checks window /
  do-not-call / cancellation, then starts one call task per call, spaced by
  the pacer;
- prompt tasks (dialer/preparing.py): a request's calls are not claimed here
  until its prompt is ready;
- the watcher (dialer/watch.py): cancellations, heartbeat, sweeps;
- the group writer (dialer/writer.py), which commits call-state changes in
  batches; what is written is dialer/writes.py's.

Shutdown (SIGTERM): stop claiming, give live calls `shutdown_grace` seconds to
finish, then hang them up and record them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from ringcast import sealing
from ringcast.config import Settings
from ringcast.dialer.call import (
    CallContext,
    CallJob,
    CallReport,
    ProgressFn,
    Script,
    TrunkGone,
    media_fetcher,
    place_call,
    resolve_sip,
    rtp_bind_host,
    sip_endpoint,
)
from ringcast.dialer.carrier import NotRoutable, Route, TrunkRegistrations, region_of, route
from ringcast.dialer.flow import Flow, make_script
from ringcast.dialer.legs import AgentLegs
from ringcast.dialer.limits import Backoff, NodeLimits
from ringcast.dialer.policy import RetryPolicy, earliest_dial_time
from ringcast.dialer.preparing import PromptPreparation, codecs_of
from ringcast.dialer.recordings import RetentionSweep, stored
from ringcast.dialer.requests_cache import RequestCache
from ringcast.dialer.script import has_actions
from ringcast.dialer.watch import LiveCall, Watcher, listen_loop
from ringcast.dialer.writer import GroupWriter
from ringcast.dialer.writes import CallWrites
from ringcast.domain import Outcome, Result, now_precise
from ringcast.errors import RingcastError
from ringcast.inet import hostport
from ringcast.media import tts
from ringcast.media.prompt import Prompt, PromptCache
from ringcast.rtp import PortAllocator, RtpClock
from ringcast.sip.endpoint import SipEndpoint
from ringcast.store import dnc, fair, limiter, queue
from ringcast.store.db import DB_ERRORS, Outage, Store, lost_database
from ringcast.store.queue import ClaimedCall, Fence, RequestInfo
from ringcast.webhooks.deliver import deliverer_lifespan

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # seconds between claims when the queue is empty

__all__ = ["Dialer", "LiveCall", "dialer_lifespan"]


class Dialer:
    """Claims and places the calls of every request in the database."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        node_id: str | None = None,
        sip: SipEndpoint | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.node_id = node_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.single_node = store.dialect == "sqlite"
        self.limits = NodeLimits(max_calls=settings.max_calls, cps=settings.cps)
        self.backoff = Backoff()  # requests refused by a fleet limit, for a moment
        self.writer = GroupWriter(store)
        self.sip = sip or sip_endpoint(settings)
        self._own_sip = sip is None
        self.clock = RtpClock()
        self.ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        self.ctx = CallContext(
            sip=self.sip,
            clock=self.clock,
            ports=self.ports,
            public_ip=settings.public_ip,
            rtp_bind_host=rtp_bind_host(settings),
        )
        self.live: dict[str, LiveCall] = {}
        self.fence = Fence(self.node_id, 0)
        self.requests = RequestCache(store)
        self.writes = CallWrites(settings, self.writer, self.requests, self.node_id)
        tts.configure_piper_voices(settings.piper_voices)  # the voices requests may name
        self.sealer = sealing.sealer_for(store.url, settings.secret_key)  # inline passwords
        self.prompts = PromptCache(http=media_fetcher(settings))
        self.preparation = PromptPreparation(
            store, self.prompts, self.requests, self.writes, on_ready=self.wake
        )
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.calls_placed = 0
        self.registrations = TrunkRegistrations(self.sip, {})  # made at start()
        self.transfers: dict[tuple[str, str], int] = {}  # (mode, result) -> n, for metrics
        self.recordings_made = 0
        self.recording_bytes_made = 0
        self.retention = RetentionSweep(
            settings.recording_retention_days, settings.recording_sweep_interval
        )
        self.watcher = Watcher(
            store=store,
            node_id=self.node_id,
            node_timeout=settings.node_timeout,
            single_node=self.single_node,
            live=self.live,
            requests=self.requests,
            retention=self.retention,
            declared_dead=self._declared_dead,
            rescue=lambda: self._rescue(initial=False),
        )

    # --- life cycle ------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.max_calls > self.ports.capacity:
            log.warning(
                "--max-calls %d is more than the %d RTP port pairs of --rtp-ports %d-%d:"
                " calls beyond them fail with 'no RTP port available'",
                self.settings.max_calls,
                self.ports.capacity,
                self.settings.rtp_port_min,
                self.settings.rtp_port_max,
            )
        if self._own_sip:
            await self.sip.start()
        self.registrations = TrunkRegistrations(
            self.sip, self.settings.trunks, store=self.store, node_id=self.node_id
        )
        self.registrations.start()
        self.clock.start()
        self.writer.start()
        epoch = await queue.register_node(self.store, self.node_id)
        self.fence = Fence(self.node_id, epoch)
        await self._rescue(initial=True)
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name=f"dialer-claim-{self.node_id}"),
            asyncio.create_task(self.watcher.run(self._stop), name=f"dialer-watch-{self.node_id}"),
        ]
        if self.store.dialect == "postgresql":
            self._tasks.append(
                asyncio.create_task(
                    listen_loop(self.store, self._wake, self._stop),
                    name=f"dialer-listen-{self.node_id}",
                )
            )
        log.info(
            "dialer %s started (max_calls=%d cps=%s sip=%s loop=%s)",
            self.node_id,
            self.settings.max_calls,
            self.settings.cps,
            hostport(self.settings.sip_host, self.sip.local_port),
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def wake(self) -> None:
        """New work arrived: claim now instead of at the next poll."""
        self._wake.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let live calls finish within `grace`, then hang up."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._stop.set()
        self._wake.set()
        preparing = self.preparation.stop()
        for t in self._tasks:
            t.cancel()
        for t in [*self._tasks, *preparing]:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # a loop that died must not stop the shutdown
                log.exception("dialer task %s had failed", t.get_name())
        pending = [c.task for c in self.live.values() if c.task is not None]
        if pending:
            log.info("dialer stopping: %d calls in progress, grace %.0fs", len(pending), grace)
            _, still = await asyncio.wait(pending, timeout=grace)
            if still:
                for c in self.live.values():
                    c.cut = f"hung up at shutdown, after the {grace:g} s grace"
                    c.cancel.set()
                await asyncio.wait(still, timeout=10)
        await self.writer.stop()
        with contextlib.suppress(Exception):
            await queue.unregister_node(self.store, self.node_id)
        await self.clock.stop()
        await self.registrations.stop()  # expires 0 for every binding (RFC 3261 §10.2.2)
        if self._own_sip:
            await self.sip.close()
        log.info("dialer %s stopped", self.node_id)

    # --- claim loop --------------------------------------------------------------

    async def _claim_loop(self) -> None:
        outage = Outage("dialer claims", log)
        while not self._stop.is_set():
            try:
                claimed = await self._claim_batch()
                outage.ok()
            except DB_ERRORS as exc:
                outage.failed(exc)
                claimed = []
            except RingcastError as exc:
                log.error("claim failed: %s", exc)
                claimed = []
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
                continue
            suppressed = await self._on_dnc(claimed)
            refused: set[str] = set()  # requests refused by a fleet limit in this batch
            for call in claimed:
                if self._stop.is_set() or call.request_id in refused:
                    # keep the request's recipient order: its later calls go back too
                    await self.writes.give_back(call)
                    continue
                if not await self._dispatch_safely(call, outage, on_dnc=call.id in suppressed):
                    refused.add(call.request_id)

    async def _dispatch_safely(self, call: ClaimedCall, outage: Outage, *, on_dnc: bool) -> bool:
        """`_dispatch` one claimed call; whatever goes wrong with it, the claim loop
        goes on. A lost database gives the call back to the queue (the writer
        waits out the outage); anything else fails this call alone, with its error
        in the record, instead of stopping every later call of the node.
        False when a fleet limit refused the call (it went back to the queue)."""
        try:
            return await self._dispatch(call, on_dnc=on_dnc)
        except Exception as exc:
            try:
                if lost_database(exc):
                    outage.failed(exc)
                    await self.writes.give_back(call)
                    return False
                log.error("call %s could not be placed", call.id, exc_info=exc)
                first_line = str(exc).strip().split("\n", 1)[0][:200]  # no SQL or parameters
                error = f"could not be placed: {type(exc).__name__}: {first_line}"
                await self.writes.finish_now(call, Result.FAILED, Outcome.FAILED, error=error)
            except Exception:
                log.exception("call %s: could not record why it was not placed", call.id)
            return True

    async def _claim_batch(self) -> list[ClaimedCall]:
        wait = self.limits.ready_in()
        if wait > 0:
            if wait > POLL_INTERVAL:  # every channel busy: prepare what comes next
                ready = self.preparation.ready
                for rid in await queue.waiting_requests(self.store, self.fence, ready):
                    self.preparation.prepare(rid)
            await asyncio.sleep(min(max(wait, 0.002), POLL_INTERVAL))
            return []
        # Claim what can start within about one poll interval, no more: claimed
        # calls wait in memory, and a crash would give them back anyway.
        free = self.limits.free_channels()
        batch = max(1, min(free, int(self.settings.cps * POLL_INTERVAL) + 1))
        claim = await queue.claim_fair(
            self.store,
            self.fence,
            batch,
            exclude_requests=self.backoff.held(),
            ready=self.preparation.ready,
            cap=self._cap,
        )
        for rid in claim.waiting:
            self.preparation.prepare(rid)
        for call in claim.calls:
            self.preparation.ready.move_to_end(call.request_id)
        return claim.calls

    def _cap(self, candidate: fair.Candidate) -> int:
        """How many calls one claim may take from a request: what its own
        `max_concurrent` leaves free, and about one poll interval of its `cps`."""
        info = self.requests.peek(candidate.id)
        if info is None:
            return 1_000_000
        body = info.body
        cap = 1_000_000
        if body.get("max_concurrent"):
            cap = int(body["max_concurrent"]) - candidate.live
        if body.get("cps"):
            cap = min(cap, int(float(body["cps"]) * POLL_INTERVAL) + 1)
        return cap

    async def _on_dnc(self, calls: list[ClaimedCall]) -> set[str]:
        """Ids of the claimed calls whose recipient is on the do-not-call list
        (one query per tenant for the whole batch)."""
        by_tenant: dict[str, list[ClaimedCall]] = {}
        for call in calls:
            tenant = (await self.requests.get(call.request_id)).tenant
            by_tenant.setdefault(tenant, []).append(call)
        out: set[str] = set()
        for tenant, group in by_tenant.items():
            regions = [
                region_of((await self.requests.get(c.request_id)).body, self.settings)
                for c in group
            ]
            listed = await dnc.listed(self.store, tenant, [c.to_uri for c in group], regions)
            out.update(c.id for c in group if c.to_uri in listed)
        return out

    async def _dispatch(self, call: ClaimedCall, *, on_dnc: bool = False) -> bool:
        """Start one claimed call (or end it at once: canceled, failed prompt,
        do-not-call; or queue it for its window). False when a fleet limit
        refused it: it went back to the queue, keeping its place."""
        info = await self.requests.get(call.request_id)
        if info.canceled:
            await self.writes.finish_now(call, Result.CANCELED, Outcome.CANCELED)
            return True
        if info.prompt_error:
            await self.writes.finish_now(
                call, Result.FAILED, Outcome.FAILED, error=info.prompt_error
            )
            return True
        now = now_precise()
        due = earliest_dial_time(now, info.body.get("schedule"), call.timezone)
        if due > now:
            await self.writes.requeue_later(call, due)
            return True
        if on_dnc:
            await self.writes.finish_now(call, Result.COMPLETED, Outcome.SUPPRESSED)
            return True
        while (wait := self.limits.ready_in()) > 0:
            if self._stop.is_set():
                await self.writes.give_back(call)
                return True
            await asyncio.sleep(min(max(wait, 0.002), POLL_INTERVAL))
        refusal = await limiter.acquire(
            self.store, call.id, self.node_id, self.writes.fleet_limits(info)
        )
        if refusal is not None:
            # A request's or trunk's fleet-wide limit is reached: back to the queue.
            self.backoff.hold(call.request_id, refusal.retry_in)
            await self.writes.give_back(call)
            return False
        self.limits.started()
        live = LiveCall(call)
        self.live[call.id] = live
        live.task = asyncio.create_task(self._run_call(live, info), name=f"call-{call.id}")
        return True

    def _fence(self, call: ClaimedCall) -> Fence:
        return self.writes.fence(call)

    # --- one call ------------------------------------------------------------------

    async def _run_call(self, live: LiveCall, info: RequestInfo) -> None:
        call = live.claimed
        body = info.body
        try:
            dial = route(body, call.to_uri, call.from_uri, self.settings)  # a number: its trunk
            prompt = await self.preparation.for_call(info, call)
            if prompt is None:
                return
            await self.registrations.ready(dial.trunk)  # a registering trunk's binding
            voicemail = None
            if body.get("voicemail"):
                voicemail = await self.preparation.for_call(info, call, "voicemail")
                if voicemail is None:
                    return
            started = await self.writes.start_dialing(call)
            if started is queue.Start.CANCELED:
                await self.writes.finish_now(call, Result.CANCELED, Outcome.CANCELED)
                return
            if started is queue.Start.LOST:
                log.warning("call %s: claim lost before dialing; not dialed", call.id)
                return
            job = CallJob(
                call_id=call.id,
                request_id=call.request_id,
                to=dial.request_uri,
                from_=call.from_uri,
                attempt=call.attempt,
                ring_timeout=float(body.get("ring_timeout", 30)),
                max_duration=float(body.get("max_duration", 3600)),
                sip=self._sip_options(body, dial),
                machine_detection=body.get("machine_detection"),
            )
            self.calls_placed += 1
            on_progress = self.writes.progress(call, info)
            report = await place_call(
                job,
                prompt,
                self.ctx,
                on_progress=on_progress,
                cancel=live.cancel,
                voicemail=voicemail,
                script=self._script(info, call, job, on_progress),
            )
            if live.cut and report.answered and not report.error:
                report.error = live.cut  # the playlist did not play to its end
            await self._record(call, info, report)
        except (TrunkGone, NotRoutable) as exc:
            await self.writes.finish_now(call, Result.FAILED, Outcome.FAILED, error=exc.message)
        except Exception:
            log.exception("call %s crashed", call.id)
            with contextlib.suppress(Exception):
                await self.writes.finish_now(
                    call, Result.FAILED, Outcome.FAILED, error="internal error while calling"
                )
        finally:
            self.live.pop(call.id, None)
            self.limits.finished()
            self._wake.set()

    def _sip_options(self, body: Mapping[str, Any], dial: Route | None = None) -> dict[str, Any]:
        stored = body.get("sip")
        if dial is not None and dial.trunk and not (stored or {}).get("trunk"):
            stored = {**(stored or {}), "trunk": dial.trunk}  # the default trunk of a number
        options = resolve_sip(stored, self.settings.trunks, self.sealer)
        if dial is not None and dial.headers:
            options["headers"] = {**dial.headers, **dict(options.get("headers") or {})}
        return options

    def _script(
        self, info: RequestInfo, call: ClaimedCall, job: CallJob, on_progress: ProgressFn
    ) -> Script | None:
        """A playlist with gather actions runs step by step (ringcast.dialer.flow)."""
        playlist = list(info.body["playlist"])
        if not has_actions(playlist):
            return None
        variables = {k: str(v) for k, v in (call.variables or {}).items()}

        def prepare(items: Sequence[Mapping[str, Any]]) -> Awaitable[Prompt]:
            return self.prompts.get(
                items,
                variables=variables,
                codecs=codecs_of(info.body),
                max_duration=float(info.body.get("max_duration", 3600)),
            )

        def route_agent(to: str) -> tuple[str, dict[str, Any]]:
            """A transfer target is routed as a recipient: a number through the trunk."""
            dial = route(info.body, to, job.from_, self.settings)
            return dial.request_uri, self._sip_options(info.body, dial)

        legs = AgentLegs(self.limits, self.store, self.node_id, self.writes.fleet_limits(info))
        flow = Flow(job, self.ctx, prepare, on_progress, legs, self.transfers, route_agent)
        return make_script(playlist, flow)

    async def _record(self, call: ClaimedCall, info: RequestInfo, report: CallReport) -> None:
        retry_at = None
        if report.result is not Result.CANCELED:
            policy = RetryPolicy.from_body(info.body.get("retry"))
            decision = policy.decide(report.outcome, call.attempt)
            if decision is not None:
                retry_at = now_precise() + timedelta(seconds=decision.delay)
        values = report.fields()
        kept = stored(report.recordings)
        self.recordings_made += len(kept)
        self.recording_bytes_made += sum(len(r.wav) for r in kept)
        recorded = await self.writes.write_final(
            call, info, values, retry_at=retry_at, optout=report.optout, recordings=kept
        )
        log.log(
            logging.INFO if recorded else logging.WARNING,
            "call %s to %s: %s/%s %s %s%s",
            call.id,
            call.to_uri,
            report.result,
            report.outcome,
            report.disconnect_cause_code,
            report.error or "",
            "" if recorded else " (claim lost: not recorded by this node)",
        )

    # --- node membership -------------------------------------------------------

    async def _declared_dead(self) -> None:
        """Another node declared this one dead (heartbeat lost for node_timeout)
        and took its calls back. Hang up what is still live here (its writes are
        fenced out already), then rejoin under a new epoch."""
        log.error(
            "node %s was declared dead: hanging up %d calls, rejoining",
            self.node_id,
            len(self.live),
        )
        for c in self.live.values():
            c.cancel.set()
        epoch = await queue.register_node(self.store, self.node_id)
        self.fence = Fence(self.node_id, epoch)

    async def _rescue(self, *, initial: bool) -> None:
        error = "interrupted" if self.single_node else "node lost"
        await queue.rescue_calls(
            self.store,
            me=self.node_id,
            stale_after=None if self.single_node else self.settings.node_timeout,
            error=error,
            retry_delay=_retry_failed_delay,
        )


def _retry_failed_delay(body: Mapping[str, Any], attempt: int) -> float | None:
    decision = RetryPolicy.from_body(body.get("retry")).decide(Outcome.FAILED, attempt)
    return None if decision is None else decision.delay


def dialer_lifespan(
    settings: Settings,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A hook for the API's lifespan: run a Dialer beside the HTTP server."""

    @asynccontextmanager
    async def hook(state: Any) -> AsyncIterator[None]:
        store: Store = state.store if hasattr(state, "store") else state["store"]
        # Webhooks leave through the outbox; every dialer process delivers them.
        # The deliverer starts first and stops last, so the events of calls that
        # end during the shutdown grace period still go out. On SQLite it
        # settles and claims through the dialer's group writer while that runs.
        async with deliverer_lifespan(settings)(state) as webhooks:
            dialer = Dialer(settings, store)
            await dialer.start()
            webhooks.share_writer(dialer.writer)
            with contextlib.suppress(Exception):
                state.dialer = dialer
            try:
                yield
            finally:
                await dialer.stop()

    return hook
