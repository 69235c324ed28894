"""The channel a transfer's agent leg takes (issue 17): node, trunk and request limits.

A bridged transfer places a second call; it counts like one: a channel of this
node's `max_calls` (and a CPS token), and a lease in the request's and trunk's
fleet-wide limits (:mod:`ringcast.store.limiter`), given back when the leg ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from ringcast.dialer.limits import NodeLimits
from ringcast.store import limiter
from ringcast.store.db import Store


class AgentLegs:
    """:class:`ringcast.dialer.transfer.LegLimits` for one call's agent legs."""

    def __init__(
        self, node: NodeLimits, store: Store, node_id: str, fleet: Sequence[limiter.Limit]
    ) -> None:
        self.node = node
        self.store = store
        self.node_id = node_id
        self.fleet = list(fleet)

    async def acquire(self, leg_id: str) -> str | None:
        if self.node.free_channels() <= 0:
            return "every channel of this node is busy (max_calls)"
        self.node.started()
        refusal = await limiter.acquire(self.store, leg_id, self.node_id, self.fleet)
        if refusal is not None:
            self.node.finished()
            return f"the limit {refusal.key} is reached"
        return None

    async def release(self, leg_id: str) -> None:
        self.node.finished()
        if self.fleet:
            async with self.store.session() as s, s.begin():
                await limiter.release(s, leg_id)
