"""store/fair.py: how a claim's slots are divided (pure, no database)."""

from __future__ import annotations

from ringcast.store.fair import Candidate, advanced_passes, shares


def c(rid: str, *, live: int = 0, priority: int = 5, tenant: str = "t", vtime: float = 0.0):
    return Candidate(rid, tenant, priority, live, vtime)


def test_one_call_behind_a_big_broadcast_takes_the_next_free_channel() -> None:
    big = c("big", live=4)
    small = c("small")
    assert shares([big, small], 1) == {"small": 1}


def test_equal_requests_alternate_by_their_pass() -> None:
    a, b = c("a", vtime=0.4), c("b", vtime=0.2)
    assert shares([a, b], 1) == {"b": 1}
    assert shares([a, b], 4) == {"a": 2, "b": 2}
    passes = advanced_passes([a, b], {"b": 1})
    assert passes == {"b": 0.2 + 1 / 5}
    # a request that sat out (or is new) banks no more than one round of credit
    assert advanced_passes([c("new"), c("b", vtime=50.0)], {"new": 1}) == {"new": 49.0 + 1 / 5}
    assert shares([c("new"), c("b", vtime=50.0)], 1) == {"new": 1}


def test_priority_weights_the_share() -> None:
    got = shares([c("hi", priority=8), c("lo", priority=2)], 100)
    assert got == {"hi": 80, "lo": 20}
    # live calls count against the weighted share: 8 + 6 live to 4, as near 4:1 as 10 goes
    got = shares([c("hi", priority=8, live=8), c("lo", priority=2)], 10)
    assert got == {"hi": 6, "lo": 4}


def test_tenants_share_first_then_their_requests() -> None:
    many = [c(f"a{i}", tenant="a") for i in range(9)]
    one = c("b0", tenant="b")
    got = shares([*many, one], 10)
    assert got["b0"] == 5
    assert sum(v for k, v in got.items() if k.startswith("a")) == 5


def test_caps_pass_a_request_over() -> None:
    got = shares([c("a"), c("b")], 10, cap=lambda cand: 2 if cand.id == "a" else 100)
    assert got == {"a": 2, "b": 8}
    assert shares([c("a")], 10, cap=lambda cand: 0) == {}
    assert shares([], 10) == {}
    assert shares([c("a")], 0) == {}


def test_a_small_claim_serves_fewer_requests_a_quantum_each_and_all_in_turn() -> None:
    # 50 slots among 50 requests: 10 of them, 5 calls each (not 50 places of 1)
    cands = [c(f"r{i:02}", vtime=i / 100) for i in range(50)]
    got = shares(cands, 50)
    assert got == {f"r{i:02}": 5 for i in range(10)}
    # the passes move: the next claims serve the others, until each has had 5
    total: dict[str, int] = {}
    for _ in range(5):
        got = shares(cands, 50)
        for rid, k in got.items():
            total[rid] = total.get(rid, 0) + k
        passes = advanced_passes(cands, got)
        cands = [c(x.id, vtime=passes.get(x.id, x.vtime)) for x in cands]
    assert total == {f"r{i:02}": 5 for i in range(50)}
    # two slots per request or more: one at a time, as before
    assert shares([c(f"r{i}") for i in range(4)], 8) == {f"r{i}": 2 for i in range(4)}
    # a quantum never passes a cap, and priority still weighs the turns
    assert shares([c("a"), c("b", vtime=1.0)], 3, cap=lambda cand: 2) == {"a": 2, "b": 1}
    hi_lo = [c("hi", priority=10), c("lo", priority=1)]
    served = {"hi": 0, "lo": 0}
    for _ in range(22):
        got = shares(hi_lo, 3)
        for rid, k in got.items():
            served[rid] += k
        passes = advanced_passes(hi_lo, got)
        hi_lo = [c(x.id, priority=x.priority, vtime=passes.get(x.id, x.vtime)) for x in hi_lo]
    assert served["hi"] >= 5 * served["lo"], served
