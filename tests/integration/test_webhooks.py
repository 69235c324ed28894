"""The webhook outbox and deliverer on real SQLite and PostgreSQL, POSTing to a
real HTTP receiver on 127.0.0.1 that verifies every signature."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dbrows import insert_request

from ringcast.dialer.writer import GroupWriter
from ringcast.domain import Result, now_precise, utcnow
from ringcast.store import outbox
from ringcast.store.db import Store, open_store
from ringcast.store.models import (
    api_keys_table,
    call_attempts_table,
    calls_table,
    webhook_outbox_table,
)
from ringcast.webhooks import deliver as deliver_module
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.deliver import WebhookDeliverer
from ringcast.webhooks.sign import SignatureError, generate_secret, verify

SECRET = generate_secret()
FAST = Backoff(delays=(0.3,), cap=0.3, jitter=0.0)  # retry after 0.3 s


# --- a real receiver ----------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived
    verified: str | None  # the webhook-id when the signature verified, else the reason


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records and verifies POSTs.

    `script[path]` is a list of status codes answered in turn (then 200);
    `delay[path]` seconds are slept before answering.
    """

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self.secrets = secrets or {"": SECRET}  # path prefix -> secret
        self.hits: list[Hit] = []
        self.script: dict[str, list[int]] = {}
        self.delay: dict[str, float] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                secret = max(
                    ((p, s) for p, s in outer.secrets.items() if self.path.startswith(p)),
                    key=lambda ps: len(ps[0]),
                )[1]
                try:
                    verified: str | None = verify(secret, headers, body)
                except SignatureError as exc:
                    verified = f"invalid: {exc}"
                with outer.lock:
                    outer.hits.append(Hit(self.path, headers, body, arrived, verified))
                    todo = outer.script.get(self.path)
                    status = todo.pop(0) if todo else 200
                time.sleep(outer.delay.get(self.path, 0.0))
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# --- database helpers -----------------------------------------------------------------------


async def add_request(
    store: Store, n: int, *, callback_url: str | None, api_key_id: str | None = None
) -> tuple[str, list[str]]:
    body = {
        "playlist": [{"pause": 1}],
        "sip": {"proxy": "sip:gw.example.com", "username": "u", "password": "hunter2"},
        "callback_url": callback_url,
    }
    return await insert_request(store, n, body, api_key_id=api_key_id)


async def add_events(store: Store, url: str, n: int, *, api_key_id: str | None = None) -> list[str]:
    async with store.session() as s, s.begin():
        return [
            await outbox.enqueue(
                s,
                url=url,
                api_key_id=api_key_id,
                event_type="call.ringing",
                payload=outbox.build_payload("call.ringing", {"id": f"c{i}"}),
            )
            for i in range(n)
        ]


async def rows(store: Store) -> dict[str, sa.Row[Any]]:
    async with store.session(readonly=True) as s, s.begin():
        result = await s.execute(sa.select(webhook_outbox_table))
        return {r.webhook_id: r for r in result}


async def until(cond: Callable[[], Any], within: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cond() if asyncio.iscoroutinefunction(cond) else cond():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met in {within}s")


def deliverer(store: Store, **kw: Any) -> WebhookDeliverer:
    opts: dict[str, Any] = {
        "allow_private": True,
        "secret": SECRET,
        "poll_interval": 0.05,
        "backoff": FAST,
        "timeout": 5.0,
    }
    opts.update(kw)
    return WebhookDeliverer(store, **opts)


# --- enqueue ---------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_and_commits_with_the_caller(store: Store) -> None:
    payload = outbox.build_payload("request.completed", {"id": "r1"})
    kw: dict[str, Any] = {
        "url": "https://example.com/h",
        "api_key_id": None,
        "event_type": "request.completed",
        "payload": payload,
    }
    async with store.session() as s, s.begin():
        a = await outbox.enqueue(s, **kw, webhook_id="msg_fixed")
        b = await outbox.enqueue(s, **kw, webhook_id="msg_fixed")  # same transaction
    async with store.session() as s, s.begin():
        c = await outbox.enqueue(s, **kw, webhook_id="msg_fixed")  # a later one
    assert a == b == c == "msg_fixed"
    # Rolled back with the caller's transaction: no row.
    with pytest.raises(RuntimeError, match="call-state write failed"):
        async with store.session() as s, s.begin():
            await outbox.enqueue(s, **kw, webhook_id="msg_rolled_back")
            raise RuntimeError("call-state write failed")
    async with store.session() as s, s.begin():
        fresh = await outbox.enqueue(s, **kw)
    got = await rows(store)
    assert sorted(got) == sorted(["msg_fixed", fresh])
    row = got["msg_fixed"]
    assert row.payload == payload and row.attempts == 0 and row.delivered_at is None
    assert row.next_attempt_at <= now_precise()
    with pytest.raises(ValueError, match="unknown webhook event type"):
        async with store.session() as s, s.begin():
            await outbox.enqueue(s, **{**kw, "event_type": "call.nope"})


async def _set(store: Store, cid: str, **values: Any) -> str | None:
    async with store.session() as s, s.begin():
        await s.execute(sa.update(calls_table).where(calls_table.c.id == cid).values(**values))
        return await outbox.notify_call(s, cid)


async def test_notify_call_events_and_one_request_completed(store: Store) -> None:
    rid, (c1, c2) = await add_request(store, 2, callback_url="https://example.com/h")
    assert await _set(store, c1, result="dialing") is None  # no event for dialing
    r1 = await _set(store, c1, result="ringing")
    assert r1 == outbox.call_event_id(c1, 1, "call.ringing")
    assert await _set(store, c1, result="ringing") == r1  # reported twice: one row
    await _set(store, c1, result="in-progress", answered=True, connect_time=utcnow())
    async with store.session() as s, s.begin():
        assert not await outbox.request_finished(s, rid)
    await _set(store, c1, result="completed", outcome="answered", duration=3)
    await _set(store, c2, result="failed", outcome="failed", error="unreachable")
    async with store.session() as s, s.begin():
        assert await outbox.request_finished(s, rid)
        # Called again (the dialer and the deliverer's safety net): still one row.
        assert await outbox.notify_request_completed(s, rid) == outbox.request_completed_id(rid)
    got = await rows(store)
    kinds = sorted(r.event_type for r in got.values())
    assert kinds == [
        "call.answered",
        "call.completed",
        "call.failed",
        "call.ringing",
        "request.completed",
    ]
    done = got[outbox.request_completed_id(rid)].payload
    assert done["type"] == "request.completed"
    data = done["data"]
    assert data["id"] == rid and data["total"] == 2 and data["done"] == 2
    assert data["results"] == {"completed": 1, "failed": 1}
    assert data["outcomes"] == {"answered": 1, "failed": 1}
    assert "hunter2" not in json.dumps(got[outbox.request_completed_id(rid)].payload)
    completed = got[outbox.call_event_id(c1, 1, "call.completed")].payload["data"]
    assert completed["id"] == c1 and completed["request_id"] == rid
    assert completed["result"] == "completed" and completed["duration"] == 3


async def test_a_retried_attempt_reports_its_own_record(store: Store) -> None:
    rid, (cid,) = await add_request(store, 1, callback_url="https://example.com/h")
    busy = {"type": "voice", "id": cid, "result": "completed", "outcome": "busy", "attempt": 1}
    async with store.session() as s, s.begin():
        # What queue.finish_call(retry_at=...) leaves: attempt 1 kept, attempt 2 queued.
        await s.execute(sa.insert(call_attempts_table).values(call_id=cid, attempt=1, record=busy))
        await s.execute(
            sa.update(calls_table).where(calls_table.c.id == cid).values(attempt=2, result="queued")
        )
        wid = await outbox.notify_call(s, cid)  # the event comes from attempt 1's record
        assert await outbox.notify_call(s, cid, "call.completed") == wid
    assert wid == outbox.call_event_id(cid, 1, "call.completed")
    got = await rows(store)
    assert got[wid].payload["data"] == {**busy, "request_id": rid, "retrying": True}
    assert outbox.request_completed_id(rid) not in got  # the call is not final yet


async def test_no_callback_url_no_event(store: Store) -> None:
    rid, (cid,) = await add_request(store, 1, callback_url=None)
    assert await _set(store, cid, result="completed", outcome="answered") is None
    async with store.session() as s, s.begin():
        assert await outbox.notify_request_completed(s, rid) is None
    assert await rows(store) == {}


# --- claiming ----------------------------------------------------------------------------------


async def test_claim_is_exclusive_and_leased(db_url: str, store: Store) -> None:
    ids = await add_events(store, "http://127.0.0.1:9/h", 40)
    other = open_store(db_url)  # a second process's engine
    try:
        now = now_precise()
        lease = timedelta(seconds=60)
        got = await asyncio.gather(
            *(outbox.claim_due(st, 15, now=now, lease=lease) for st in (store, other, store, other))
        )
        claimed = [d.webhook_id for batch in got for d in batch]
        assert len(claimed) == len(set(claimed)) == 40
        assert sorted(claimed) == sorted(ids)
        assert await outbox.claim_due(other, 50, now=now, lease=lease) == []
        # A crashed claimer's rows come back once the lease has run out.
        later = now + lease + timedelta(seconds=1)
        back = await outbox.claim_due(other, 50, now=later, lease=lease)
        assert sorted(d.webhook_id for d in back) == sorted(ids)
    finally:
        await other.close()


async def test_two_deliverers_send_each_event_once(
    db_url: str, store: Store, receiver: Receiver
) -> None:
    ids = await add_events(store, receiver.url(), 60)
    # Each answer takes 50 ms, so the 60 events take one deliverer at least
    # 0.6 s: a shared workload, not one a fast claimer drains before the
    # other's first claim has its turn at SQLite's write lock.
    receiver.delay["/hook"] = 0.05
    other = open_store(db_url)
    a, b = deliverer(store, max_concurrency=5), deliverer(other, max_concurrency=5)
    a.start()
    b.start()
    try:
        await until(lambda: len(receiver.hits) >= 60, within=20)

        async def all_delivered() -> bool:
            return all(r.delivered_at is not None for r in (await rows(store)).values())

        await until(all_delivered, within=10)
    finally:
        await a.stop()
        await b.stop()
        await other.close()
    got = [str(h.verified) for h in receiver.hits]
    assert sorted(got) == sorted(ids)  # each once, each signature valid
    assert a.delivered + b.delivered == 60 and a.failed_attempts == b.failed_attempts == 0
    assert a.delivered > 0 and b.delivered > 0, (a.delivered, b.delivered)


# --- delivering --------------------------------------------------------------------------------


async def test_retry_after_500_keeps_the_webhook_id(store: Store, receiver: Receiver) -> None:
    (wid,) = await add_events(store, receiver.url("/flaky"), 1)
    receiver.script["/flaky"] = [500, 503]
    d = deliverer(store)
    d.start()
    try:

        async def delivered() -> bool:
            return (await rows(store))[wid].delivered_at is not None

        await until(delivered, within=10)
    finally:
        await d.stop()
    hits = receiver.of("/flaky")
    assert [h.verified for h in hits] == [wid, wid, wid]  # same id, valid signature each time
    assert len({h.body for h in hits}) == 1  # the same event body
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:], strict=False)]
    assert all(g >= 0.25 for g in gaps), gaps  # FAST backoff: 0.3 s
    row = (await rows(store))[wid]
    assert row.attempts == 3 and row.last_error is None and row.gave_up_at is None
    assert (d.delivered, d.failed_attempts, d.gave_up) == (1, 2, 0)
    assert hits[0].headers["content-type"] == "application/json"
    assert json.loads(hits[0].body)["type"] == "call.ringing"


async def test_gives_up_after_the_24h_window(store: Store, receiver: Receiver) -> None:
    (old,) = await add_events(store, receiver.url("/down"), 1)
    receiver.script["/down"] = [500] * 10
    # A clock 25 h ahead: the event is older than the retry window.
    d = deliverer(store, clock=lambda: now_precise() + timedelta(hours=25))
    d.start()
    try:

        async def gave_up() -> bool:
            return (await rows(store))[old].gave_up_at is not None

        await until(gave_up, within=10)
    finally:
        await d.stop()
    row = (await rows(store))[old]
    assert row.last_error == "HTTP 500" and row.delivered_at is None and row.attempts == 1
    assert [h.verified for h in receiver.of("/down")] == [old]
    assert (d.delivered, d.failed_attempts, d.gave_up) == (0, 1, 1)


async def test_within_the_window_a_failure_is_rescheduled(store: Store, receiver: Receiver) -> None:
    (wid,) = await add_events(store, receiver.url("/down"), 1)
    receiver.script["/down"] = [500] * 10
    d = deliverer(store, backoff=Backoff())  # the real schedule: next try in 5 s ± 20 %
    d.start()
    try:

        async def failed_once() -> bool:
            return bool((await rows(store))[wid].attempts == 1)

        await until(failed_once, within=10)
    finally:
        await d.stop()
    row = (await rows(store))[wid]
    wait = (row.next_attempt_at - now_precise()).total_seconds()
    assert 2.0 < wait <= 6.0, wait
    assert row.gave_up_at is None and row.last_error == "HTTP 500"


async def test_410_gone_gives_up_at_once(store: Store, receiver: Receiver) -> None:
    (wid,) = await add_events(store, receiver.url("/gone"), 1)
    receiver.script["/gone"] = [410]
    d = deliverer(store)
    d.start()
    try:

        async def gave_up() -> bool:
            return (await rows(store))[wid].gave_up_at is not None

        await until(gave_up, within=10)
    finally:
        await d.stop()
    assert (await rows(store))[wid].last_error == "HTTP 410"
    assert d.gave_up == 1


async def test_a_slow_receiver_does_not_hold_up_others(store: Store, receiver: Receiver) -> None:
    receiver.delay["/slow"] = 8.0
    slow = await add_events(store, receiver.url("/slow"), 3)
    # Another receiver (origin): the same server named localhost.
    fast = await add_events(store, f"http://localhost:{receiver.port}/fast", 10)
    d = deliverer(store, timeout=4.0, max_concurrency=6)
    d.start()
    try:
        await until(lambda: len(receiver.of("/fast")) == 10, within=10)
        # The fast ones went out while the slow ones were hanging: none had timed out yet.
        failed_before_fast_done = d.failed_attempts
        await until(lambda: d.failed_attempts >= 3, within=15)
    finally:
        await d.stop()
    assert failed_before_fast_done == 0
    got = await rows(store)
    assert all(got[w].last_error == "timed out after 4s" for w in slow)  # cut off, not waited
    assert all(got[w].delivered_at is not None for w in fast)


async def test_stop_is_bounded_by_the_timeout(store: Store, receiver: Receiver) -> None:
    receiver.delay["/slow"] = 60.0
    await add_events(store, receiver.url("/slow"), 2)
    d = deliverer(store, timeout=1.0)
    d.start()
    await until(lambda: len(receiver.of("/slow")) == 2, within=5)
    # stop() ends with the attempts' timeout, never waiting for the receiver's answer
    await asyncio.wait_for(d.stop(), timeout=30)
    got = await rows(store)
    assert all(r.attempts == 1 and r.last_error == "timed out after 1s" for r in got.values())


async def test_private_targets_are_refused_unless_allowed(store: Store, receiver: Receiver) -> None:
    (wid,) = await add_events(store, receiver.url("/private"), 1)
    d = deliverer(store, allow_private=False)
    d.start()
    try:

        async def failed() -> bool:
            return bool((await rows(store))[wid].attempts == 1)

        await until(failed, within=10)
    finally:
        await d.stop()
    error = (await rows(store))[wid].last_error
    assert error is not None and "refused" in error and "/private" not in error
    assert receiver.of("/private") == []


async def test_signed_with_the_api_keys_secret(store: Store) -> None:
    key_secret = generate_secret()
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(api_keys_table).values(
                id="key-1",
                name="k",
                tenant="default",
                key_hash="0" * 64,
                key_prefix="rc_abc",
                webhook_secret=key_secret,
            )
        )
    with Receiver({"/k": key_secret, "/open": SECRET}) as rx:
        (keyed,) = await add_events(store, rx.url("/k"), 1, api_key_id="key-1")
        (gone,) = await add_events(store, rx.url("/k"), 1, api_key_id="key-deleted")
        (open_,) = await add_events(store, rx.url("/open"), 1)
        d = deliverer(store)
        d.start()
        try:

            async def settled() -> bool:
                got = await rows(store)
                return got[keyed].delivered_at is not None and got[gone].gave_up_at is not None

            await until(settled, within=10)
            await until(lambda: len(rx.of("/open")) == 1, within=10)
        finally:
            await d.stop()
        assert [h.verified for h in rx.of("/k")] == [keyed]  # nothing sent for the gone key
        assert [h.verified for h in rx.of("/open")] == [open_]
    got = await rows(store)
    assert got[gone].last_error == "the API key of this webhook no longer exists"


async def test_final_event_settled_enqueues_request_completed(
    store: Store, receiver: Receiver
) -> None:
    """The safety net: both calls final, but no request.completed enqueued (as when
    two nodes finish the last calls at once); delivering the final events adds it."""
    rid, (c1, c2) = await add_request(store, 2, callback_url=receiver.url("/r"))
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(calls_table.c.request_id == rid)
            .values(result=Result.COMPLETED.value, outcome="answered")
        )
        for cid in (c1, c2):
            await outbox.enqueue(
                s,
                url=receiver.url("/r"),
                api_key_id=None,
                event_type="call.completed",
                payload=outbox.build_payload("call.completed", {"id": cid, "request_id": rid}),
                webhook_id=outbox.call_event_id(cid, 1, "call.completed"),
            )
    d = deliverer(store)
    d.start()
    try:
        await until(lambda: len(receiver.of("/r")) == 3, within=10)
        await asyncio.sleep(0.3)  # nothing more arrives
    finally:
        await d.stop()
    types = [json.loads(h.body)["type"] for h in receiver.of("/r")]
    assert sorted(types) == ["call.completed", "call.completed", "request.completed"]
    assert types[-1] == "request.completed"
    assert all(h.verified and not h.verified.startswith("invalid") for h in receiver.of("/r"))


async def test_claim_skips_excluded_receivers(store: Store) -> None:
    a = await add_events(store, "http://127.0.0.1:80/h", 2)
    b = await add_events(store, "http://127.0.0.1:8080?x=1", 2)
    c = await add_events(store, "http://127.0.0.1:80", 1)
    now = now_precise()
    lease = timedelta(seconds=60)
    got = await outbox.claim_due(
        store, 10, now=now, lease=lease, exclude_origins=["http://127.0.0.1:80"]
    )
    assert sorted(d.webhook_id for d in got) == sorted(b)  # :8080 is another receiver
    rest = await outbox.claim_due(store, 10, now=now, lease=lease)
    assert sorted(d.webhook_id for d in rest) == sorted(a + c)


async def test_a_dead_receiver_does_not_starve_others(store: Store, receiver: Receiver) -> None:
    receiver.delay["/dead"] = 6.0  # accepts, never answers in time
    dead = await add_events(store, receiver.url("/dead"), 12)
    # Another receiver: the same server under another name (localhost) is another origin.
    live_url = f"http://localhost:{receiver.port}/live"
    live = await add_events(store, live_url, 6)
    d = deliverer(store, timeout=1.0, max_concurrency=4, receiver_down_for=30.0)
    d.start()
    try:
        await until(lambda: len(receiver.of("/live")) == 6, within=10)
        await until(lambda: d.failed_attempts >= 2, within=5)
        await asyncio.sleep(0.5)
    finally:
        await d.stop()
    # never waited behind the dead receiver's rows: the dead one got its share of the
    # slots (4 // 2) and, once it failed, was left alone while the live one was served
    assert len(receiver.of("/dead")) == 2
    got = await rows(store)
    assert all(got[w].delivered_at is not None for w in live)
    tried = [w for w in dead if got[w].attempts > 0]
    assert len(tried) == 2 and all(got[w].last_error == "timed out after 1s" for w in tried)
    untried = [got[w] for w in dead if got[w].attempts == 0]
    assert len(untried) == 10 and all(r.next_attempt_at <= now_precise() for r in untried)


def count_claims(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Rows claimed and rows given back unsent (deferred) by the deliverer's
    transactions."""
    seen = {"claimed": 0, "released": 0}
    real = outbox.settle_and_claim

    async def counted(store: Store, settlements: Any, limit: int, **kw: Any) -> Any:
        seen["released"] += sum(1 for st in settlements if st.deferred)
        got = await real(store, settlements, limit, **kw)
        seen["claimed"] += len(got)
        return got

    monkeypatch.setattr(outbox, "settle_and_claim", counted)
    return seen


async def test_rows_beyond_a_receivers_share_wait_for_it(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim takes a row per free slot, whoever it is for; the rows beyond the
    receiver's share (4 // 2 here) wait in the process and go out as its
    deliveries finish: none is given back to be claimed again."""
    seen = count_claims(monkeypatch)
    ids = await add_events(store, receiver.url("/one"), 40)
    d = deliverer(store, max_concurrency=4)
    d.start()
    try:
        await until(lambda: d.delivered == 40, within=20)
    finally:
        await d.stop()
    assert sorted(str(h.verified) for h in receiver.hits) == sorted(ids)  # each once
    assert seen == {"claimed": 40, "released": 0}
    assert all(r.attempts == 1 for r in (await rows(store)).values())


async def test_a_row_that_waited_too_long_is_given_back_unsent(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WAIT_LIMIT a waiting row goes back to the database (its lease would
    run out meanwhile), unattempted, and is claimed and sent later: still once."""
    monkeypatch.setattr(deliver_module, "WAIT_LIMIT", 0.0)
    seen = count_claims(monkeypatch)
    ids = await add_events(store, receiver.url("/one"), 20)
    d = deliverer(store, max_concurrency=4)
    d.start()
    try:
        await until(lambda: d.delivered == 20, within=20)
    finally:
        await d.stop()
    assert sorted(str(h.verified) for h in receiver.hits) == sorted(ids)  # each once
    assert seen["released"] > 0 and seen["claimed"] == 20 + seen["released"]
    assert all(r.attempts == 1 for r in (await rows(store)).values())


async def test_claims_take_more_ahead_while_transactions_wait(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle-and-claim that took long (on SQLite: it waited for the write lock
    a dialer holds) makes the next claim take more rows ahead; quick ones shrink
    it back to max_concurrency. Every row still goes out once."""
    limits: list[int] = []
    real = outbox.settle_and_claim
    slow = True

    async def timed(store_: Store, settlements: Any, limit: int, **kw: Any) -> Any:
        if limit:
            limits.append(limit)
        if slow:
            await asyncio.sleep(deliver_module.SLOW_CLAIM * 1.5)
        return await real(store_, settlements, limit, **kw)

    monkeypatch.setattr(outbox, "settle_and_claim", timed)
    ids = await add_events(store, receiver.url("/one"), 60)
    d = deliverer(store, max_concurrency=4)
    d.start()
    try:
        await until(lambda: len(limits) >= 3, within=10)
        slow = False
        grown = max(limits)
        # quick ones: back down to the free slots and max_concurrency (idle polls claim too)
        await until(lambda: d.delivered == 60 and limits[-1] == 4 + 4, within=20)
    finally:
        await d.stop()
    assert limits[0] == 4 + 4  # the free slots and max_concurrency ahead
    assert grown > 16  # after two slow transactions: 4 -> 8 -> 16 ahead, plus a free slot
    assert sorted(str(h.verified) for h in receiver.hits) == sorted(ids)  # each once


def sharing_a_writer(store: Store) -> tuple[WebhookDeliverer, GroupWriter]:
    """A started deliverer (4 slots) sharing a started dialer group writer."""
    writer = GroupWriter(store)
    writer.start()
    d = deliverer(store, max_concurrency=4)
    d.share_writer(writer)
    d.start()
    return d, writer


async def test_settle_and_claim_ride_in_the_dialers_group_writer(
    store: Store, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the group writer of a dialer in the same process shared, on SQLite
    every settle-and-claim is one of the writer's writes (nothing of the
    deliverer's own asks for the write lock); on PostgreSQL (row locks) the
    deliverer keeps transactions of its own. Each event still goes out once
    and is recorded delivered after one attempt."""
    own = count_claims(monkeypatch)
    ids = await add_events(store, receiver.url("/shared"), 30)
    d, writer = sharing_a_writer(store)
    try:
        await until(lambda: d.delivered == 30 and d.in_flight == 0, within=20)

        async def all_recorded() -> bool:
            return all(r.delivered_at for r in (await rows(store)).values())

        await until(all_recorded, within=10)
        shared, batches = d.shared_transactions, writer.batches
    finally:
        await d.stop()
        await writer.stop()
    assert sorted(str(h.verified) for h in receiver.of("/shared")) == sorted(ids)  # each once
    assert all(r.attempts == 1 and r.delivered_at for r in (await rows(store)).values())
    if store.dialect == "sqlite":
        assert own == {"claimed": 0, "released": 0}
        assert shared >= 2 and batches >= shared  # 4 slots + 4 ahead per claim: several
    else:
        assert shared == 0 and own["claimed"] == 30


async def test_a_stopping_writer_hands_settlements_back_to_own_transactions(
    store: Store, receiver: Receiver
) -> None:
    """The dialer stops first at shutdown (its writer with it), the deliverer
    last: from the moment the writer stops accepting, the deliverer settles and
    claims in transactions of its own, so what is delivered afterwards is still
    recorded and the rest still sent."""
    first = await add_events(store, receiver.url("/late"), 5)
    d, writer = sharing_a_writer(store)
    try:
        await until(lambda: d.delivered == 5 and d.in_flight == 0, within=20)
        await writer.stop()
        assert not writer.accepting
        more = await add_events(store, receiver.url("/late"), 5)
        await until(lambda: d.delivered == 10, within=20)
    finally:
        await d.stop()
    assert sorted(str(h.verified) for h in receiver.of("/late")) == sorted(first + more)
    assert all(r.attempts == 1 and r.delivered_at for r in (await rows(store)).values())


async def test_rows_past_the_window_are_given_up_untried(store: Store, receiver: Receiver) -> None:
    old = await add_events(store, receiver.url("/late"), 3)
    d = deliverer(store, clock=lambda: now_precise() + timedelta(hours=25), sweep_interval=0.0)
    d.start()
    try:

        async def all_given_up() -> bool:
            return all(r.gave_up_at is not None for r in (await rows(store)).values())

        await until(all_given_up, within=10)
    finally:
        await d.stop()
    got = await rows(store)
    assert all(got[w].last_error == "not delivered within the retry window" for w in old)
    assert all(got[w].attempts == 0 for w in old)
    assert receiver.of("/late") == [] and d.gave_up == 3


async def test_two_nodes_finishing_the_last_calls_at_once_still_complete_the_request(
    pg_url: str, receiver: Receiver
) -> None:
    """PostgreSQL, READ COMMITTED: two transactions each finish one of the last
    two calls; neither sees the other's write, so neither enqueues
    request.completed. Settling their final events does, exactly once."""
    store = open_store(pg_url)
    await store.migrate()
    try:
        rid, (c1, c2) = await add_request(store, 2, callback_url=receiver.url("/race"))
        async with store.session() as a, a.begin(), store.session() as b, b.begin():
            for s, cid in ((a, c1), (b, c2)):
                await s.execute(
                    sa.update(calls_table)
                    .where(calls_table.c.id == cid)
                    .values(result="completed", outcome="answered")
                )
                await outbox.notify_call(s, cid)
        assert outbox.request_completed_id(rid) not in await rows(store)  # the race
        d = deliverer(store)
        d.start()
        try:
            await until(lambda: len(receiver.of("/race")) == 3, within=10)
            await asyncio.sleep(0.3)
        finally:
            await d.stop()
        types = sorted(json.loads(h.body)["type"] for h in receiver.of("/race"))
        assert types == ["call.completed", "call.completed", "request.completed"]
    finally:
        await store.close()


async def test_logs_hold_no_secret_nor_url_path(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="aiosqlite")  # as the CLI does: it echoes SQL
    receiver.script["/p/tok3n?sig=qu3ry"] = [500, 410]
    (wid,) = await add_events(store, receiver.url("/p/tok3n") + "?sig=qu3ry", 1)
    d = deliverer(store)
    d.start()
    try:

        async def gave_up() -> bool:
            return (await rows(store))[wid].gave_up_at is not None

        await until(gave_up, within=10)
    finally:
        await d.stop()
    text = caplog.text
    assert wid in text and f"127.0.0.1:{receiver.port}" in text  # what happened, where
    for secret in ("tok3n", "qu3ry", SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in text
    assert "qu3ry" not in str((await rows(store))[wid].last_error)


async def test_lifespan_hook_runs_a_deliverer(store: Store, receiver: Receiver) -> None:
    from types import SimpleNamespace

    from ringcast.webhooks.deliver import deliverer_lifespan

    settings = SimpleNamespace(allow_private_urls=True, private_url_allowlist=())
    state = SimpleNamespace(store=store)
    (wid,) = await add_events(store, receiver.url("/life"), 1)
    async with deliverer_lifespan(settings, secret=SECRET, poll_interval=0.05)(state):
        assert isinstance(state.webhooks, WebhookDeliverer)
        await until(lambda: len(receiver.of("/life")) == 1, within=10)
        await until(lambda: state.webhooks.delivered == 1, within=5)
    assert state.webhooks.in_flight == 0
    assert [h.verified for h in receiver.of("/life")] == [wid]


async def test_the_install_secret_comes_from_the_settings(store: Store) -> None:
    """A request without an API key is signed with Settings.webhook_secret
    (RINGCAST_WEBHOOK_SECRET), read through the settings, not the environment."""
    from types import SimpleNamespace

    from ringcast.config import Settings
    from ringcast.webhooks.deliver import deliverer_lifespan

    install = generate_secret()
    settings = Settings(allow_private_urls=True, webhook_secret=install)
    state = SimpleNamespace(store=store)
    with Receiver({"": install}) as receiver:
        (wid,) = await add_events(store, receiver.url("/install"), 1)
        async with deliverer_lifespan(settings, poll_interval=0.05)(state):
            await until(lambda: len(receiver.of("/install")) == 1, within=10)
    assert [h.verified for h in receiver.of("/install")] == [wid]


async def test_a_commit_in_this_process_wakes_the_deliverer(
    store: Store, receiver: Receiver
) -> None:
    """An event committed by this process is sent at once, not at the next poll
    (an hour away here): outbox.on_commit wakes the deliverer."""
    (first,) = await add_events(store, receiver.url("/wake"), 1)
    d = deliverer(store, poll_interval=3600.0)
    d.start()
    try:
        await until(lambda: d.delivered == 1 and d.in_flight == 0, within=10)
        await asyncio.sleep(0.5)  # the pump's pass after the delivery is over: it sleeps
        (second,) = await add_events(store, receiver.url("/wake"), 1)
        await until(lambda: d.delivered == 2, within=10)
    finally:
        await d.stop()
    assert [h.verified for h in receiver.of("/wake")] == [first, second]


async def test_a_rolled_back_enqueue_wakes_nobody(store: Store) -> None:
    woken: list[int] = []
    unregister = outbox.on_commit(lambda: woken.append(1))
    try:
        with pytest.raises(RuntimeError, match="state write failed"):
            async with store.session() as s, s.begin():
                await outbox.enqueue(
                    s,
                    url="https://example.com/h",
                    api_key_id=None,
                    event_type="call.ringing",
                    payload=outbox.build_payload("call.ringing", {"id": "c1"}),
                )
                raise RuntimeError("state write failed")
        async with store.session() as s, s.begin():  # a commit that enqueued nothing
            await s.execute(sa.select(1))
        assert woken == []
        await add_events(store, "https://example.com/h", 1)
        assert woken == [1]
    finally:
        unregister()
