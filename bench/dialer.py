"""End-to-end dialer benchmarks through `ringcast serve`, SIPp answering on 127.0.0.1.

(a) concurrency: N calls that each stream 30 s of audio; N steps up until the
    p99 inter-packet gap seen by the receiver exceeds 25 ms or the ringcast
    process saturates a core. Printed per N: ringcast CPU % (of one core) and
    CPU % per call over a steady window, p50/p99 gap of sampled streams.
(b) setups: short calls for --seconds (default 60) at up to --cps: completed
    calls per second sustained, and ringcast CPU seconds per 1,000 calls.

RTP of SAMPLED streams goes to one sink port (SIPp's SDP answer names it),
where a receiver process timestamps it; the other streams go to a socket
nobody reads (a second SIPp names it), so the receiver does not compete for
a core with the process measured.

    .venv/bin/python bench/dialer.py concurrency --n 250,500,1000,1500
    .venv/bin/python bench/dialer.py setups --seconds 60 --cps 800  # more than it can: capacity
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from e2e.server import RingcastServer  # noqa: E402
from sipp import SippUas  # noqa: E402

SAMPLED = 100  # streams whose packet gaps are measured
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def receiver(sock_fd: int, conn: Connection) -> None:
    """Timestamp packets of the first SAMPLED SSRCs while told to; report gaps."""
    sock = socket.socket(fileno=sock_fd)
    sock.settimeout(0.2)
    last: dict[bytes, float] = {}
    gaps: list[float] = []
    measuring = False
    while True:
        if conn.poll():
            cmd = conn.recv()
            if cmd == "start":
                measuring, gaps, last = True, [], {}
            elif cmd == "stop":
                conn.send(gaps)
                measuring = False
            elif cmd == "quit":
                return
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        if not measuring or len(data) < 12:
            continue
        ssrc = data[8:12]
        now = time.monotonic()
        prev = last.get(ssrc)
        if prev is None:
            if len(last) < SAMPLED:
                last[ssrc] = now
            continue
        gaps.append(now - prev)
        last[ssrc] = now


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def concurrency(
    args: argparse.Namespace, work: Path, sink: socket.socket, pipe: Connection
) -> None:
    for n in [int(x) for x in args.n.split(",")]:
        rc_args = [
            "--max-calls",
            str(n),
            "--cps",
            "200",
            "--rtp-ports",
            f"20000-{20000 + 4 * n + 400}",
        ]
        env = {"RINGCAST_LOG_LEVEL": "warning"}
        # The SAMPLED streams go to the receiver; the others to a socket nobody
        # reads (the kernel drops them), so that the measuring process does not
        # spend a core reading packets it would not time anyway.
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead,
            SippUas(
                "uas_answer.xml", work, keys={"rtp_port": str(sink.getsockname()[1])}, trace=False
            ) as timed,
            SippUas(
                "uas_answer.xml", work, keys={"rtp_port": str(bound(dead))}, trace=False
            ) as other,
            RingcastServer(work, db=f"sqlite:///{work}/c{n}.db", args=rc_args, env=env) as rc,
        ):
            r = httpx.post(
                f"{rc.base}/voice/call/play",
                timeout=60,
                json={
                    "recipients": [
                        {"to": (timed if i < SAMPLED else other).uri(f"c{i}")} for i in range(n)
                    ],
                    "from": "bench",
                    "playlist": [{"pause": 30}],
                },
            )
            rid = r.json()["request_id"]
            time.sleep(n / 200 + 3)  # ramp at 200 calls/s, then settle
            pid = rc.proc.pid  # type: ignore[union-attr]
            pipe.send("start")
            m0 = clock_counters(rc.base)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.window)
            c1, t1 = cpu_seconds(pid), time.monotonic()
            m1 = clock_counters(rc.base)
            pipe.send("stop")
            gaps = pipe.recv()
            httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=30)
            cpu = (c1 - c0) / (t1 - t0) * 100
            p50, p99 = pct(gaps, 0.5) * 1000, pct(gaps, 0.99) * 1000
            print(
                f"  N={n:5d}: ringcast CPU {cpu:5.1f}% of a core, {cpu / n:.3f}% per call; "
                f"gap p50 {p50:.1f} ms p99 {p99:.1f} ms ({len(gaps)} gaps sampled); sender: "
                f"{late_share(m0, m1):.1f}% of clock ticks late (> 5 ms)",
                flush=True,
            )
            if p99 > 25 or cpu > 95:
                print(f"  stop: {'p99 gap > 25 ms' if p99 > 25 else 'core saturated'} at N={n}")
                return


def bound(sock: socket.socket) -> int:
    """Bind `sock` to a free port on 127.0.0.1 and return the port."""
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])


def setups(args: argparse.Namespace, work: Path, sink: socket.socket) -> None:
    total = int(args.cps * args.seconds * 1.2)
    rc_args = ["--max-calls", "2000", "--cps", str(args.cps), "--rtp-ports", "20000-29999"]
    env = {"RINGCAST_LOG_LEVEL": "warning"}
    with (
        SippUas(
            "uas_answer.xml", work, keys={"rtp_port": str(sink.getsockname()[1])}, trace=False
        ) as uas,
        RingcastServer(work, db=f"sqlite:///{work}/s.db", args=rc_args, env=env) as rc,
    ):
        r = httpx.post(
            f"{rc.base}/voice/call/play",
            timeout=120,
            json={
                "recipients": [{"to": uas.uri(f"s{i}")} for i in range(total)],
                "from": "bench",
                "playlist": [{"pause": 0.2}],
            },
        )
        rid = r.json()["request_id"]

        def done() -> int:
            s = httpx.get(f"{rc.base}/voice/call/status/{rid}", timeout=30).json()
            return int(s["report"]["done"])

        time.sleep(3)
        pid = rc.proc.pid  # type: ignore[union-attr]
        d0, c0, t0 = done(), cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        d1, c1, t1 = done(), cpu_seconds(pid), time.monotonic()
        batching = writes_per_batch(httpx.get(f"{rc.base}/metrics", timeout=30).text)
        httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=30)
    rate = (d1 - d0) / (t1 - t0)
    print(
        f"  setups: {rate:,.0f} completed calls/s sustained over {t1 - t0:.0f} s "
        f"(asked --cps {args.cps}); ringcast CPU {(c1 - c0) / max(1, d1 - d0) * 1000:.2f} s "
        f"per 1,000 calls (target >= 500 setups/s); {batching:.1f} call writes per "
        f"database transaction"
    )


def metric_values(metrics: str) -> dict[str, float]:
    """Unlabelled samples of a /metrics text."""
    found = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            found[name] = float(value)
    return found


def writes_per_batch(metrics: str) -> float:
    found = metric_values(metrics)
    return found["ringcast_db_writes_total"] / max(1.0, found["ringcast_db_write_batches_total"])


def clock_counters(base: str) -> dict[str, float]:
    return metric_values(httpx.get(f"{base}/metrics", timeout=30).text)


def late_share(before: dict[str, float], after: dict[str, float]) -> float:
    """Percent of the RTP clock's ticks in the window that started late."""
    ticks = "ringcast_rtp_clock_ticks_total"
    late = "ringcast_rtp_late_ticks_total"
    return (after[late] - before[late]) / max(1.0, after[ticks] - before[ticks]) * 100


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("concurrency")
    c.add_argument("--n", default="250,500,1000,1500")
    c.add_argument("--window", type=float, default=8.0)
    s = sub.add_parser("setups")
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--cps", type=float, default=800.0)  # more than one process does
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; SIPp callee and the RTP receiver share these cores"
    )
    work = Path(tempfile.mkdtemp(prefix="ringcast-bench-"))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sink.bind(("127.0.0.1", 0))
    parent, child = mp.Pipe()
    proc = mp.Process(target=receiver, args=(sink.fileno(), child), daemon=True)
    proc.start()
    try:
        if args.mode == "concurrency":
            concurrency(args, work, sink, parent)
        else:
            setups(args, work, sink)
    finally:
        parent.send("quit")
        proc.join(timeout=5)
        sink.close()
        shutil.rmtree(work, ignore_errors=True)  # the benchmark's databases and logs


if __name__ == "__main__":
    main()
