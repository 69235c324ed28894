"""How a call's state reaches the store: progress, its final record, its return to the queue.

Every write goes through the group writer (dialer/writer.py) and is fenced by
the node and epoch that claimed the call (store/queue.py `Fence`). A final
write is one transaction: fleet leases given back, the record's fields (or
the next attempt queued), recordings, webhooks, do-not-call opt-out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ringcast import sealing
from ringcast.config import Settings
from ringcast.dialer.report import GATHER_FIELD
from ringcast.dialer.requests_cache import RequestCache
from ringcast.dialer.writer import GroupWriter
from ringcast.domain import Outcome, Result, utcnow
from ringcast.store import dnc, limiter, queue
from ringcast.store import outbox as webhooks
from ringcast.store import recordings as store_recordings
from ringcast.store.queue import ClaimedCall, Fence, RequestInfo


class CallWrites:
    """The writes of the calls this node claimed (node `node_id`)."""

    def __init__(
        self, settings: Settings, writer: GroupWriter, requests: RequestCache, node_id: str
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.requests = requests
        self.node_id = node_id

    def fence(self, call: ClaimedCall) -> Fence:
        """The fence of `call`'s writes: this node and the epoch it was claimed
        under. A node declared dead rejoins under a new epoch; what it still
        does for calls claimed before (their tasks are being hung up) must not
        pass the fence of a call it claims again under the new one."""
        return Fence(self.node_id, call.epoch)

    def fleet_limits(self, info: RequestInfo) -> list[limiter.Limit]:
        """The limits this call shares with the whole fleet: its request's own
        `max_concurrent` / `cps`, and its trunk's `max_calls` / `cps`."""
        out = []
        body = info.body
        if body.get("max_concurrent") or body.get("cps"):
            out.append(
                limiter.Limit(
                    f"request:{info.id}",
                    capacity=body.get("max_concurrent"),
                    rate=body.get("cps"),
                )
            )
        trunk_name = (body.get("sip") or {}).get("trunk")
        trunk = self.settings.trunks.get(trunk_name, {}) if trunk_name else {}
        if trunk.get("max_calls") or trunk.get("cps"):
            out.append(
                limiter.Limit(
                    f"trunk:{trunk_name}", capacity=trunk.get("max_calls"), rate=trunk.get("cps")
                )
            )
        return out

    async def give_back(self, call: ClaimedCall) -> None:
        """Back to the queue, unchanged: it keeps its place in recipient order."""
        fence = self.fence(call)
        await self.writer.submit(lambda s: queue.requeue(s, call.id, fence))

    async def requeue_later(self, call: ClaimedCall, due: datetime) -> None:
        """Back to the queue until `due` (its calling window opens)."""
        fence = self.fence(call)
        await self.writer.submit(lambda s: queue.requeue_later(s, call.id, fence, due))

    async def start_dialing(self, call: ClaimedCall) -> queue.Start:
        return await self.writer.start_dialing(call.id, self.fence(call), utcnow())

    async def finish_now(
        self, call: ClaimedCall, result: Result, outcome: Outcome, *, error: str | None = None
    ) -> None:
        """End a call that was not (or no longer) dialed."""
        values: dict[str, Any] = {
            "result": str(result),
            "outcome": str(outcome),
            "disconnect_time": utcnow(),
        }
        if error:
            values["error"] = error
        await self.write_final(call, await self.requests.get(call.request_id), values)

    async def write_final(
        self,
        call: ClaimedCall,
        info: RequestInfo,
        values: dict[str, Any],
        *,
        retry_at: datetime | None = None,
        optout: bool = False,
        recordings: list[store_recordings.NewRecording] | None = None,
    ) -> bool:
        """End the attempt in one group-committed transaction: give back its fleet
        leases, write its final fields (or queue its retry) and its recordings (with
        the request's tenant), emit its webhooks (call.recorded before the final
        one), and put a callee who opted out on the do-not-call list."""
        leased = bool(self.fleet_limits(info))
        hooked = bool(info.body.get("callback_url"))
        sealed = sealing.SEALED in (info.body.get("sip") or {})
        if recordings:
            values = {**values, "recordings": store_recordings.record_list_json(recordings)}
        fence = self.fence(call)
        if not (leased or optout or retry_at or sealed or recordings):
            # the common case: one typed update (and its final event), grouped with others
            event = webhooks.CallEvent(call.id) if hooked else None
            return await self.writer.update_call(call.id, fence, values, event=event)

        async def write(s: Any) -> bool:
            if leased:
                await limiter.release(s, call.id)
            ok = await queue.finish_call(s, call.id, fence, values, retry_at=retry_at)
            if ok and recordings:
                await store_recordings.add(
                    s, tenant=info.tenant, call_id=call.id, attempt=call.attempt, items=recordings
                )
                if hooked:
                    await webhooks.notify_call(s, call.id, webhooks.CALL_RECORDED)
            if ok and hooked:
                await webhooks.notify_call(s, call.id)  # final event, then request.completed
            if ok and optout:
                await dnc.add(s, info.tenant, [call.to_uri])
            if ok and sealed and retry_at is None:
                await sealing.erase_if_final(s, call.request_id)  # the last call: erase it
            return ok

        return bool(await self.writer.submit(write))

    def progress(
        self, call: ClaimedCall, info: RequestInfo
    ) -> Callable[[Result, dict[str, Any]], Any]:
        """The call's `on_progress`: ringing, answered, machine detection, digits,
        transfer, each written (with its webhook when the request has a callback)."""
        hooked = bool(info.body.get("callback_url"))
        fence = self.fence(call)

        async def on_progress(result: Result, fields: dict[str, Any]) -> None:
            occurrence = int(fields.get(GATHER_FIELD, 1))
            values = {"result": result.value, **fields}
            values.pop(GATHER_FIELD, None)
            event = None
            if hooked:
                # call.ringing / call.answered, or call.machine_detected with its fields
                kind = None
                if "answered_by" in fields:
                    kind = webhooks.CALL_MACHINE_DETECTED
                elif "transfer" in fields:
                    kind = webhooks.CALL_TRANSFERRED
                elif "dtmf" in fields:
                    kind = webhooks.CALL_DIGITS
                event = webhooks.CallEvent(call.id, kind, occurrence)
            await self.writer.update_call(call.id, fence, values, event=event)

        return on_progress
