"""The request bodies and states a dialer keeps in memory (a bounded LRU).

Bodies are immutable once accepted; cancellation is refreshed by the watcher
(dialer/watch.py) and re-checked in the store before each INVITE.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from ringcast.store import queue
from ringcast.store.db import Store
from ringcast.store.queue import RequestInfo

REQUEST_CACHE_SIZE = 4096  # requests whose bodies the dialer keeps in memory


class RequestCache:
    """`RequestInfo` by request id, loaded from the store on a miss."""

    def __init__(self, store: Store, size: int = REQUEST_CACHE_SIZE) -> None:
        self.store = store
        self.size = size
        self._infos: OrderedDict[str, RequestInfo] = OrderedDict()

    async def get(self, request_id: str) -> RequestInfo:
        info = self._infos.get(request_id)
        if info is None:
            info = (await queue.load_requests(self.store, [request_id]))[request_id]
            self._infos[request_id] = info
            while len(self._infos) > self.size:
                self._infos.popitem(last=False)
        else:
            self._infos.move_to_end(request_id)
        return info

    def peek(self, request_id: str) -> RequestInfo | None:
        """The cached info, without loading it or changing the LRU order."""
        return self._infos.get(request_id)

    def mark_canceled(self, request_id: str) -> None:
        info = self._infos.get(request_id)
        if info is not None:
            self._infos[request_id] = dataclasses.replace(info, canceled=True)

    def mark_failed(self, info: RequestInfo, error: str) -> None:
        """The request's prompt could not be prepared: its later calls fail at once."""
        self._infos[info.id] = dataclasses.replace(info, prompt_error=error)
