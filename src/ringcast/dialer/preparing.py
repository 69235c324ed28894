"""Prompts prepared before calls are claimed, and each call's own prompt.

A request's shared prompt (URLs, fixed text) is prepared in its own task, at
most PROMPT_WORKERS at once per node; its calls are claimable here once it is
ready, so a slow URL or a long text holds up no other request. A prompt that
cannot be prepared fails every call of its request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ringcast import sealing
from ringcast.dialer.requests_cache import REQUEST_CACHE_SIZE, RequestCache
from ringcast.dialer.writes import CallWrites
from ringcast.domain import Outcome, Result
from ringcast.errors import MediaError
from ringcast.media.prompt import Prompt, PromptCache, referenced_variables
from ringcast.store import outbox as webhooks
from ringcast.store import queue
from ringcast.store.db import DB_ERRORS, Store
from ringcast.store.queue import ClaimedCall, RequestInfo

log = logging.getLogger(__name__)

PROMPT_WORKERS = 4  # prompts prepared at once on one node


def codecs_of(body: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple((body.get("sip") or {}).get("codecs") or ("PCMU", "PCMA"))


class PromptPreparation:
    """The requests whose prompt is ready on this node, and those being prepared."""

    def __init__(
        self,
        store: Store,
        prompts: PromptCache,
        requests: RequestCache,
        writes: CallWrites,
        on_ready: Callable[[], None],
    ) -> None:
        self.store = store
        self.prompts = prompts
        self.requests = requests
        self.writes = writes
        self.on_ready = on_ready  # a request became claimable
        # requests whose prompt is prepared on this node (claimable), in claim order
        self.ready: OrderedDict[str, None] = OrderedDict()
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(PROMPT_WORKERS)
        self._stopped = False

    def prepare(self, request_id: str) -> None:
        """Prepare the prompt of a request with due calls in its own task."""
        if request_id in self._preparing or request_id in self.ready or self._stopped:
            return
        task = asyncio.create_task(self._prepare_one(request_id), name=f"prompt-{request_id}")
        self._preparing[request_id] = task
        task.add_done_callback(lambda _t: self._preparing.pop(request_id, None))

    def stop(self) -> list[asyncio.Task[None]]:
        """Prepare nothing more; cancel what is under way and return those tasks."""
        self._stopped = True
        tasks = list(self._preparing.values())
        for t in tasks:
            t.cancel()
        return tasks

    async def _prepare_one(self, request_id: str) -> None:
        try:
            async with self._slots:
                info = await self.requests.get(request_id)
                body = info.body
                playlist = list(body["playlist"])
                # `say` items with per-recipient {variables} are spoken per call; all
                # the rest (URLs above all) is shared, and prepared now.
                shared = [i for i in playlist if not referenced_variables([i])]
                try:
                    if shared:
                        await self.prompts.get(
                            shared,
                            codecs=codecs_of(body),
                            max_duration=float(body.get("max_duration", 3600)),
                        )
                except MediaError as exc:
                    await self.fail_request(info, f"prompt could not be prepared: {exc.message}")
                    return
            self.ready[request_id] = None
            while len(self.ready) > REQUEST_CACHE_SIZE:
                self.ready.popitem(last=False)
            self.on_ready()
        except asyncio.CancelledError:
            raise
        except DB_ERRORS as exc:
            log.warning("request %s: prompt not prepared (database: %s)", request_id, exc)
        except Exception:
            log.exception("request %s: prompt preparation crashed", request_id)

    async def fail_request(self, info: RequestInfo, error: str) -> None:
        """No one of this request is called: every call not yet final fails with `error`."""
        n = await queue.fail_request(self.store, info.id, error)
        async with self.store.session() as s, s.begin():
            await sealing.erase_if_final(s, info.id)  # final: no password kept
        if info.body.get("callback_url"):
            async with self.store.session() as s, s.begin():
                await webhooks.notify_request_completed(s, info.id)
        self.requests.mark_failed(info, error)
        log.warning("request %s: %s (%d calls failed)", info.id, error, n)

    async def for_call(
        self, info: RequestInfo, call: ClaimedCall, key: str = "playlist"
    ) -> Prompt | None:
        """The call's prompt (`key`: its playlist, or its voicemail), built once per
        request (and per `say` variant) by the process-wide PromptCache, before any
        INVITE: in the call's own task, so a per-recipient text holds up only its own
        call. None when it cannot be prepared: the call is recorded as failed."""
        body = info.body
        playlist = list(body[key])
        try:
            return await self.prompts.get(
                playlist,
                variables={k: str(v) for k, v in (call.variables or {}).items()},
                codecs=codecs_of(body),
                max_duration=float(body.get("max_duration", 3600)),
            )
        except MediaError as exc:
            error = f"prompt could not be prepared: {exc.message}"
            await self.writes.finish_now(call, Result.FAILED, Outcome.FAILED, error=error)
            if not referenced_variables(playlist):
                # The same prompt for everyone: no one of this request is called.
                await self.fail_request(info, error)
            return None
