"""The dashboard's page and JSON endpoints over real SQLite files and real
PostgreSQL databases (the app in process; call results written straight into
the `calls` rows in place of the dialer)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.store import Store
from ringcast.store import requests as q
from ringcast.store.dashboard import bucket_width
from ringcast.store.models import calls_table, requests_table


async def client_for(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(db=store.url, max_recipients=200_000), store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ringcast.test"
        ) as c,
    ):
        yield c


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(store):
        yield c


async def new_request(store: Store, n: int, *, tenant: str = "default") -> str:
    calls = [q.NewCall(to_uri=f"sip:u{i}@127.0.0.1:5060", from_uri="me") for i in range(n)]
    accepted = await q.create_request(
        store, body={"from": "me", "playlist": [{"pause": 1}]}, calls=calls,
        body_hash=str(time.monotonic_ns()), tenant=tenant,
    )  # fmt: skip
    return accepted.request_id


T0 = datetime(2026, 5, 2, 12, 0, 0, tzinfo=UTC)


async def set_calls(store: Store, request_id: str, plan: list[tuple[str, str | None, int]]) -> None:
    """plan[seq] = (result, outcome, disconnect second after T0, or -1 for none)."""
    async with store.session() as s, s.begin():
        for seq, (result, outcome, at) in enumerate(plan):
            values: dict[str, Any] = {"result": result, "outcome": outcome}
            if result not in ("queued",):
                values["setup_time"] = T0
            if at >= 0:
                values["disconnect_time"] = T0 + timedelta(seconds=at)
            await s.execute(
                sa.update(calls_table)
                .where(calls_table.c.request_id == request_id, calls_table.c.seq == seq)
                .values(**values)
            )


async def test_page_and_static_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    js = await client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "Authorization" in js.text and "localStorage" in js.text
    css = await client.get("/static/app.css")
    assert css.headers["content-type"].startswith("text/css")
    for bad in ("/static/nope.js", "/static/..%2Fdashboard.py", "/static/.hidden.js"):
        r = await client.get(bad)
        assert r.status_code == 404 and r.json()["data"] == "error", bad


PLAN: list[tuple[str, str | None, int]] = [
    ("completed", "answered", 5),
    ("completed", "answered", 70),
    ("completed", "busy", 75),
    ("completed", "no-answer", 130),
    ("failed", "failed", 131),
    ("completed", "declined", 132),
    ("canceled", "canceled", 133),
    ("ringing", None, -1),
    ("in-progress", None, -1),
    ("queued", None, -1),
]


async def test_counts_timeline_and_filters(store: Store, client: httpx.AsyncClient) -> None:
    rid = await new_request(store, len(PLAN))
    await set_calls(store, rid, PLAN)

    detail = (await client.get(f"/requests/{rid}")).json()["request"]
    assert detail["total"] == 10 and detail["done"] == 7
    assert detail["status"] == "running"
    assert detail["counts"] == {
        "queued": 1,
        "in-progress": 2,
        "answered": 2,
        "busy": 1,
        "no-answer": 1,
        "declined": 1,
        "rejected": 0,
        "failed": 1,
        "canceled": 1,
        "suppressed": 0,
    }
    assert detail["from"] == "me"
    assert detail["calls_per_minute"] == 0.0  # nothing finished in the last minute (2026-05)
    assert detail["eta_seconds"] is None

    tl = (await client.get(f"/requests/{rid}/timeline")).json()
    assert tl["width"] == bucket_width(133 - 5 + 1) == 5
    assert tl["start"] == int(T0.timestamp()) + 5
    total: dict[str, int] = {}
    for bucket in tl["buckets"]:
        for state, n in bucket["counts"].items():
            total[state] = total.get(state, 0) + n
    assert total == {
        k: v for k, v in detail["counts"].items() if v and k not in ("queued", "in-progress")
    }
    assert tl["buckets"][0]["counts"] == {"answered": 1}
    assert tl["buckets"][-1]["t"] - tl["start"] == 125  # 130..134 holds the last four

    async def seqs(state: str | None, **params: Any) -> list[str]:
        query = {"state": state, **params} if state else params
        body = (await client.get(f"/requests/{rid}/calls", params=query)).json()
        return [r["to"].split("@")[0][4:] for r in body["records"]]

    assert await seqs("answered") == ["u0", "u1"]
    assert await seqs("in-progress") == ["u7", "u8"]
    assert await seqs("queued") == ["u9"]
    assert await seqs("failed") == ["u4"]
    assert await seqs(None) == [f"u{i}" for i in range(10)]
    page = (await client.get(f"/requests/{rid}/calls", params={"limit": 4})).json()
    assert len(page["records"]) == 4 and page["next_cursor"] == "3"
    assert page["records"][2]["state"] == "busy" and page["records"][2]["outcome"] == "busy"
    assert await seqs(None, limit=4, cursor="3") == ["u4", "u5", "u6", "u7"]

    bad = await client.get(f"/requests/{rid}/calls", params={"state": "happy"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "state"
    bad = await client.get(f"/requests/{rid}/calls", params={"cursor": "x1"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"

    # finish it: done, ETA 0, pace over its whole run
    await set_calls(store, rid, [*PLAN[:6], *[("completed", "answered", 193)] * 4])
    done = (await client.get(f"/requests/{rid}")).json()["request"]
    assert (done["status"], done["done"], done["eta_seconds"]) == ("done", 10, 0)
    assert done["calls_per_minute"] == round(10 * 60 / 193, 1)
    # cancelling a finished request cancels nothing: it stays done
    assert (await client.delete(f"/voice/call/{rid}")).json()["canceled"] == 0
    again = (await client.get(f"/requests/{rid}")).json()["request"]
    assert again["status"] == "done" and again["canceled_at"] is not None
    assert again["counts"] == done["counts"]
    tl_done = (await client.get(f"/requests/{rid}/timeline")).json()
    assert sum(sum(b["counts"].values()) for b in tl_done["buckets"]) == 10


async def test_list_is_newest_first_paged_and_tenant_scoped(
    store: Store, client: httpx.AsyncClient
) -> None:
    ids = [await new_request(store, 2) for _ in range(5)]
    other = await new_request(store, 1, tenant="acme")
    async with store.session() as s, s.begin():  # distinct creation times, oldest first
        for i, rid in enumerate(ids):
            await s.execute(
                sa.update(requests_table)
                .where(requests_table.c.id == rid)
                .values(created_at=T0 + timedelta(seconds=i // 2))  # two share a second
            )
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/requests", params=params)).json()
        assert body["code"] == 0
        seen += [r["request_id"] for r in body["requests"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen[0] == ids[4] and sorted(seen) == sorted(ids) and len(seen) == 5
    assert other not in seen
    assert all(
        r["counts"]["queued"] == 2 and r["status"] == "queued"
        for r in (await client.get("/requests")).json()["requests"]
    )
    for path in (f"/requests/{other}", f"/requests/{other}/calls", f"/requests/{other}/timeline"):
        r = await client.get(path)
        assert r.status_code == 404 and r.json()["error"]["field"] == "request_id", path
    assert (await client.get("/requests", params={"cursor": "nope"})).status_code == 422

    canceled = (await client.delete(f"/voice/call/{ids[0]}")).json()
    assert canceled["canceled"] == 2
    row = (await client.get(f"/requests/{ids[0]}")).json()["request"]
    assert row["status"] == "canceled" and row["counts"]["canceled"] == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_100k_call_request_answers_fast(store: Store, client: httpx.AsyncClient) -> None:
    n = 100_000
    rid = await new_request(store, 1)
    async with store.session() as s, s.begin():  # 99,999 more calls in one statement
        await s.execute(
            sa.text(
                "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < :last) "
                "INSERT INTO calls (id, request_id, seq, to_uri, from_uri, result, attempt, "
                "request_time, duration, answered, not_before, claim_epoch, updated_at) "
                "SELECT c.id || '-' || k.n, c.request_id, k.n, 'sip:u' || k.n || '@h', "
                "c.from_uri, c.result, 1, c.request_time, 0, 0, c.not_before, 0, c.updated_at "
                "FROM calls AS c, k WHERE c.request_id = :rid"
            ),
            {"last": n - 1, "rid": rid},
        )
        await s.execute(sa.update(requests_table).where(requests_table.c.id == rid).values(total=n))
    c = calls_table.c
    outcome = sa.case(
        (c.seq % 10 < 6, "answered"), (c.seq % 10 < 8, "busy"), else_="no-answer"
    )  # fmt: skip
    async with store.session() as s, s.begin():
        await s.execute(
            sa.update(calls_table)
            .where(c.request_id == rid, c.seq < 90_000)
            .values(result="completed", outcome=outcome, setup_time=T0, disconnect_time=T0)
        )
    timings = {}
    for path in (
        "/requests",
        f"/requests/{rid}",
        f"/requests/{rid}/timeline",
        f"/requests/{rid}/calls?state=busy&limit=100",
        f"/requests/{rid}/calls?state=queued&limit=100",
    ):
        started = time.perf_counter()
        r = await client.get(path)
        timings[path] = time.perf_counter() - started
        assert r.status_code == 200, r.text
    counts = (await client.get(f"/requests/{rid}")).json()["request"]["counts"]
    assert (counts["answered"], counts["busy"], counts["no-answer"], counts["queued"]) == (
        54_000,
        18_000,
        18_000,
        10_000,
    )
    assert max(timings.values()) < 3.0, timings  # row-by-row Python would take far longer
