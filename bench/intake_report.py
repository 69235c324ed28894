"""Bench (c) intake and (d) report, through a real `ringcast api` process.

(c) POST /voice/call/play with N recipients (default 100,000): seconds until
    the 200 (the request and all its calls committed), on SQLite and
    PostgreSQL. Baseline in the same run: a bare SQLAlchemy executemany of the
    same N call rows into the same database (the floor the API stands on).
(d) GET /report/{id}?format=ndjson of M records (default 1,000,000): records/s
    and the API process's peak RSS (VmHWM). The M calls are POSTed first (that
    intake's time is printed too); the report is then read from a freshly started
    API process, so its peak RSS is the report's, not the 1M-recipient POST's.
    The client counts newlines in the raw bytes (no per-line Python work on the
    client side). Baseline: the same rows read by a bare streaming SELECT.

Usage: .venv/bin/python bench/intake_report.py [--n 100000] [--m 1000000]
       [--backends sqlite,postgresql]
Only 127.0.0.1 is used. PostgreSQL: a scratch database on 127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

from ringcast.store.db import open_store
from ringcast.store.models import calls_table, requests_table

PG_ADMIN = os.environ.get("RINGCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Api:
    def __init__(self, db: str, workdir: Path, max_recipients: int) -> None:
        self.port = free_tcp_port()
        env = {
            **os.environ,
            "RINGCAST_MAX_RECIPIENTS": str(max_recipients),
            "RINGCAST_MAX_BODY_BYTES": str(200 * 1024 * 1024),
            "RINGCAST_LOG_LEVEL": "warning",
        }
        exe = str(Path(sys.executable).parent / "ringcast")
        self.proc = subprocess.Popen(
            [exe, "api", "--db", db, "--http", f"127.0.0.1:{self.port}"],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("ringcast api did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def body(n: int) -> dict[str, object]:
    return {
        "recipients": [{"to": f"sip:{100000 + i}@127.0.0.1:5060"} for i in range(n)],
        "from": "me",
        "playlist": [{"play": "https://example.org/hello.wav"}],
        "schedule": {"not_before": "2099-01-01T00:00:00Z"},  # never dialed
    }


async def baseline_insert(db: str, n: int) -> float:
    store = open_store(db)
    rid = str(uuid.uuid4())
    now = time.time()
    from ringcast.domain import utcnow

    t0 = time.perf_counter()
    async with store.session() as s, s.begin():
        await s.execute(
            sa.insert(requests_table).values(
                id=rid,
                tenant="bench",
                created_at=utcnow(),
                body={},
                total=n,
                report_id=str(uuid.uuid4()),
                body_hash="x",
            )
        )
        ts = utcnow()
        rows = [
            {
                "id": str(uuid.uuid4()),
                "request_id": rid,
                "seq": i,
                "to_uri": f"sip:{i}@127.0.0.1",
                "from_uri": "me",
                "request_time": ts,
                "not_before": ts,
                "updated_at": ts,
                "result": "canceled",
            }
            for i in range(n)
        ]
        for k in range(0, n, 5000):
            await s.execute(sa.insert(calls_table), rows[k : k + 5000])
    elapsed = time.perf_counter() - t0
    await store.close()
    del now
    return elapsed


async def baseline_select(db: str, request_id: str) -> tuple[int, float]:
    store = open_store(db)
    t0 = time.perf_counter()
    count = 0
    async with store.engine.connect() as conn:
        result = await conn.stream(
            sa.select(calls_table)
            .where(calls_table.c.request_id == request_id)
            .order_by(calls_table.c.seq)
            .execution_options(yield_per=2000)
        )
        async for _ in result:
            count += 1
    elapsed = time.perf_counter() - t0
    await store.close()
    return count, elapsed


def run_backend(name: str, db: str, workdir: Path, n: int, m: int) -> None:
    asyncio.run(open_and_migrate(db))
    api = Api(db, workdir, max(n, m))
    try:
        payload = httpx.Request("POST", "http://x", json=body(n)).content
        with httpx.Client(timeout=600) as client:
            t0 = time.perf_counter()
            r = client.post(
                api.base + "/voice/call/play",
                content=payload,
                headers={"content-type": "application/json"},
            )
            intake = time.perf_counter() - t0
            assert r.status_code == 200, r.text[:300]
        floor = asyncio.run(baseline_insert(db, n))
        print(
            f"[{name}] (c) intake: POST {n:,} recipients -> 200 in {intake:.2f} s "
            f"({n / intake:,.0f} recipients/s); bare executemany {floor:.2f} s; "
            f"ratio {intake / floor:.2f}x  (target <= 2 s)"
        )

        big = payload if m == n else httpx.Request("POST", "http://x", json=body(m)).content
        del payload
        with httpx.Client(timeout=1200) as client:
            t0 = time.perf_counter()
            resp = client.post(
                api.base + "/voice/call/play",
                content=big,
                headers={"content-type": "application/json"},
            )
            big_intake = time.perf_counter() - t0
            assert resp.status_code == 200, resp.text[:300]
            rid = resp.json()["request_id"]
            status = client.get(f"{api.base}/voice/call/status/{rid}").json()
            report_id = status["report"]["id"]
        del big
        intake_rss = peak_rss_mb(api.proc.pid)
        print(
            f"[{name}]     intake of the report's {m:,} recipients: {big_intake:.2f} s "
            f"({m / big_intake:,.0f} recipients/s), API peak RSS {intake_rss:.0f} MB"
        )
        api.stop()
        api = Api(db, workdir, max(n, m))  # a fresh process: the report's own peak RSS
        with httpx.Client(timeout=1200) as client:
            rss_before = peak_rss_mb(api.proc.pid)
            t0 = time.perf_counter()
            lines = 0
            with client.stream(
                "GET", f"{api.base}/report/{report_id}", params={"format": "ndjson"}
            ) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes():
                    lines += chunk.count(b"\n")
            took = time.perf_counter() - t0
        rss = peak_rss_mb(api.proc.pid)
        count, floor_s = asyncio.run(baseline_select(db, rid))
        print(
            f"[{name}] (d) report: {lines:,} NDJSON records in {took:.2f} s = "
            f"{lines / took:,.0f} records/s; API peak RSS {rss:.0f} MB "
            f"(before the report {rss_before:.0f} MB); bare SELECT {count:,} rows in "
            f"{floor_s:.2f} s = {count / floor_s:,.0f} rows/s; ratio {took / floor_s:.2f}x "
            f"(target >= 200,000 records/s under 200 MB)"
        )
    finally:
        api.stop()


async def open_and_migrate(db: str) -> None:
    store = open_store(db)
    await store.migrate()
    await store.close()


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--m", type=int, default=1_000_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    for backend in args.backends.split(","):
        workdir = Path(tempfile.mkdtemp(prefix="ringcast-bench-"))
        try:
            if backend == "sqlite":
                run_backend("sqlite", f"sqlite:///{workdir / 'bench.db'}", workdir, args.n, args.m)
            else:
                name = "ringcast_bench_" + uuid.uuid4().hex[:8]
                asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
                try:
                    run_backend(
                        "postgresql",
                        PG_ADMIN.rsplit("/", 1)[0] + "/" + name,
                        workdir,
                        args.n,
                        args.m,
                    )
                finally:
                    asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
