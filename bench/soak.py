"""Soak: many short calls through `ringcast serve` while one long call streams.

Issue 14's targets, measured in one run against SIPp on 127.0.0.1:

- the long call's RTP: max and p99 packet gap during the soak, against the same
  call's gaps in a quiet window before the soak starts (the baseline);
- RSS of the server after the first --checkpoint calls and after all of them
  (target: within 50 MB);
- the cyclic garbage collector: pauses over 20 ms and objects found in cycles
  (``ringcast_gc_*`` in /metrics, measured in the server with gc.callbacks).

    .venv/bin/python bench/soak.py                         # 50,000 calls at --cps 300
    .venv/bin/python bench/soak.py --calls 5000 --cps 200  # a quick look
    .venv/bin/python bench/soak.py --gc-thresholds 700,10,10  # another GC policy

Every loop is bounded: the soak stops at --calls completed calls or at
--max-seconds, whichever comes first; SIPp and the server are ended by PID.
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
sys.path.insert(0, str(ROOT / "bench"))

from dialer import metric_values, pct, receiver  # noqa: E402
from e2e.server import RingcastServer  # noqa: E402
from sipp import SippUas  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gc_figures(base: str) -> dict[str, float]:
    """The server's ringcast_gc_* figures: counters, and the pause histogram's buckets."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found = metric_values(text)
    out = {
        "long": found.get("ringcast_gc_long_pauses_total", 0.0),
        "long_cpu": found.get("ringcast_gc_long_cpu_pauses_total", 0.0),
        "collected": found.get("ringcast_gc_collected_objects_total", 0.0),
    }
    for line in text.splitlines():
        if line.startswith('ringcast_gc_collections_total{generation="2"}'):
            out["full"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ringcast_gc_pause_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[f"le {bound}"] = float(line.rsplit(" ", 1)[1])
    return out


def longest_between(before: dict[str, float], after: dict[str, float]) -> str:
    """The smallest histogram bound that holds every pause of the window."""
    total = after.get("le +Inf", 0.0) - before.get("le +Inf", 0.0)
    bounds = sorted((float(k[3:]), k) for k in after if k.startswith("le ") and k != "le +Inf")
    for value, key in bounds:
        if after[key] - before.get(key, 0.0) >= total:
            return f"<= {value * 1e3:g} ms"
    return "> 5 s"


def policy_env(thresholds: str, work: Path) -> dict[str, str]:
    """Environment for a server whose ``ringcast.heap`` thresholds are ``thresholds``
    ("gen0,gen1,gen2"), to compare GC policies on the same code: a bench-only
    ``sitecustomize`` sets them before ``heap.settle`` reads them."""
    gen0, gen1, gen2 = (int(v) for v in thresholds.split(","))
    site = work / f"gc-{gen0}-{gen1}-{gen2}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import ringcast.heap as h\n"
        f"h.GEN0_THRESHOLD, h.GEN1_THRESHOLD, h.GEN2_THRESHOLD = {gen0}, {gen1}, {gen2}\n"
    )
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{site}{os.pathsep}{path}" if path else str(site)}


def soak(args: argparse.Namespace, work: Path, sink: socket.socket, pipe: Connection) -> None:
    rc_args = ["--max-calls", "2000", "--cps", str(args.cps), "--rtp-ports", "20000-29999"]
    env = {"RINGCAST_LOG_LEVEL": "warning"}
    if args.gc_thresholds:
        env.update(policy_env(args.gc_thresholds, work))
        print(f"  server GC thresholds {args.gc_thresholds} (ringcast.heap, set for this run)")
    sink_port = str(sink.getsockname()[1])
    with (
        SippUas("uas_answer.xml", work, keys={"rtp_port": sink_port}, trace=False) as long_uas,
        SippUas("uas_answer_load.xml", work, trace=False) as uas,
        RingcastServer(work, db=f"sqlite:///{work}/soak.db", args=rc_args, env=env) as rc,
    ):
        pid = rc.proc.pid  # type: ignore[union-attr]
        http = httpx.Client(base_url=rc.base, timeout=120)
        long_call = http.post(
            "/voice/call/play",
            json={
                "to": long_uas.uri("long"),
                "from": "soak",
                "playlist": [{"pause": 300}] * 10,  # outlasts any soak --max-seconds allows
            },
        ).json()["request_id"]
        time.sleep(3)
        pipe.send("start")
        time.sleep(args.quiet)
        pipe.send("stop")
        quiet = pipe.recv()
        pipe.send("start")
        rss_idle = rss_mb(pid)
        cpu_start = cpu_seconds(pid)
        load_start = os.getloadavg()[0]
        gc0 = gc_figures(rc.base)
        started = time.monotonic()
        rid = http.post(
            "/voice/call/play",
            json={
                "recipients": [{"to": uas.uri(f"s{i}")} for i in range(args.calls)],
                "from": "soak",
                "playlist": [{"pause": 0.2}],
            },
        ).json()["request_id"]

        slow_polls: list[str] = []

        def done() -> int:
            t0 = time.monotonic()
            n = int(http.get(f"/voice/call/status/{rid}").json()["report"]["done"])
            took = time.monotonic() - t0
            if took > 0.02:
                slow_polls.append(f"{took * 1e3:.0f} ms at {t0 - started:.1f} s")
            return n

        rss_checkpoint = None
        n = 0
        while time.monotonic() - started < args.max_seconds:
            n = done()
            if rss_checkpoint is None and n >= args.checkpoint:
                rss_checkpoint = rss_mb(pid)
                print(
                    f"  {n:,} calls done at {time.monotonic() - started:.0f} s: RSS "
                    f"{rss_checkpoint:.0f} MB (idle {rss_idle:.0f} MB)",
                    flush=True,
                )
            if n >= args.calls:
                break
            time.sleep(args.poll)
        elapsed = time.monotonic() - started
        rss_end = rss_mb(pid)
        cpu = cpu_seconds(pid) - cpu_start
        gc1 = gc_figures(rc.base)
        pipe.send("stop")
        loaded = pipe.recv()
        http.delete(f"/voice/call/{rid}")
        http.delete(f"/voice/call/{long_call}")
    rate = n / elapsed
    print(
        f"  soak: {n:,} calls in {elapsed:.0f} s = {rate:,.0f} calls/s (asked --cps {args.cps}); "
        f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"  server CPU: {cpu:.1f} s = {cpu / max(1, n) * 1e3:.2f} ms per call")
    print(
        f"  long call RTP gaps, quiet baseline: p99 {pct(quiet, 0.99) * 1e3:.1f} ms, "
        f"max {max(quiet, default=0) * 1e3:.1f} ms over {len(quiet):,} packets"
    )
    print(
        f"  long call RTP gaps during the soak: p99 {pct(loaded, 0.99) * 1e3:.1f} ms, "
        f"max {max(loaded, default=0) * 1e3:.1f} ms over {len(loaded):,} packets "
        "(target max <= 60 ms)"
    )
    at, worst = 0.0, []
    for gap in loaded:  # the gaps in arrival order: their running sum is when each ended
        at += gap
        if gap > 0.04:
            worst.append(f"{gap * 1e3:.0f} ms at {at:.1f} s")
    if worst:
        print(
            f"  gaps over 40 ms ({len(worst)}), seconds after the soak's POST: "
            + ", ".join(worst[:12])
        )
    if slow_polls:
        print(f"  status polls over 20 ms ({len(slow_polls)}): " + ", ".join(slow_polls[:12]))
    if rss_checkpoint is not None:
        print(
            f"  RSS after {args.checkpoint:,} calls {rss_checkpoint:.0f} MB, after {n:,} "
            f"{rss_end:.0f} MB: +{rss_end - rss_checkpoint:.0f} MB (target <= 50 MB)"
        )
    found = gc1["collected"] - gc0["collected"]
    print(
        f"  GC during the soak: {gc1.get('full', 0) - gc0.get('full', 0):.0f} full collections, "
        f"{gc1['long'] - gc0['long']:.0f} pauses over 20 ms (target 0), longest "
        f"{longest_between(gc0, gc1)}; {found:,.0f} objects found in cycles = "
        f"{found / max(1, n):.2f} per call"
    )
    print(
        f"  of those, {gc1['long_cpu'] - gc0['long_cpu']:.0f} took over 20 ms of CPU themselves "
        "(the rest of a long pause is time the server waited for a core)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--checkpoint", type=int, default=5_000)
    ap.add_argument("--cps", type=float, default=300.0)
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between status polls")
    ap.add_argument("--quiet", type=float, default=10.0, help="seconds of baseline")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument(
        "--gc-thresholds",
        default="",
        help="gen0,gen1,gen2 for the server's ringcast.heap policy instead of its own",
    )
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; SIPp callees and the RTP receiver share these cores"
    )
    work = Path(tempfile.mkdtemp(prefix="ringcast-soak-"))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    parent, child = mp.Pipe()
    proc = mp.Process(target=receiver, args=(sink.fileno(), child), daemon=True)
    proc.start()
    try:
        soak(args, work, sink, parent)
    finally:
        parent.send("quit")
        proc.join(timeout=5)
        sink.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
