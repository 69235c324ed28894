"""The dialer's side of the store, in one place: claim queued calls
(store/claims.py), record their progress and end (store/progress.py), and keep
the nodes that own them (store/nodes.py).

Every write after a claim is fenced by `(node_id, claim_epoch)`
(store/fence.py): a node that lost its claim (declared dead, calls rescued)
updates nothing.
"""

from __future__ import annotations

from ringcast.store.claims import (
    Claim,
    candidates_query,
    claim_calls,
    claim_fair,
    due_calls,
    prefer_claim_order,
    sweep_drained,
    waiting_requests,
)
from ringcast.store.fence import ClaimedCall, Fence
from ringcast.store.nodes import heartbeat, register_node, rescue_calls, unregister_node
from ringcast.store.progress import (
    CallUpdate,
    DialStart,
    RequestInfo,
    Start,
    canceled_among,
    fail_request,
    finish_call,
    load_requests,
    requeue,
    requeue_later,
    start_dialing,
    start_dialing_many,
    update_call,
    update_calls,
)

__all__ = [
    "CallUpdate",
    "Claim",
    "ClaimedCall",
    "DialStart",
    "Fence",
    "RequestInfo",
    "Start",
    "candidates_query",
    "canceled_among",
    "claim_calls",
    "claim_fair",
    "due_calls",
    "fail_request",
    "finish_call",
    "heartbeat",
    "load_requests",
    "prefer_claim_order",
    "register_node",
    "requeue",
    "requeue_later",
    "rescue_calls",
    "start_dialing",
    "start_dialing_many",
    "sweep_drained",
    "unregister_node",
    "update_call",
    "update_calls",
    "waiting_requests",
]
