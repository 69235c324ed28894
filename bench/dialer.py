"""End-to-end dialer benchmarks through `ringcast serve`, SIPp answering on 127.0.0.1.

(a) concurrency: N calls streaming together for 30 s; N steps up until the
    p99 inter-packet gap seen by the receiver exceeds 25 ms or the ringcast
    process saturates a core. Calls are dialed at up to --ramp-cps and each
    streams 30 s plus the time the ramp may take (twice N / --ramp-cps, + 20 s),
    so the first is still streaming when the last starts; the window is
    measured once the process reports N calls active. Printed per N: ringcast
    CPU % (of one core) and CPU % per call over a steady window, p50/p99 gap of
    sampled streams, and CPU us per packet against a baseline measured in the
    same run: a bare `send` of one packet from a tight loop.
(b) setups: short calls for --seconds (default 60) at up to --cps: answered and
    completed calls per second sustained (failed, canceled, busy calls are not
    counted), and ringcast CPU seconds per 1,000 such calls against a baseline
    measured in the same run: the SIP engine alone (bench/sip_setup.py:
    signalling only, no media, database or HTTP). --rounds alternate the two.
(c) memory: the RSS of `ringcast serve` idle (after a few warm-up calls) and with
    N live calls streaming (default 2,000 and 4,000, a fresh server for each N):
    KB per live call = (RSS with N - RSS idle) / N, and the marginal KB per call
    between two N (which leaves out what the first calls load once). Target <= 30.
    --trace: the server runs under tracemalloc (bench/memtrace/sitecustomize.py;
    slower, and its RSS is not the figure): a snapshot idle and one with N live
    calls, and the bytes per live call the second adds, by where they were
    allocated and by the ringcast line that asked for them.

(d) amd (issue 16: "1,000 concurrent calls with detection cost at most 2x the
    CPU of the same calls without it"): N calls (default 1,000) to two SIPp
    callees that answer and stream speech back from the answer on (SIPp
    `rtp_stream`, looped, PCMU): half a human answer, half a machine greeting
    with its beep, both from the AMD corpus (tests/amd_corpus.py). Each call
    plays --message seconds (default 20) of playlist, dialed at up to
    --ramp-cps, so all N are live together. The same calls run with
    `"machine_detection": {"mode": "detect"}` and without it, alternated
    --rounds times, a fresh server each run. Printed per run: ringcast's CPU
    seconds from the POST until every call is final (whole calls: set-up,
    playlist, detection while it listens, teardown), and over the detection
    window alone (the POST to the ramp's end plus the 6 s timeout: every call's
    listening falls in it); the verdicts the records carry. Then the ratios
    detect / none of the medians, whole calls and window.

RTP of SAMPLED streams goes to one sink port (SIPp's SDP answer names it),
where a receiver process timestamps it; the other streams go to a socket
nobody reads (a second SIPp names it), so the receiver does not compete for
a core with the process measured.

    .venv/bin/python bench/dialer.py concurrency  # N = 1000 ... 5000, stops at the limit
    .venv/bin/python bench/dialer.py setups --seconds 30 --rounds 2  # --cps 1500: capacity
    .venv/bin/python bench/dialer.py memory --n 2000,4000
    .venv/bin/python bench/dialer.py memory --n 1000 --trace  # where the bytes are
    .venv/bin/python bench/dialer.py amd --n 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from accepted import accepted  # noqa: E402
from e2e.server import RingcastServer  # noqa: E402
from sipp import SippUas, answer_and_play  # noqa: E402

SAMPLED = 100  # streams whose packet gaps are measured
# RTP ports of the measured server: above the 20000-29199 the e2e tests' servers take
# (tests/e2e/server.py), so a bench beside a test run does not take a test's ports
RTP_LO = 33000
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


def bare_send_cost(streams: int = 3000, rounds: int = 20) -> float:
    """Baseline, same machine and hour: CPU us per `send` of one 172-byte packet on a
    connected UDP socket, from a tight loop over `streams` sockets to a loopback
    socket nobody reads (what the kernel charges the sender; no Python around it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        addr = ("127.0.0.1", bound(dead))
        socks = []
        try:
            for _ in range(streams):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.setblocking(False)
                s.connect(addr)
            sends, pkt = [s.send for s in socks], bytes(172)
            c0 = time.process_time()
            for _ in range(rounds):
                for send in sends:
                    send(pkt)
            return (time.process_time() - c0) / (rounds * streams) * 1e6
        finally:
            for s in socks:
                s.close()


def concurrency(
    args: argparse.Namespace, work: Path, sink: socket.socket, pipe: Connection
) -> None:
    baseline = bare_send_cost()
    print(f"  baseline: a bare send costs {baseline:.2f} CPU us per packet on this machine now")
    for n in [int(x) for x in args.n.split(",")]:
        rc_args = live_calls_args(n, args.ramp_cps)
        env = {"RINGCAST_LOG_LEVEL": "warning"}
        ramp_limit = 2 * n / args.ramp_cps + 20  # seconds the ramp may take (it slows as N grows)
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
            contextlib.ExitStack() as stack,
        ):
            rc = RingcastServer(work, db=f"sqlite:///{work}/c{n}.db", args=rc_args, env=env)
            stack.callback(rc.stop)
            rc.start(timeout=120)  # a loaded machine takes its time to start one
            r = httpx.post(
                f"{rc.base}/voice/call/play",
                timeout=60,
                json={
                    "recipients": [
                        {"to": (timed if i < SAMPLED else other).uri(f"c{i}")} for i in range(n)
                    ],
                    "from": "bench",
                    "playlist": [{"pause": 30 + round(ramp_limit)}],
                },
            )
            rid = accepted(r)
            active = wait_active(rc.base, n, deadline=time.monotonic() + ramp_limit)
            if active < n:
                print(f"  N={n:5d}: only {active} calls active after the ramp; stop")
                print_results(work / f"c{n}.db")
                return
            time.sleep(2)  # settle
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
            sent = m1["ringcast_rtp_packets_sent_total"] - m0["ringcast_rtp_packets_sent_total"]
            per_packet = (c1 - c0) / max(1.0, sent) * 1e6
            print(
                f"  N={n:5d}: ringcast CPU {cpu:5.1f}% of a core, {cpu / n:.3f}% per call; "
                f"gap p50 {p50:.1f} ms p99 {p99:.1f} ms ({len(gaps)} gaps sampled); sender: "
                f"{late_share(m0, m1):.1f}% of clock ticks late (> 5 ms); "
                f"{per_packet:.2f} CPU us per packet sent = {per_packet / baseline:.1f}x "
                f"the bare send",
                flush=True,
            )
            if p99 > 25 or cpu > 95:
                print(f"  stop: {'p99 gap > 25 ms' if p99 > 25 else 'core saturated'} at N={n}")
                return


def live_calls_args(n: int, cps: int) -> list[str]:
    """`ringcast serve` flags for N live calls dialed at up to `cps`: N channels, and
    RTP ports above the e2e tests' (RTP_LO), two per call and some spare."""
    return [
        "--max-calls",
        str(n),
        "--cps",
        str(cps),
        "--rtp-ports",
        f"{RTP_LO}-{RTP_LO + 4 * n + 400}",
    ]


def rss_kb(pid: int) -> int:
    """Resident set size of `pid` in KB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def memory(args: argparse.Namespace, work: Path, sink: socket.socket) -> None:
    """RSS idle against RSS with N live calls (see the module docstring, (c))."""
    per_n: dict[int, tuple[int, int]] = {}
    for n in [int(x) for x in args.n.split(",")]:
        rc_args = live_calls_args(n, args.ramp_cps)
        env = {"RINGCAST_LOG_LEVEL": "warning"}
        if args.trace:
            trace_dir = work / f"trace-{n}"
            trace_dir.mkdir()
            path = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = str(ROOT / "bench" / "memtrace") + (f":{path}" if path else "")
            env["RINGCAST_BENCH_TRACEMALLOC"] = str(trace_dir)
        ramp_limit = args.ramp_limit  # seconds: a loaded machine ramps slowly, RSS does not care
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead,
            SippUas(
                "uas_answer.xml", work, keys={"rtp_port": str(bound(dead))}, trace=False
            ) as uas,
            contextlib.ExitStack() as stack,
        ):
            rc = RingcastServer(work, db=f"sqlite:///{work}/m{n}.db", args=rc_args, env=env)
            stack.callback(rc.stop)
            rc.start(timeout=120)  # a loaded machine takes its time to start one
            pid = rc.proc.pid  # type: ignore[union-attr]
            warm = accepted(
                httpx.post(
                    f"{rc.base}/voice/call/play",
                    timeout=60,
                    json={
                        "recipients": [{"to": uas.uri(f"w{i}")} for i in range(20)],
                        "from": "bench",
                        "playlist": [{"pause": 1}],
                    },
                )
            )
            wait_done(rc.base, warm, 20, deadline=time.monotonic() + 60)
            time.sleep(3)
            idle = rss_kb(pid)
            if args.trace:
                idle_snap = snapshot(pid, trace_dir, 0)
            r = httpx.post(
                f"{rc.base}/voice/call/play",
                timeout=60,
                json={
                    "recipients": [{"to": uas.uri(f"m{i}")} for i in range(n)],
                    "from": "bench",
                    "playlist": [{"pause": 10 + round(ramp_limit)}],
                },
            )
            rid = accepted(r)
            active = wait_active(rc.base, n, deadline=time.monotonic() + ramp_limit)
            time.sleep(3)  # settle: every call streaming
            live = rss_kb(pid)
            if args.trace:
                print_trace(idle_snap, snapshot(pid, trace_dir, 1), active)
            with contextlib.suppress(httpx.HTTPError):  # the server stops anyway
                httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=120)
        if active < 0.75 * n:  # a loaded machine fails some setups: count the live ones
            print(f"  N={n:5d}: only {active} calls active after the ramp; stop")
            return
        per_n[active] = (idle, live)
        print(
            f"  N={n:5d}: RSS idle {idle / 1024:.0f} MB, with {active} live calls "
            f"{live / 1024:.0f} MB: {(live - idle) / active:.1f} KB per live call "
            "(target <= 30)",
            flush=True,
        )
    ns = sorted(per_n)
    for a, b in zip(ns, ns[1:], strict=False):
        grow = (per_n[b][1] - per_n[b][0]) - (per_n[a][1] - per_n[a][0])
        print(f"  marginal {a} -> {b}: {grow / (b - a):.1f} KB per live call")


def snapshot(pid: int, trace_dir: Path, k: int) -> tracemalloc.Snapshot:
    """Have the traced server write its k-th snapshot (SIGUSR1) and load it."""
    os.kill(pid, signal.SIGUSR1)
    done = trace_dir / f"snap-{k}.done"
    deadline = time.monotonic() + 300
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no tracemalloc snapshot from {pid}")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(trace_dir / f"snap-{k}.pickle"))


def _where(frame: tracemalloc.Frame) -> str:
    """A frame's file, from its package on (ringcast/sip/call.py, asyncio/locks.py)."""
    parts = Path(frame.filename).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("ringcast", "asyncio", "aiosipua") or parts[i].startswith("python3"):
            return "/".join(parts[i:] if parts[i] != "python3.11" else parts[i + 1 :])
    return "/".join(parts[-2:])


def print_trace(idle: tracemalloc.Snapshot, live: tracemalloc.Snapshot, calls: int) -> None:
    """Bytes per live call the live snapshot adds, by the file that allocated them
    and by the innermost ringcast line on their stack."""
    by_file: dict[str, int] = defaultdict(int)
    by_caller: dict[str, int] = defaultdict(int)
    total = 0
    for diff in live.compare_to(idle, "traceback"):
        if not diff.size_diff:
            continue
        total += diff.size_diff
        frames = list(reversed(diff.traceback))  # most recent call first
        by_file[_where(frames[0])] += diff.size_diff
        ours = next((f for f in frames if "/ringcast/" in f.filename), None)
        caller = f"{_where(ours)}:{ours.lineno}" if ours is not None else "(no ringcast frame)"
        by_caller[caller + f" -> {_where(frames[0])}"] += diff.size_diff
    print(f"  traced: {total / calls:,.0f} bytes per live call ({calls} live calls)")
    for title, table in (("allocated in", by_file), ("asked for by", by_caller)):
        print(f"    {title}:")
        for key, size in sorted(table.items(), key=lambda kv: -kv[1])[:40]:
            print(f"      {size / calls:8,.0f}  {key}")


def wait_done(base: str, rid: str, n: int, deadline: float) -> None:
    """Poll a request's report until `n` calls are done or `deadline`."""
    while time.monotonic() < deadline:
        s = httpx.get(f"{base}/voice/call/status/{rid}", timeout=30).json()
        if int(s["report"]["done"]) >= n:
            return
        time.sleep(0.5)


def print_results(db: Path) -> None:
    """How the calls of a run stand, from its SQLite database (why N was not reached)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT result, error, count(*) FROM calls GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 8"
        ).fetchall()
    for result, error, count in rows:
        print(f"    {count:6d} {result} {error or ''}")


def wait_active(base: str, n: int, deadline: float) -> int:
    """Poll /metrics until `n` calls are active or `deadline`; return the last count."""
    active = 0
    while time.monotonic() < deadline:
        active = int(clock_counters(base).get("ringcast_calls_active", 0))
        if active >= n:
            break
        time.sleep(0.5)
    return active


def bound(sock: socket.socket) -> int:
    """Bind `sock` to a free port on 127.0.0.1 and return the port."""
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])


def engine_baseline() -> tuple[float, float]:
    """Baseline, same machine and hour: (setups/s, CPU s per 1,000 calls) of the SIP
    engine alone, bench/sip_setup.py: INVITE/200/ACK/BYE/200 to SIPp, no media,
    no database, no HTTP."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sip_setup.py"), "--calls", "3000"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    rate = re.search(r"^setups/s\s+([\d.]+)", out, re.M)
    cpu = re.search(r"^CPU s per 1000 calls\s+([\d.]+)", out, re.M)
    if rate is None or cpu is None:
        raise RuntimeError(f"bench/sip_setup.py printed no figures:\n{out}")
    return float(rate.group(1)), float(cpu.group(1))


MAX_RECIPIENTS = 100_000  # `ringcast serve`'s default --max-recipients


def answered_calls(db: Path) -> int:
    """Calls that were answered and completed, from the run's SQLite database: failed,
    canceled, busy or unanswered calls are final too, but they are not setups."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM calls WHERE result = 'completed' AND outcome = 'answered'"
        ).fetchone()
    return int(row[0])


def setups_round(args: argparse.Namespace, work: Path, n: int) -> tuple[float, float, float]:
    """One round of short calls through `ringcast serve`: (answered calls/s, CPU s per
    1,000 answered calls, call writes per database transaction)."""
    total = int(args.cps * args.seconds * 1.2)
    rc_args = ["--max-calls", "2000", "--cps", str(args.cps), "--rtp-ports", "20000-29999"]
    env = {"RINGCAST_LOG_LEVEL": "warning"}
    db = work / f"s{n}.db"
    with (
        # RTP goes to a socket nobody reads: the kernel drops it, no reader competes
        # for a core with the process measured.
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead,
        SippUas(
            "uas_answer_load.xml", work, keys={"rtp_port": str(bound(dead))}, trace=False
        ) as uas,
        contextlib.ExitStack() as stack,
    ):
        rc = RingcastServer(work, db=f"sqlite:///{db}", args=rc_args, env=env)
        stack.callback(rc.stop)
        rc.start(timeout=120)  # a shared machine may take longer than the default 20 s
        rids = []
        for start in range(0, total, MAX_RECIPIENTS):  # the server's per-request cap
            r = httpx.post(
                f"{rc.base}/voice/call/play",
                timeout=120,
                json={
                    "recipients": [
                        {"to": uas.uri(f"s{i}")}
                        for i in range(start, min(total, start + MAX_RECIPIENTS))
                    ],
                    "from": "bench",
                    "playlist": [{"pause": 0.2}],
                },
            )
            rids.append(accepted(r))
        time.sleep(3)
        pid = rc.proc.pid  # type: ignore[union-attr]
        d0, c0, t0 = answered_calls(db), cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        d1, c1, t1 = answered_calls(db), cpu_seconds(pid), time.monotonic()
        batching = writes_per_batch(httpx.get(f"{rc.base}/metrics", timeout=30).text)
        for rid in rids:
            httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=30)
    print_results(db)
    return (d1 - d0) / (t1 - t0), (c1 - c0) / max(1, d1 - d0) * 1000, batching


def setups(args: argparse.Namespace, work: Path, sink: socket.socket) -> None:
    """Rounds alternate the SIP engine alone (the baseline) and the dialer end to end."""
    for n in range(args.rounds):
        base_rate, base_cpu = engine_baseline()
        load = os.getloadavg()[0]
        print(
            f"  round {n + 1} baseline: the SIP engine alone sets up {base_rate:,.0f} calls/s "
            f"at {base_cpu:.2f} CPU s per 1,000 calls (load average {load:.1f})",
            flush=True,
        )
        rate, cpu, batching = setups_round(args, work, n)
        load = os.getloadavg()[0]
        print(
            f"  round {n + 1} dialer: {rate:,.0f} answered calls/s sustained over "
            f"{args.seconds:.0f} s (asked --cps {args.cps}); ringcast CPU {cpu:.2f} s per "
            f"1,000 calls = {cpu / base_cpu:.2f}x the SIP engine alone (targets >= 1,000 "
            f"setups/s, <= 1.8x); {batching:.1f} call writes per database transaction "
            f"(load average {load:.1f})",
            flush=True,
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


def speech_callee(work: Path, label: str, media_port: int) -> SippUas:
    """A SIPp callee that answers and streams a `label` clip of the AMD corpus
    (PCMU, looped) from its media port to the caller's, 50 packets/s a call."""
    import amd_corpus  # the corpus needs the TTS voices: import it only here

    from ringcast.media.codecs import get_codec

    clip = amd_corpus.one(label, n={"human": 1, "machine": 3}[label])
    audio = work / f"{label}.pcmu"
    audio.write_bytes(get_codec("PCMU").encode(clip.pcm))
    scenario = answer_and_play(work / f"uas_{label}.xml", f'rtp_stream="{audio},-1,0"')
    return SippUas(
        scenario,
        work,
        trace=False,
        extra=["-mp", str(media_port), "-rtp_threadtasks", "50", "-rtp_buffsize", "1048576"],
    )


def answered_by(db: Path) -> str:
    """The verdicts the run's records carry ("none": no verdict): count and median
    `machine_detection_ms` of each."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        rows = conn.execute(
            "SELECT coalesce(answered_by, 'none'), machine_detection_ms FROM calls"
        ).fetchall()
    counts: Counter[str] = Counter()
    times: dict[str, list[int]] = defaultdict(list)
    for verdict, ms in rows:
        counts[verdict] += 1
        if ms is not None:
            times[verdict].append(ms)
    return ", ".join(
        f"{v} {k}" + (f" (median {statistics.median(times[v]):.0f} ms)" if times[v] else "")
        for v, k in sorted(counts.items())
    )


def amd_run(args: argparse.Namespace, work: Path, detect: bool, k: int) -> tuple[float, float]:
    """One run of N calls to the speech callees: (ringcast CPU s over whole calls,
    CPU s over the detection window)."""
    n = args.n
    name = f"amd{k}-{'detect' if detect else 'none'}"
    rc_args = live_calls_args(n, args.ramp_cps)
    ramp = n / args.ramp_cps
    window = ramp + 6.0 + 2.0  # the ramp, the detector's 6 s timeout, its last batch
    # the callees' media ports (and +2, SIPp's video): above the kernel's ephemeral ports
    # (32768-60999 on Linux) and the server's RTP range
    media = 61000 + 4 * (k % 50)
    with (
        speech_callee(work, "human", media) as human,
        speech_callee(work, "machine", media + 100) as machine,
        contextlib.ExitStack() as stack,
    ):
        db = work / f"{name}.db"
        rc = RingcastServer(
            work, db=f"sqlite:///{db}", args=rc_args, env={"RINGCAST_LOG_LEVEL": "warning"}
        )
        stack.callback(rc.stop)
        rc.start(timeout=120)
        pid = rc.proc.pid  # type: ignore[union-attr]
        body: dict[str, object] = {
            "recipients": [
                {"to": (human if i % 2 == 0 else machine).uri(f"c{i}")} for i in range(n)
            ],
            "from": "bench",
            "playlist": [{"pause": args.message}],
        }
        if detect:
            body["machine_detection"] = {"mode": "detect"}
        m0 = clock_counters(rc.base)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        rid = accepted(httpx.post(f"{rc.base}/voice/call/play", timeout=60, json=body))
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        c_window = cpu_seconds(pid) - c0
        late = late_share(m0, clock_counters(rc.base))
        wait_done(rc.base, rid, n, deadline=time.monotonic() + args.message + 4 * ramp + 60)
        c_whole, elapsed = cpu_seconds(pid) - c0, time.monotonic() - t0
        done = answered_calls(db)
        verdicts = answered_by(db)
    print(
        f"  {name:<12} whole calls {c_whole:6.2f} CPU s ({c_whole / max(1, done) * 1000:.2f} ms "
        f"a call, {elapsed:.0f} s); detection window ({window:.0f} s) {c_window:6.2f} CPU s "
        f"= {c_window / window * 100:.0f}% of a core, {late:.1f}% of clock ticks late; "
        f"{done}/{n} answered and completed; answered_by: {verdicts}",
        flush=True,
    )
    if done < n:
        print_results(db)
    return c_whole, c_window


def amd(args: argparse.Namespace, work: Path) -> None:
    base = bare_send_cost()
    print(
        f"  {args.n} calls, {args.message:.0f} s of playlist each, dialed at up to "
        f"{args.ramp_cps}/s; callees stream speech from the answer on; a bare send "
        f"costs {base:.2f} CPU us per packet on this machine now"
    )
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for k in range(args.rounds):
        order = (False, True) if k % 2 == 0 else (True, False)
        for detect in order:
            runs[detect].append(amd_run(args, work, detect, 2 * k + int(detect)))

    whole = [
        statistics.median(r[i] for r in runs[True]) / statistics.median(r[i] for r in runs[False])
        for i in (0, 1)
    ]
    print(
        f"  detect / none, medians of {args.rounds}: whole calls {whole[0]:.2f}x, "
        f"detection window {whole[1]:.2f}x (target: at most 2x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("concurrency")
    c.add_argument("--n", default="1000,2000,3000,4000,5000")
    c.add_argument("--window", type=float, default=8.0)
    c.add_argument("--ramp-cps", type=int, default=200)
    m = sub.add_parser("memory")
    m.add_argument("--n", default="2000,4000")
    m.add_argument("--ramp-cps", type=int, default=200)
    m.add_argument("--ramp-limit", type=float, default=240.0, help="seconds to reach N live")
    m.add_argument("--trace", action="store_true", help="where the bytes are (tracemalloc)")
    s = sub.add_parser("setups")
    s.add_argument("--seconds", type=float, default=60.0)
    s.add_argument("--cps", type=float, default=1500.0)  # more than one process does
    s.add_argument("--rounds", type=int, default=2)
    a = sub.add_parser("amd")
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--message", type=float, default=20.0, help="seconds of playlist a call")
    a.add_argument("--ramp-cps", type=int, default=200)
    a.add_argument("--rounds", type=int, default=2)
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
        elif args.mode == "memory":
            memory(args, work, sink)
        elif args.mode == "amd":
            amd(args, work)
        else:
            setups(args, work, sink)
    finally:
        parent.send("quit")
        proc.join(timeout=5)
        sink.close()
        shutil.rmtree(work, ignore_errors=True)  # the benchmark's databases and logs


if __name__ == "__main__":
    main()
