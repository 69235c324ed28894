"""The dialer's store operations on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa
from dbrows import insert_request

from ringcast.domain import Result, utcnow
from ringcast.store import dnc, queue
from ringcast.store.db import Store
from ringcast.store.models import call_attempts_table, calls_table, nodes_table, requests_table
from ringcast.store.queue import Fence


async def add_request(store: Store, n: int, body: dict | None = None) -> tuple[str, list[str]]:
    return await insert_request(store, n, body or {"playlist": [{"pause": 1}]})


async def row(store: Store, cid: str) -> sa.Row:
    async with store.session(readonly=True) as s, s.begin():
        return (await s.execute(sa.select(calls_table).where(calls_table.c.id == cid))).one()


async def test_claim_is_exclusive_between_nodes(store: Store) -> None:
    _, ids = await add_request(store, 40)
    a = Fence("node-a", await queue.register_node(store, "node-a"))
    b = Fence("node-b", await queue.register_node(store, "node-b"))
    got_a, got_b = await asyncio.gather(
        queue.claim_calls(store, a, 25), queue.claim_calls(store, b, 25)
    )
    claimed = [c.id for c in got_a] + [c.id for c in got_b]
    assert len(claimed) == 40
    assert len(set(claimed)) == 40
    assert await queue.claim_calls(store, a, 10) == []
    r = await row(store, got_a[0].id)
    assert r.result == "dialing" and r.node_id == "node-a" and r.claim_epoch == a.epoch


async def test_claim_respects_not_before_and_excluded_requests(store: Store) -> None:
    rid, ids = await add_request(store, 3)
    other, _ = await add_request(store, 2)
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.id == ids[0])
            .values(not_before=utcnow() + timedelta(hours=1))
        )
    node = Fence("n", await queue.register_node(store, "n"))
    got = await queue.claim_calls(store, node, 10, exclude_requests=[other])
    assert sorted(c.id for c in got) == sorted(ids[1:])


async def test_fenced_writes_and_retry_keeps_attempts(store: Store) -> None:
    _, ids = await add_request(store, 1)
    node = Fence("n", await queue.register_node(store, "n"))
    [call] = await queue.claim_calls(store, node, 1)
    stale = Fence("n", node.epoch - 1)
    async with store.session() as s, s.begin():
        assert not await queue.update_call(s, call.id, stale, {"result": "ringing"})
        assert await queue.update_call(s, call.id, node, {"result": "ringing"})
    final = {
        "result": "completed",
        "outcome": "busy",
        "disconnect_cause_code": "486",
        "disconnect_cause_text": "Busy Here",
        "disconnect_time": utcnow(),
    }
    retry_at = utcnow() + timedelta(seconds=60)
    async with store.session() as s, s.begin():
        assert await queue.finish_call(s, call.id, node, final, retry_at=retry_at)
    r = await row(store, call.id)
    assert (r.result, r.attempt, r.outcome, r.disconnect_cause_code) == ("queued", 2, None, None)
    assert r.not_before >= retry_at - timedelta(seconds=1)
    async with store.session(readonly=True) as s, s.begin():
        kept = (await s.execute(sa.select(call_attempts_table))).all()
    assert len(kept) == 1 and kept[0].attempt == 1
    assert kept[0].record["disconnect_cause_code"] == "486"
    assert kept[0].record["outcome"] == "busy"


async def test_rescue_after_crash_requeues_undialed_and_fails_dialed(store: Store) -> None:
    _, ids = await add_request(
        store,
        3,
        {"playlist": [{"pause": 1}], "retry": {"attempts": 1, "on": ["failed"], "delay": 0}},
    )
    _, ids2 = await add_request(store, 1)
    dead = Fence("dead", await queue.register_node(store, "dead"))
    claimed = await queue.claim_calls(store, dead, 10)
    assert len(claimed) == 4
    by_id = {c.id: c for c in claimed}
    async with store.session() as s, s.begin():
        # two calls were dialed (setup_time written before the INVITE), one of each request
        for cid in (ids[0], ids2[0]):
            await queue.update_call(s, by_id[cid].id, dead, {"setup_time": utcnow()})
    me = "alive"
    await queue.register_node(store, me)

    def retry_delay(body: dict, attempt: int) -> float | None:
        r = body.get("retry") or {}
        return 0.0 if "failed" in r.get("on", []) and attempt <= r.get("attempts", 0) else None

    requeued, failed = await queue.rescue_calls(
        store, me=me, stale_after=None, error="interrupted", retry_delay=retry_delay
    )
    assert (requeued, failed) == (2, 2)
    assert (await row(store, ids[1])).result == Result.QUEUED.value
    lost = await row(store, ids2[0])
    assert (lost.result, lost.error, lost.outcome) == ("failed", "interrupted", "failed")
    retried = await row(store, ids[0])  # its request retries on failed
    assert (retried.result, retried.attempt) == ("queued", 2)


async def test_prompt_failure_fails_every_call_of_the_request(store: Store) -> None:
    rid, ids = await add_request(store, 5)
    n = await queue.fail_request(store, rid, "prompt could not be prepared: HTTP 404")
    assert n == 5
    for cid in ids:
        r = await row(store, cid)
        assert r.result == "failed" and r.error.endswith("HTTP 404")


async def test_dnc_entries_are_numbers_or_users_not_uris(store: Store) -> None:
    assert await dnc.add_entries(store, "default", ["alice", "alice"]) == 1
    assert await dnc.add_entries(store, "default", ["alice", "sip:bob@x"]) == 1  # idempotent
    assert await dnc.matches(store, "default", "sip:alice@127.0.0.1:5060")
    assert not await dnc.matches(store, "other", "sip:alice@127.0.0.1:5060")
    # bob is a user, wherever he is reached
    assert await dnc.matches(store, "default", "sip:bob@127.0.0.1:5060")
    assert await dnc.matches(store, "default", "sip:bob@x")
    assert not await dnc.matches(store, "default", "sip:bobby@x")
    assert [e for e, _ in await dnc.list_entries(store, "default", after=None, limit=10)] == [
        "alice",
        "bob",
    ]
    assert await dnc.remove_entry(store, "default", "sip:alice@elsewhere:5070")
    assert not await dnc.remove_entry(store, "default", "alice")


async def test_dnc_one_number_however_it_is_written(store: Store) -> None:
    assert await dnc.add_entries(store, "t", ["sip:+1 (555) 010-0001@gw:5070"]) == 1
    assert await dnc.add_entries(store, "t", ["tel:+15550100001", "+15550100001"]) == 0
    assert [e for e, _ in await dnc.list_entries(store, "t", after=None, limit=10)] == [
        "+15550100001"
    ]
    assert await dnc.matches(store, "t", "sip:+15550100001@127.0.0.1:5070;user=phone")
    assert await dnc.matches(store, "t", "sip:+1-555-010-0001@carrier.example")
    assert not await dnc.matches(store, "t", "sip:+15550100002@127.0.0.1")


async def test_dnc_recipients_given_as_numbers(store: Store) -> None:
    """E.164 and tel: recipients meet their entry; a national one does in its country."""
    await dnc.add_entries(store, "t", ["+12015550123", "+15550100001"])
    tos = ["+1 555 010 0001", "tel:+1-201-555-0123", "(201) 555-0123", "+15550100002"]
    assert await dnc.listed(store, "t", tos) == set(tos[:2])  # no country: digits only
    assert await dnc.listed(store, "t", tos, ["US", None, "US", "US"]) == set(tos[:3])
    assert await dnc.listed(store, "t", ["(201) 555-0123"], ["GB"]) == set()


async def test_dnc_install_wide_list_suppresses_every_tenant(store: Store) -> None:
    await dnc.add_entries(store, dnc.INSTALL_WIDE, ["+15550100009"])
    await dnc.add_entries(store, "acme", ["carol"])
    uris = ["sip:+15550100009@127.0.0.1", "sip:carol@127.0.0.1", "sip:dave@127.0.0.1"]
    assert await dnc.listed(store, "acme", uris) == set(uris[:2])
    assert await dnc.listed(store, "other", uris) == {uris[0]}
    assert [e for e, _ in await dnc.list_entries(store, "acme", after=None, limit=10)] == ["carol"]


async def test_a_node_declared_dead_claims_nothing_until_it_rejoins(store: Store) -> None:
    await add_request(store, 3)
    old = Fence("n", await queue.register_node(store, "n"))
    await queue.register_node(store, "rescuer")
    async with store.session() as s, s.begin():  # n missed its heartbeats: declared dead
        await s.execute(sa.delete(nodes_table).where(nodes_table.c.id == "n"))
    assert await queue.claim_calls(store, old, 10) == []
    assert not await queue.heartbeat(store, "n")
    new = Fence("n", await queue.register_node(store, "n"))
    assert new.epoch > old.epoch
    assert len(await queue.claim_calls(store, new, 10)) == 3


async def test_a_rejoined_dialer_fences_its_old_claims_out_of_a_new_one(store: Store) -> None:
    """A dialer declared dead rejoins under a new epoch and claims the same call
    again (it had been given back to the queue). What its old task still does for
    that call is fenced by the old epoch, so only the new claim's writes take."""
    from ringcast.config import Settings
    from ringcast.dialer.service import Dialer

    _, [cid] = await add_request(store, 1)
    dialer = Dialer(Settings.from_sources({"db": store.url}, env={}), store, node_id="n")
    dialer.fence = Fence("n", await queue.register_node(store, "n"))
    [old] = await queue.claim_calls(store, dialer.fence, 1)
    async with store.session() as s, s.begin():  # declared dead; its undialed call requeued
        await s.execute(sa.delete(nodes_table).where(nodes_table.c.id == "n"))
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.id == cid)
            .values(result="queued", node_id=None)
        )
    dialer.fence = Fence("n", await queue.register_node(store, "n"))
    [new] = await queue.claim_calls(store, dialer.fence, 1)
    assert new.id == old.id == cid and new.epoch > old.epoch
    async with store.session() as s, s.begin():
        assert await queue.start_dialing(s, cid, dialer._fence(old), utcnow()) is queue.Start.LOST
        assert not await queue.update_call(s, cid, dialer._fence(old), {"result": "ringing"})
        assert await queue.start_dialing(s, cid, dialer._fence(new), utcnow()) is queue.Start.DIAL
    assert (await row(store, cid)).claim_epoch == new.epoch


async def test_start_dialing_refuses_canceled_requests_and_lost_claims(store: Store) -> None:
    rid, _ = await add_request(store, 2)
    node = Fence("n", await queue.register_node(store, "n"))
    first, second = await queue.claim_calls(store, node, 2)
    async with store.session() as s, s.begin():
        assert await queue.start_dialing(s, first.id, node, utcnow()) is queue.Start.DIAL
        await s.execute(
            sa.update(requests_table).where(requests_table.c.id == rid).values(canceled_at=utcnow())
        )
    async with store.session() as s, s.begin():
        assert await queue.start_dialing(s, second.id, node, utcnow()) is queue.Start.CANCELED
        other = Fence("other", node.epoch + 7)
        assert await queue.start_dialing(s, second.id, other, utcnow()) is queue.Start.LOST
    assert (await row(store, first.id)).setup_time is not None
    assert (await row(store, second.id)).setup_time is None


async def test_bulk_writes_answer_each_call_in_order(store: Store) -> None:
    """One executemany per shape, yet every call gets its own answer: a stale
    fence or a final call in the middle of a batch fails only itself."""
    rid, _ = await add_request(store, 3)
    other_rid, _ = await add_request(store, 1)
    node = Fence("n", await queue.register_node(store, "n"))
    claimed = await queue.claim_calls(store, node, 4)
    a, b, c = (x for x in claimed if x.request_id == rid)
    [d] = (x for x in claimed if x.request_id == other_rid)
    stale = Fence("n", node.epoch - 1)
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(requests_table)
            .where(requests_table.c.id == other_rid)
            .values(canceled_at=utcnow())
        )
        starts = await queue.start_dialing_many(
            s,
            [
                queue.DialStart(a.id, node, utcnow()),
                queue.DialStart(b.id, stale, utcnow()),
                queue.DialStart(d.id, node, utcnow()),  # its request was canceled
                queue.DialStart(c.id, node, utcnow()),
            ],
        )
    assert starts == [queue.Start.DIAL, queue.Start.LOST, queue.Start.CANCELED, queue.Start.DIAL]
    async with store.session() as s, s.begin():
        assert await queue.update_call(s, c.id, node, {"result": "completed", "outcome": "busy"})
        done = await queue.update_calls(
            s,
            [
                queue.CallUpdate(a.id, node, {"result": "ringing"}),
                queue.CallUpdate(b.id, stale, {"result": "ringing"}),
                queue.CallUpdate(c.id, node, {"result": "ringing"}),  # already final
                queue.CallUpdate(d.id, node, {"result": "in-progress", "connect_time": utcnow()}),
            ],
        )
    assert done == [True, False, False, True]
    assert (await row(store, a.id)).result == "ringing"
    assert (await row(store, b.id)).result == "dialing"
    assert (await row(store, c.id)).result == "completed"
    assert (await row(store, d.id)).connect_time is not None
    assert (await row(store, b.id)).setup_time is None


async def test_bulk_update_refuses_unknown_columns(store: Store) -> None:
    await add_request(store, 1)
    node = Fence("n", await queue.register_node(store, "n"))
    [a] = await queue.claim_calls(store, node, 1)
    async with store.session() as s, s.begin():
        with pytest.raises(ValueError, match="no_such"):
            await queue.update_calls(s, [queue.CallUpdate(a.id, node, {"no_such": 1})])


async def test_fleet_times_come_from_postgresqls_clock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two dialers whose clocks disagree by an hour: heartbeats, the rescue's
    staleness test and the fleet token buckets all use PostgreSQL's now(), so
    the fast-clocked node is neither declared dead by the other nor kept alive
    after it stops, and a bucket refills by the database's time."""
    from datetime import datetime

    from ringcast.store import claims, limiter, progress
    from ringcast.store import db as store_db
    from ringcast.store.db import open_store

    class FastClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) + timedelta(hours=1)

    store = open_store(pg_url)
    await store.migrate()
    try:
        _, ids = await add_request(store, 2)
        monkeypatch.setattr(store_db, "datetime", FastClock)  # used on SQLite only
        for part in (claims, progress):  # where the dialer's side reads the clock
            monkeypatch.setattr(part, "now_precise", lambda: FastClock.now(UTC))
        monkeypatch.setattr(progress, "utcnow", lambda: FastClock.now(UTC))
        fast = Fence("fast", await queue.register_node(store, "fast"))
        assert await queue.heartbeat(store, "fast")
        async with store.session() as s, s.begin():
            beat = (
                await s.execute(
                    sa.select(nodes_table.c.heartbeat_at).where(nodes_table.c.id == "fast")
                )
            ).scalar_one()
            db_time = (await s.execute(sa.select(sa.func.now()))).scalar_one()
        assert abs((beat - db_time).total_seconds()) < 60  # not an hour ahead
        [call] = await queue.claim_calls(store, fast, 1, now=db_time)
        # Another node rescues with a 15 s timeout: "fast" beat just now, so it keeps its call.
        assert await queue.rescue_calls(store, me="other", stale_after=15, error="node lost") == (
            0,
            0,
        )
        assert (await row(store, call.id)).node_id == "fast"
        refused = await limiter.acquire(store, ids[1], "fast", [limiter.Limit("trunk:t", rate=1.0)])
        assert refused is None  # the first token of a fresh bucket
        again = await limiter.acquire(store, "x", "fast", [limiter.Limit("trunk:t", rate=1.0)])
        assert again is not None and 0 < again.retry_in <= 1.0  # refills by the DB's clock
    finally:
        await store.close()


async def test_report_is_ready_exactly_when_the_last_call_is_final(store: Store) -> None:
    """done counts final calls only: a call queued for another attempt is not one,
    and the report stays pending until the very last call ends."""
    from ringcast.store import requests as rq

    rid, ids = await add_request(store, 3)
    node = Fence("n", await queue.register_node(store, "n"))
    claimed = {c.id: c for c in await queue.claim_calls(store, node, 3)}
    final = {"result": "completed", "outcome": "busy", "disconnect_time": utcnow()}

    async def status() -> tuple[int, str]:
        info = await rq.report_info(store, request_id=rid)
        assert info is not None and info.total == 3
        return info.done, info.status

    assert await status() == (0, "pending")
    async with store.session() as s, s.begin():
        assert await queue.finish_call(s, ids[0], node, final)
        # busy, retried in an hour: its first attempt ended, the call did not
        assert await queue.finish_call(
            s, ids[1], node, final, retry_at=utcnow() + timedelta(hours=1)
        )
    assert await status() == (1, "pending")
    async with store.session() as s, s.begin():
        assert await queue.finish_call(s, ids[2], node, final)
    assert await status() == (2, "pending")  # n - 1 final
    [again] = await queue.claim_calls(store, node, 1, now=utcnow() + timedelta(hours=2))
    assert again.id == ids[1] and again.attempt == 2 and claimed[ids[1]].attempt == 1
    async with store.session() as s, s.begin():
        assert await queue.finish_call(s, ids[1], node, final)
    assert await status() == (3, "ready")


async def test_a_claim_reads_only_the_calls_it_takes(store: Store) -> None:
    """The claim's select walks ix_calls_claim_order in (not_before, seq) order and
    stops after its rows: no sort of every queued call (they share one not_before),
    even with the fresh, statistics-less table a large new request leaves."""
    from ringcast.store import requests as rq

    calls = [rq.NewCall(f"sip:u{i}@127.0.0.1:5", "me") for i in range(20_000)]
    accepted = await rq.create_request(store, body={"from": "me"}, calls=calls, body_hash="h")
    node = Fence("n", await queue.register_node(store, "n"))
    pick = queue.due_calls(
        store, node, {accepted.request_id: 161}, now=utcnow() + timedelta(seconds=1)
    )
    compiled = pick.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True})
    async with store.session() as s, s.begin():
        await queue.prefer_claim_order(s)
        prefix = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
        plan = "\n".join(str(r) for r in await s.execute(sa.text(prefix + str(compiled))))
    assert "ix_calls_claim_order" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    got = await queue.claim_calls(store, node, 161)
    assert [c.seq for c in got] == list(range(161))
