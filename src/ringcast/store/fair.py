"""Fair shares of a claim: round-robin across tenants, then across requests,
weighted by each request's `priority`.

A claim of `slots` calls is divided by water-filling: the next slot goes to
the tenant with the fewest live calls (counting the slots already given in
this claim), and inside it to the request with the fewest live calls per unit
of weight (`priority`, 1..10). Ties go to the request that was served least
lately: its stride-scheduling pass `vtime`, advanced by `k / priority` for
every `k` calls it is given, so equal requests alternate even when calls end
at once (no live calls to compare). A new request, or one that had nothing
due for a while, has a low pass, but banks no credit: a pass is read as at
least the highest pass among the candidates less MAX_LAG (one round).

A claim with fewer than two slots per candidate serves fewer requests a
quantum each (up to QUANTUM calls, at most one round of pass), in the same
order: see `shares`.

Live calls and passes are in the database, so every dialer of a fleet divides
its claims the same way. This module is pure: `shares` takes the candidates
and answers the split.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

PRIORITY_MIN = 1
PRIORITY_MAX = 10
PRIORITY_DEFAULT = 5
MAX_LAG = 1.0  # pass units a request may be behind the most served one (5 calls at 5)
QUANTUM = 5  # calls a request is served at once by a claim too small to serve all twice


@dataclass(frozen=True, slots=True)
class Candidate:
    """A request with due queued calls that this node may claim from."""

    id: str
    tenant: str
    priority: int
    live: int  # its calls dialing, ringing or in progress, on every node
    vtime: float  # its stride pass


def _floor(candidates: Sequence[Candidate]) -> float:
    return max(c.vtime for c in candidates) - MAX_LAG


def weight(priority: int) -> int:
    return min(PRIORITY_MAX, max(PRIORITY_MIN, int(priority)))


def shares(
    candidates: Sequence[Candidate],
    slots: int,
    cap: Callable[[Candidate], int] | None = None,
    quantum: int = QUANTUM,
) -> dict[str, int]:
    """How many of `slots` calls to claim from each candidate (only those > 0).

    `cap(candidate)` bounds what one request may take (its own `max_concurrent`
    less its live calls, say); a request at its cap is passed over.

    A claim with at least two slots per candidate gives them out one at a
    time. A smaller one serves the requests it picks a quantum at a time
    (deficit round-robin): up to `quantum` calls, and no more than one round
    of the request's pass (MAX_LAG: 5 calls at priority 5, 1 at priority 1).
    It then reads and writes the queues of fewer requests, a few adjacent
    rows each, where one call from each of many requests touched as many
    places in the database as it took calls (bench/RESULTS.md). Over
    successive claims the shares are the same: a request's pass advances by
    what it got, so the next claims serve the others first.
    """
    if slots <= 0 or not candidates:
        return {}
    floor = _floor(candidates)
    caps = {c.id: (slots if cap is None else max(0, min(slots, cap(c)))) for c in candidates}
    eligible = sum(1 for k in caps.values() if k > 0)
    step = 1 if slots >= 2 * eligible else max(1, quantum)
    given: dict[str, int] = {}
    # per tenant: a heap of (live per weight, pass, id); tenants: (live, best pass, name)
    by_tenant: dict[str, list[tuple[float, float, str]]] = {}
    info: dict[str, Candidate] = {}
    for c in candidates:
        if caps[c.id] <= 0:
            continue
        info[c.id] = c
        w = weight(c.priority)
        by_tenant.setdefault(c.tenant, []).append((c.live / w, max(c.vtime, floor), c.id))
    tenant_live: dict[str, int] = {}
    for c in info.values():
        tenant_live[c.tenant] = tenant_live.get(c.tenant, 0) + c.live
    tenants: list[tuple[int, float, str]] = []
    for name, heap in by_tenant.items():
        heapq.heapify(heap)
        tenants.append((tenant_live[name], heap[0][1], name))
    heapq.heapify(tenants)
    left = slots
    while left > 0 and tenants:
        load, _pass, name = heapq.heappop(tenants)
        heap = by_tenant[name]
        _share, vtime, rid = heapq.heappop(heap)
        c = info[rid]
        w = weight(c.priority)
        # at most one round's pass at once (MAX_LAG): the floor would take more
        # from a request served in larger chunks than its weight's
        k = min(step, int(MAX_LAG * w) or 1, left, caps[rid] - given.get(rid, 0))
        n = given.get(rid, 0) + k
        given[rid] = n
        left -= k
        if n < caps[rid]:
            heapq.heappush(heap, ((c.live + n) / w, vtime + k / w, rid))
        if heap:
            heapq.heappush(tenants, (load + k, heap[0][1], name))
    return given


def advanced_passes(
    candidates: Sequence[Candidate], claimed: Mapping[str, int]
) -> dict[str, float]:
    """The new pass of each request that was given calls: its pass (at least the
    highest of the candidates' less MAX_LAG) plus `k / priority` for its `k` calls."""
    if not candidates:
        return {}
    floor = _floor(candidates)
    out = {}
    for c in candidates:
        k = claimed.get(c.id, 0)
        if k:
            out[c.id] = max(c.vtime, floor) + k / weight(c.priority)
    return out
