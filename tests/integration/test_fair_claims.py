"""Fair claims on real SQLite and PostgreSQL: shares across requests and
tenants, priority, pause, and plans whose cost follows what a claim takes."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import sqlalchemy as sa
from dbrows import insert_request

from ringcast.domain import utcnow
from ringcast.store import queue
from ringcast.store import requests as rq
from ringcast.store.db import Store
from ringcast.store.models import calls_table, requests_table
from ringcast.store.queue import Fence

PLAY = {"playlist": [{"pause": 1}]}


async def set_request(store: Store, rid: str, **values: object) -> None:
    async with store.session() as s, s.begin():
        await s.execute(sa.update(requests_table).where(requests_table.c.id == rid).values(values))


async def node(store: Store, name: str = "n") -> Fence:
    return Fence(name, await queue.register_node(store, name))


def by_request(claimed: list[queue.ClaimedCall]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in claimed:
        out.setdefault(c.request_id, []).append(c.seq)
    return out


async def test_one_call_behind_a_big_broadcast_is_claimed_first(store: Store) -> None:
    big, _ = await insert_request(store, 500, PLAY)
    n = await node(store)
    first = await queue.claim_calls(store, n, 4)  # every channel busy with the broadcast
    assert [c.request_id for c in first] == [big] * 4
    one, [one_call] = await insert_request(store, 1, PLAY)
    [next_call] = await queue.claim_calls(store, n, 1)  # one channel frees
    assert next_call.id == one_call


async def test_requests_alternate_and_keep_recipient_order(store: Store) -> None:
    a, _ = await insert_request(store, 100, PLAY)
    b, _ = await insert_request(store, 100, PLAY)
    n = await node(store)
    got = await queue.claim_calls(store, n, 10)
    assert by_request(got) == {a: [0, 1, 2, 3, 4], b: [0, 1, 2, 3, 4]}
    # started interleaved: the first of each, then the second of each, ...
    assert [c.seq for c in got] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # calls that end at once (no live calls to compare) still alternate, by pass
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.result == "dialing")
            .values(result="completed")
        )
    seen = []
    for _ in range(6):
        [c] = await queue.claim_calls(store, n, 1)
        seen.append(c.request_id)
        async with store.session() as s, s.begin():
            await s.execute(
                sa.update(calls_table).where(calls_table.c.id == c.id).values(result="completed")
            )
    assert seen.count(a) == 3 and seen.count(b) == 3, seen


async def test_priority_changes_the_share(store: Store) -> None:
    hi, _ = await insert_request(store, 200, PLAY)
    lo, _ = await insert_request(store, 200, PLAY)
    await set_request(store, hi, priority=8)
    await set_request(store, lo, priority=2)
    got = by_request(await queue.claim_calls(store, await node(store), 50))
    assert (len(got[hi]), len(got[lo])) == (40, 10)


async def test_tenants_share_before_their_requests(store: Store) -> None:
    small, _ = await insert_request(store, 20, PLAY)
    await set_request(store, small, tenant="acme")
    bigs = [(await insert_request(store, 1000, PLAY))[0] for _ in range(4)]
    got = by_request(await queue.claim_calls(store, await node(store), 16))
    assert len(got[small]) == 8
    assert sum(len(got.get(b, [])) for b in bigs) == 8


async def test_paused_canceled_and_failed_requests_are_not_claimed(store: Store) -> None:
    paused, _ = await insert_request(store, 3, PLAY)
    failed, _ = await insert_request(store, 3, PLAY)
    canceled, _ = await insert_request(store, 3, PLAY)
    ok, _ = await insert_request(store, 3, PLAY)
    await set_request(store, paused, paused_at=utcnow())
    await set_request(store, failed, prompt_error="HTTP 404")
    await set_request(store, canceled, canceled_at=utcnow())
    n = await node(store)
    assert set(by_request(await queue.claim_calls(store, n, 20))) == {ok}
    await set_request(store, paused, paused_at=None)
    assert set(by_request(await queue.claim_calls(store, n, 20))) == {paused}


async def test_only_ready_requests_are_claimed_the_others_are_waiting(store: Store) -> None:
    a, _ = await insert_request(store, 3, PLAY)
    b, _ = await insert_request(store, 3, PLAY)
    claim = await queue.claim_fair(store, await node(store), 10, ready={a})
    assert set(by_request(claim.calls)) == {a}
    assert claim.waiting == [b]


async def test_a_drained_request_is_swept_out_of_the_candidates(store: Store) -> None:
    rid, ids = await insert_request(store, 2, PLAY)
    n = await node(store)
    claimed = await queue.claim_calls(store, n, 2)
    assert await queue.sweep_drained(store) == 0  # live calls may still be retried
    final = {"result": "completed", "outcome": "busy", "disconnect_time": utcnow()}
    async with store.session() as s, s.begin():
        await queue.finish_call(s, claimed[0].id, n, final)
        await queue.finish_call(s, claimed[1].id, n, final, retry_at=utcnow())
    assert await queue.sweep_drained(store) == 0  # one is queued again
    [again] = await queue.claim_calls(store, n, 2, now=utcnow() + timedelta(seconds=1))
    async with store.session() as s, s.begin():
        await queue.finish_call(s, again.id, n, final)
    assert await queue.sweep_drained(store) == 1
    async with store.session(readonly=True) as s, s.begin():
        active = await s.scalar(
            sa.select(requests_table.c.active).where(requests_table.c.id == rid)
        )
    assert active is False


async def test_two_dialers_claim_fairly_and_exclusively(store: Store) -> None:
    reqs = [(await insert_request(store, 60, PLAY))[0] for _ in range(3)]
    a, b = await node(store, "a"), await node(store, "b")
    got_a, got_b = await asyncio.gather(
        queue.claim_calls(store, a, 30), queue.claim_calls(store, b, 30)
    )
    ids = [c.id for c in got_a + got_b]
    assert len(ids) == 60 and len(set(ids)) == 60
    per = by_request(got_a + got_b)
    assert sorted(len(per[r]) for r in reqs) == [20, 20, 20]
    for seqs in per.values():  # together they took each request's first 20
        assert sorted(seqs) == list(range(20))


# --- plans: a claim's cost follows what it claims ---------------------------------------

REQUESTS = 50
QUEUED = 20_000


async def _plan(store: Store, stmt: sa.Select) -> str:
    compiled = stmt.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True})
    async with store.session() as s, s.begin():
        await queue.prefer_claim_order(s)
        if store.dialect == "sqlite":
            rows = await s.execute(sa.text("EXPLAIN QUERY PLAN " + str(compiled)))
            return "\n".join(str(r[-1]) for r in rows)
        rows = await s.execute(sa.text("EXPLAIN (ANALYZE, COSTS OFF) " + str(compiled)))
        return "\n".join(str(r[0]) for r in rows)


def _no_full_reads(plan: str, store: Store) -> None:
    if store.dialect == "sqlite":
        assert not re.search(r"SCAN (calls|due|live)\b", plan), plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert "Seq Scan on calls" not in plan and "Sort" not in plan, plan
        assert "Bitmap" not in plan, plan
        # every index scan of calls returns at most what the claim takes per request
        for line in plan.splitlines():
            if " on calls" in line and "Scan" in line:
                rows = re.search(r"rows=(\d+)", line)
                assert rows is not None and int(rows.group(1)) <= 3, line


async def test_a_claim_reads_only_what_it_takes_among_50_requests_of_20000(store: Store) -> None:
    rids = []
    for r in range(REQUESTS):
        calls = [rq.NewCall(f"sip:u{i}@127.0.0.1:5", "me") for i in range(QUEUED)]
        accepted = await rq.create_request(store, body=PLAY, calls=calls, body_hash=f"h{r}")
        rids.append(accepted.request_id)
    n = await node(store)
    now = utcnow() + timedelta(seconds=1)
    split = {rid: 3 for rid in rids}
    pick = _plan(store, queue.due_calls(store, n, split, now=now))
    plan = await pick
    assert "ix_calls_claim_order" in plan, plan
    _no_full_reads(plan, store)
    plan = await _plan(store, queue.candidates_query(store, n, now=now))
    assert "ix_calls_claim_order" in plan, plan
    assert "ix_requests_active" in plan or store.dialect == "postgresql", plan
    _no_full_reads(plan, store)
    got = by_request(await queue.claim_calls(store, n, 3 * REQUESTS, now=now))
    assert got == {rid: [0, 1, 2] for rid in rids}
    got = by_request(await queue.claim_calls(store, n, 2 * REQUESTS, now=now))
    assert got == {rid: [3, 4] for rid in rids}


async def test_small_claims_serve_a_quantum_per_request_and_every_request_in_turn(
    store: Store,
) -> None:
    rids = [(await insert_request(store, 20, PLAY))[0] for _ in range(10)]
    n = await node(store)
    per_claim = []
    got: dict[str, list[int]] = {}
    for _ in range(10):  # 5 slots among 10 requests: one request, 5 calls, per claim
        claimed = by_request(await queue.claim_calls(store, n, 5))
        per_claim.append(len(claimed))
        for rid, seqs in claimed.items():
            got.setdefault(rid, []).extend(seqs)
    assert per_claim == [1] * 10
    assert got == {rid: [0, 1, 2, 3, 4] for rid in rids}  # each in turn, in recipient order


async def test_a_request_short_of_its_quantum_leaves_the_rest_to_the_others(
    store: Store,
) -> None:
    short, _ = await insert_request(store, 2, PLAY)
    others = [(await insert_request(store, 20, PLAY))[0] for _ in range(2)]
    await set_request(store, others[0], vtime=0.1)
    await set_request(store, others[1], vtime=0.2)
    # 5 slots among 3 requests: a quantum of 5 for the lowest pass, which has 2
    got = by_request(await queue.claim_calls(store, await node(store), 5))
    assert got == {short: [0, 1], others[0]: [0, 1, 2]}
