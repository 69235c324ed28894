"""Bench: a POST of 1,000,000 bare recipients (and 100,000) to a real `ringcast api`:
seconds to the 200, the API process's CPU seconds for the POST (user + system,
from /proc: steadier than wall time on a shared machine) and its peak RSS
(VmHWM), on SQLite and PostgreSQL. The calls are scheduled for 2099 (never dialed).

Usage: .venv/bin/python bench/big_post.py [--sizes 100000,1000000] [--backends sqlite,postgresql]
       [--repeat N]
Only 127.0.0.1 is used. PostgreSQL: a scratch database on 127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from intake_report import PG_ADMIN, Api, body, peak_rss_mb


async def pg_database() -> tuple[str, str]:
    name = f"bigpost_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


async def pg_drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every backend and size")
    args = parser.parse_args()
    print(f"# bench/big_post.py on {platform.node()}, load {os.getloadavg()}")
    rounds = [
        (backend, int(n))
        for _ in range(args.repeat)
        for backend in args.backends.split(",")
        for n in args.sizes.split(",")
    ]
    for backend, n in rounds:
        with tempfile.TemporaryDirectory() as tmp:
            name = None
            if backend == "sqlite":
                db = f"sqlite:///{tmp}/ringcast.db"
            else:
                db, name = asyncio.run(pg_database())
            api = Api(db, Path(tmp), max_recipients=max(n, 100_000))
            try:
                payload = json.dumps(body(n)).encode()
                idle = peak_rss_mb(api.proc.pid)
                cpu0 = cpu_seconds(api.proc.pid)
                t0 = time.perf_counter()
                r = httpx.post(
                    api.base + "/voice/call/play",
                    content=payload,
                    headers={"content-type": "application/json"},
                    timeout=600,
                )
                took = time.perf_counter() - t0
                cpu = cpu_seconds(api.proc.pid) - cpu0
                assert r.status_code == 200, r.text[:300]
                peak = peak_rss_mb(api.proc.pid)
            finally:
                api.stop()
                if name is not None:
                    asyncio.run(pg_drop(name))
            print(
                f"{backend:10} POST {n:>9,} recipients ({len(payload) / 1e6:.0f} MB):"
                f" {took:.2f} s to the 200 (API CPU {cpu:.2f} s), API peak RSS {peak:.0f} MB"
                f" (idle {idle:.0f} MB), load {os.getloadavg()[0]:.1f}"
            )


if __name__ == "__main__":
    main()
