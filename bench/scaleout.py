"""Bench: completed calls per minute with 1 and with 2 `ringcast dialer`
processes sharing one PostgreSQL, in the same run (the ratio is the figure).

Each run: a fresh database, one `ringcast api`, N dialers, SIPp answering on
127.0.0.1, a broadcast of --calls recipients with a short playlist; the rate
is measured over the calls completed between the first and the last INVITE.

Usage: .venv/bin/python bench/scaleout.py [--calls 2000] [--pause 0.5] [--max-calls 200] [--cps 200]
       [--rounds 3]
Only 127.0.0.1 is used; every process is started and stopped by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from accepted import accepted  # noqa: E402
from e2e.server import RingcastServer  # noqa: E402
from sipp import SippUas  # noqa: E402

PG_ADMIN = os.environ.get("RINGCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run(n_dialers: int, args: argparse.Namespace) -> float:
    name = "ringcast_bench_" + uuid.uuid4().hex[:8]
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    db = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    work = Path(tempfile.mkdtemp(prefix="ringcast-scaleout-"))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    env = {"RINGCAST_LOG_LEVEL": "warning"}
    dargs = ["--max-calls", str(args.max_calls), "--cps", str(args.cps)]
    procs: list[RingcastServer] = []
    try:
        with SippUas("uas_answer.xml", work, keys={"rtp_port": str(sink.getsockname()[1])}) as uas:
            api = RingcastServer(work, db=db, command="api", env=env).start()
            procs.append(api)
            for i in range(n_dialers):
                # RTP ports for every call a dialer may hold (RingcastServer's default
                # range has 100 pairs), and no two dialers sharing one
                lo = 30000 + i * 4 * args.max_calls
                ports = ["--rtp-ports", f"{lo}-{lo + 4 * args.max_calls - 1}"]
                procs.append(
                    RingcastServer(work, db=db, command="dialer", args=dargs + ports).start()
                )
            r = httpx.post(
                f"{api.base}/voice/call/play",
                timeout=60,
                json={
                    "recipients": [{"to": uas.uri(f"s{i}")} for i in range(args.calls)],
                    "from": "bench",
                    "playlist": [{"pause": args.pause}],
                },
            )
            rid = accepted(r)
            status = api.wait_ready(rid, timeout=600)
            lines = httpx.get(
                f"{api.base}/report/{status['report']['id']}",
                params={"format": "ndjson"},
                timeout=60,
            ).text.splitlines()
            failed = sum(json.loads(line)["result"] != "completed" for line in lines if line)
            times = uas.invite_times()
            span = (times[-1] - times[0]).total_seconds() + args.pause
            done = len(times)
    finally:
        for p in reversed(procs):
            p.stop()
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    per_min = done / span * 60
    print(
        f"  {n_dialers} dialer(s): {done} calls in {span:.1f} s = {per_min:,.0f} calls/min"
        f" ({failed} not completed)"
    )
    return per_min


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--pause", type=float, default=0.5)
    ap.add_argument("--max-calls", type=int, default=200)
    ap.add_argument("--cps", type=float, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="alternating 1- and 2-dialer runs")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; PostgreSQL at 127.0.0.1:5432; SIPp callee"
    )
    # Alternate the two set-ups round by round, so that a change in the
    # machine's speed during the run (a shared VM drifts) hits both alike.
    ratios = []
    for r in range(args.rounds):
        one = run(1, args)
        two = run(2, args)
        ratios.append(two / one)
        print(f"  round {r + 1}: ratio {two / one:.2f}x")
    print(
        f"scale-out ratio 2 dialers / 1 dialer: median {statistics.median(ratios):.2f}x over "
        f"{len(ratios)} rounds (min {min(ratios):.2f}x, max {max(ratios):.2f}x; target >= 1.7x)"
    )


if __name__ == "__main__":
    main()
