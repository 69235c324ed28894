"""GET /metrics: database gauges on SQLite and PostgreSQL, and the live dialer
counters of `ringcast serve` after a real broadcast answered by SIPp."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from e2e.server import RingcastServer
from prometheus_client.parser import text_string_to_metric_families
from sipp import SippUas

from ringcast.api import create_app
from ringcast.config import Settings
from ringcast.domain import utcnow
from ringcast.metrics import metrics_of
from ringcast.store import Store, open_store
from ringcast.store.models import calls_table, webhook_outbox_table


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(parsed: dict[Any, float], name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))


async def test_database_gauges(store: Store) -> None:
    app = create_app(Settings(db=store.url), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://rc.test"
    ) as c:
        body = {
            "recipients": [{"to": f"sip:u{i}@gw.example.com"} for i in range(5)],
            "playlist": [{"pause": 1}],
        }
        assert (await c.post("/voice/call/play", json=body)).status_code == 200
        later = {**body, "schedule": {"not_before": (utcnow() + timedelta(hours=1)).isoformat()}}
        assert (await c.post("/voice/call/play", json=later)).status_code == 200
        now = utcnow()
        async with store.session() as s, s.begin():
            ids = [
                r.id
                for r in await s.execute(
                    sa.select(calls_table.c.id)
                    .where(calls_table.c.not_before <= now)
                    .order_by(calls_table.c.seq)
                )
            ]
            done = {"answered": ids[:2], "busy": ids[2:3]}
            for outcome, which in done.items():
                await s.execute(
                    sa.update(calls_table)
                    .where(calls_table.c.id.in_(which))
                    .values(result="completed", outcome=outcome)
                )
            await s.execute(
                sa.insert(webhook_outbox_table),
                [
                    {
                        "webhook_id": f"msg_{i}",
                        "url": "https://h.example/x",
                        "event_type": "e",
                        "payload": {},
                        "next_attempt_at": now,
                        "attempts": attempts,
                        "delivered_at": delivered,
                        "gave_up_at": gave_up,
                    }  # fmt: skip
                    for i, (attempts, delivered, gave_up) in enumerate(
                        [(1, now, None), (3, now, None), (8, None, now), (2, None, None)]
                    )
                ],
            )
        resp = await c.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    m = samples(resp.text)
    assert value(m, "ringcast_db_up") == 1
    assert value(m, "ringcast_queue_depth") == 7  # 5 + 5 queued, 3 finished
    assert value(m, "ringcast_queue_due") == 2  # the 5 due minus the 3 finished
    assert value(m, "ringcast_calls", result="queued") == 7
    assert value(m, "ringcast_calls", result="completed") == 3
    assert value(m, "ringcast_calls_by_outcome", outcome="answered") == 2
    assert value(m, "ringcast_calls_by_outcome", outcome="busy") == 1
    assert value(m, "ringcast_webhook_deliveries", state="delivered") == 2
    assert value(m, "ringcast_webhook_deliveries", state="failed") == 1
    assert value(m, "ringcast_webhook_deliveries", state="pending") == 1
    assert value(m, "ringcast_webhook_failed_attempts") == 14 - 2
    assert value(m, "process_resident_memory_bytes") is not None
    # no dialer in this app: no live counters
    assert value(m, "ringcast_calls_placed_total") is None


async def test_database_outage(tmp_path: Path) -> None:
    """The collector reports ringcast_db_up 0; the HTTP route fails closed (503), since
    without the database it cannot tell whether API keys are required."""
    store = open_store("postgresql://nobody@127.0.0.1:1/none")
    app = create_app(Settings(db=store.url), store)
    try:
        text = (await metrics_of(app.state).render(store)).decode()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://rc.test"
        ) as c:
            resp = await c.get("/metrics")
    finally:
        await store.close()
    assert value(samples(text), "ringcast_db_up") == 0
    assert resp.status_code == 503
    assert resp.json()["code"] == 1200


def test_live_dialer_counters_after_a_broadcast(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    playlist = [{"say": "metrics"}, {"pause": 0.4}]
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        SippUas("uas_answer_late.xml", tmp_path, keys={"rtp_port": rtp_sink}) as late,
        RingcastServer(tmp_path, env={"RINGCAST_SIP_T1": "0.05"}) as rc,
    ):
        before = samples(httpx.get(f"{rc.base}/metrics", timeout=10).text)
        assert value(before, "ringcast_calls_placed_total") == 0
        assert value(before, "ringcast_calls_active") == 0
        assert value(before, "ringcast_sip_retransmissions_total") == 0
        body = {"recipients": [{"to": uas.uri(f"m{i}")} for i in range(3)], "playlist": playlist}
        resp = httpx.post(f"{rc.base}/voice/call/play", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        rc.wait_ready(resp.json()["request_id"], timeout=60)
        # The same prompt again (from the cache), to a callee silent for 300 ms:
        # with T1 = 50 ms the INVITE goes out again at 50 and 150 ms.
        again = {"to": late.uri("m3"), "playlist": playlist}
        resp = httpx.post(f"{rc.base}/voice/call/play", json=again, timeout=30)
        assert resp.status_code == 200, resp.text
        rc.wait_ready(resp.json()["request_id"], timeout=60)
        text = httpx.get(f"{rc.base}/metrics", timeout=10).text
    m = samples(text)
    assert value(m, "ringcast_calls_placed_total") == 4
    assert value(m, "ringcast_calls_by_outcome", outcome="answered") == 4
    assert (value(m, "ringcast_sip_retransmissions_total") or 0) >= 2
    assert (value(m, "ringcast_prompt_cache_hits_total") or 0) >= 1
    assert value(m, "ringcast_queue_depth") == 0
    assert value(m, "ringcast_calls_active") == 0
    assert (value(m, "ringcast_rtp_packets_sent_total") or 0) >= 3 * 20  # 3 x >= 0.4 s
    assert value(m, "ringcast_rtp_late_ticks_total") is not None
    assert (value(m, "ringcast_rtp_clock_ticks_total") or 0) >= 20  # >= 0.4 s of 20 ms ticks
    assert value(m, "ringcast_prompt_builds_total") == 1  # one prompt for both requests
    writes = value(m, "ringcast_db_writes_total") or 0
    assert writes >= 4 * 3  # per call at least: setup, answered, final
    assert 1 <= (value(m, "ringcast_db_write_batches_total") or 0) <= writes


def test_strangers_and_flood_drops_are_counted(tmp_path: Path) -> None:
    """`ringcast serve` answers a stranger's OPTIONS statelessly until its source's
    bucket is empty, then drops them; /metrics counts both."""
    env = {"RINGCAST_SIP_FLOOD_RATE": "0.01", "RINGCAST_SIP_FLOOD_BURST": "2"}
    with (
        RingcastServer(tmp_path, env=env) as rc,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
    ):
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(5)
        port = probe.getsockname()[1]
        for n in range(5):
            probe.sendto(
                (
                    f"OPTIONS sip:x@127.0.0.1:{rc.sip_port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-m{n}\r\n"
                    f"From: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:x@127.0.0.1>\r\n"
                    f"Call-ID: metrics-{n}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", rc.sip_port),
            )
        answers = [probe.recv(65535) for _ in range(2)]  # the burst is answered
        for _ in range(50):  # bounded: the endpoint may still be reading the other three
            m = samples(httpx.get(f"{rc.base}/metrics", timeout=10).text)
            if value(m, "ringcast_sip_flood_dropped_total") == 3:
                break
            time.sleep(0.1)
    assert all(a.startswith(b"SIP/2.0 200 ") for a in answers)
    assert all(b"User-Agent" not in a and b"Server:" not in a for a in answers)
    assert value(m, "ringcast_sip_stateless_answers_total") == 2
    assert value(m, "ringcast_sip_flood_dropped_total") == 3
