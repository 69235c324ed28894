"""What a flood of strangers' SIP requests costs `ringcast serve` (loopback only).

(a) rss: 40,000 OPTIONS of ~2 KB from 4,000 loopback source addresses
    (127.0.x.y as *sources*, all sent to ringcast on 127.0.0.1) at ~10,000/s.
    Prints the growth of ringcast's resident memory (VmRSS before the flood and
    1 s after it) and how many requests were answered. Target: < 10 MB.
(b) gaps: one live call to SIPp (its SDP aims ringcast's RTP at a socket this
    script owns; a separate process timestamps each packet in the kernel,
    SO_TIMESTAMPNS) plays silence; the p50/p99/max gap between its RTP packets
    is measured for a window with no flood, then for a window with a flood of
    10,000 stranger requests/s. Target: p99 < 25 ms during the flood.

Both run against the code of this tree and, as the baseline in the same run,
the code of ``--baseline`` (default ``main``, unpacked with ``git archive`` and
put first on ``PYTHONPATH``); ``--no-baseline`` skips it. ``--variant`` adds
runs of this tree with extra settings (e.g. ``RINGCAST_SIP_FLOOD_TOTAL_RATE=0``).

    .venv/bin/python bench/sip_flood.py all
    .venv/bin/python bench/sip_flood.py rss --variant RINGCAST_SIP_FLOOD_TOTAL_RATE=0

Every loop is bounded in count and time (``--max-seconds`` per flood); only
the processes this script started are stopped, by their PIDs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from e2e.server import RingcastServer  # noqa: E402
from sipp import SippUas  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
BATCH_SECONDS = 0.01  # the flooder sends one batch per 10 ms, against absolute deadlines


def source_ip(n: int) -> str:
    """The n-th loopback source address: 127.0.1.1, 127.0.1.2, ... (250 per /24)."""
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


def options(n: int, port: int, size: int) -> bytes:
    """A stranger's OPTIONS, unique branch and Call-ID, padded to ``size`` bytes."""
    head = (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-flood-{n}\r\n"
        f"From: <sip:scan@127.0.0.1>;tag=f{n}\r\n"
        "To: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: flood-{n}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nAccept: application/sdp\r\n"
        "User-Agent: friendly-scanner\r\n"
    )
    pad = max(0, size - len(head) - len("X-Padding: \r\nContent-Length: 0\r\n\r\n"))
    return (head + f"X-Padding: {'a' * pad}\r\nContent-Length: 0\r\n\r\n").encode()


def flooder(
    port: int, count: int, rate: float, sources: int, size: int, max_seconds: float, out: Connection
) -> None:
    """Send ``count`` OPTIONS at ``rate``/s, round-robin over ``sources`` addresses;
    then count the answers that came back. Reports (sent, seconds, answered)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, sources + 256)), hard))
    socks = []
    for n in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source_ip(n), 0))
        s.setblocking(False)
        socks.append(s)
    target = ("127.0.0.1", port)
    per_batch = max(1, round(rate * BATCH_SECONDS))
    start = time.monotonic()
    sent = 0
    batch = 0
    while sent < count and time.monotonic() - start < max_seconds:
        for _ in range(min(per_batch, count - sent)):
            try:
                socks[sent % sources].sendto(options(sent, port, size), target)
            except (BlockingIOError, OSError):
                pass
            sent += 1
        batch += 1
        pause = start + batch * BATCH_SECONDS - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    seconds = time.monotonic() - start
    time.sleep(1.0)  # the answers still on their way
    answered = 0
    for s in socks:
        for _ in range(count):  # bounded: at most one answer per request
            try:
                s.recv(65535)
            except (BlockingIOError, OSError):
                break
            answered += 1
        s.close()
    out.send((sent, seconds, answered))


def flood(port: int, args: argparse.Namespace, count: int) -> tuple[int, float, int]:
    """Run :func:`flooder` in a child process (so it does not share this one's core)."""
    here, there = mp.Pipe()
    proc = mp.Process(
        target=flooder,
        args=(port, count, args.rate, args.sources, args.size, args.max_seconds, there),
        name="sip-flooder",
    )
    proc.start()
    try:
        if not here.poll(args.max_seconds + 30):
            raise RuntimeError("the flooder did not report in time")
        result: tuple[int, float, int] = here.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    return result


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def metric(base: str, name: str) -> float | None:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def server(work: Path, label: str, src: Path, extra_env: dict[str, str]) -> RingcastServer:
    tag = "".join(c if c.isalnum() else "-" for c in label)
    run = work / tag
    run.mkdir(exist_ok=True)
    env = {"PYTHONPATH": str(src), "RINGCAST_LOG_LEVEL": "warning", **extra_env}
    return RingcastServer(run, args=["--max-calls", "10"], env=env)


@contextlib.contextmanager
def serving(work: Path, label: str, src: Path, env: dict[str, str]) -> Iterator[RingcastServer]:
    """`ringcast serve` of ``src``, given a minute to start on a busy machine."""
    rc = server(work, label, src, env)
    try:
        yield rc.start(timeout=120)
    finally:
        rc.stop()


def run_rss(
    work: Path, label: str, src: Path, env: dict[str, str], args: argparse.Namespace
) -> str:
    with serving(work, label, src, env) as rc:
        assert rc.proc is not None
        time.sleep(2.0)
        before = rss_mb(rc.proc.pid)
        sent, seconds, answered = flood(rc.sip_port, args, args.requests)
        after = rss_mb(rc.proc.pid)  # the flooder waited 1 s for the answers
        dropped = metric(rc.base, "ringcast_sip_flood_dropped_total")
    drops = "" if dropped is None else f", {dropped:,.0f} dropped by the flood gate"
    return (
        f"  {label}: RSS {before:.1f} -> {after:.1f} MB (+{after - before:.1f} MB) after "
        f"{sent:,} OPTIONS of {args.size} B from {args.sources:,} sources in {seconds:.1f} s "
        f"({sent / seconds:,.0f}/s); {answered:,} answered{drops}"
    )


def receiver(sock_fd: int, conn: Connection) -> None:
    """Kernel arrival times of RTP packets while told to measure; reports the gaps (s)."""
    sock = socket.socket(fileno=sock_fd)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    last: float | None = None
    gaps: list[float] = []
    measuring = False
    while True:
        if conn.poll():
            cmd = conn.recv()
            if cmd == "start":
                measuring, gaps, last = True, [], None
            elif cmd == "stop":
                conn.send(gaps)
                measuring = False
            elif cmd == "quit":
                return
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except TimeoutError:
            continue
        if not measuring or len(data) < 12 or data[1] & 0x7F != 0:  # PCMU audio only
            continue
        when = time.time()
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                when = sec + nsec / 1e9
        if last is not None:
            gaps.append(when - last)
        last = when


CLOCK = ("ringcast_rtp_clock_ticks_total", "ringcast_rtp_late_ticks_total")


def clock_counters(base: str) -> tuple[float, float]:
    """(ticks, late ticks) of ringcast's shared RTP clock so far."""
    ticks_, late = (metric(base, name) for name in CLOCK)
    return (ticks_ or 0.0, late or 0.0)


def ticks(before: tuple[float, float], after: tuple[float, float]) -> str:
    n, late = after[0] - before[0], after[1] - before[1]
    return f"{late:,.0f} of {n:,.0f} ticks late"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(gaps: list[float]) -> str:
    ms = [g * 1000 for g in gaps]
    return (
        f"p50 {pct(ms, 0.5):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, max {max(ms, default=0):.1f} ms"
        f" over {len(ms):,} gaps"
    )


def run_gaps(
    work: Path, label: str, src: Path, env: dict[str, str], args: argparse.Namespace
) -> str:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    here, there = mp.Pipe()
    rec = mp.Process(target=receiver, args=(sink.fileno(), there), name="rtp-receiver")
    rec.start()
    window = args.window
    count = int(args.rate * window)
    tag = "".join(c if c.isalnum() else "-" for c in label)
    sipp_dir = work / f"sipp-{tag}"
    sipp_dir.mkdir(exist_ok=True)
    try:
        with (
            SippUas(
                "uas_answer.xml",
                sipp_dir,
                keys={"rtp_port": str(sink.getsockname()[1])},
                trace=False,
            ) as uas,
            serving(work, f"gaps-{label}", src, env) as rc,
        ):
            assert rc.proc is not None
            if args.nice:  # shield ringcast (only it) from other work on a shared machine
                os.setpriority(os.PRIO_PROCESS, rc.proc.pid, args.nice)
            r = httpx.post(
                f"{rc.base}/voice/call/play",
                timeout=30,
                json={
                    "to": uas.uri("gaps"),
                    "from": "bench",
                    "playlist": [{"pause": 2 * window + 15}],
                },
            )
            r.raise_for_status()
            rid = r.json()["request_id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # bounded: wait for the call to be answered
                record = httpx.get(f"{rc.base}/voice/call/status/{rid}", timeout=10).json()
                if record.get("record", {}).get("result") == "in-progress":
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"the call was not answered: {record}")
            time.sleep(1.0)
            late0 = clock_counters(rc.base)
            here.send("start")
            time.sleep(window)
            here.send("stop")
            quiet = here.recv()
            late1 = clock_counters(rc.base)
            cpu0 = cpu_seconds(rc.proc.pid)
            here.send("start")
            sent, seconds, _answered = flood(rc.sip_port, args, count)
            here.send("stop")
            loud = here.recv()
            cpu = (cpu_seconds(rc.proc.pid) - cpu0) / (seconds + 1.0)  # + the 1 s drain
            late2 = clock_counters(rc.base)
            httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=10)
    finally:
        here.send("quit")
        rec.join(timeout=5)
        if rec.is_alive():
            rec.kill()
        sink.close()
    return (
        f"  {label}: RTP gaps of one live call, no flood: {summary(quiet)}; "
        f"clock {ticks(late0, late1)}\n"
        f"  {label}: during {sent:,} stranger OPTIONS in {seconds:.1f} s "
        f"({sent / seconds:,.0f}/s): {summary(loud)}; clock {ticks(late1, late2)}; "
        f"ringcast used {cpu:.0%} of a core;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, ringcast at nice"
        f" {args.nice}"
    )


def baseline_src(rev: str, work: Path) -> Path:
    dest = work / f"baseline-{rev.replace('/', '-')}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["rss", "gaps", "all"], nargs="?", default="all")
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--sources", type=int, default=4_000)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--size", type=int, default=2_048)
    parser.add_argument("--window", type=float, default=8.0, help="seconds per gap window")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per flood")
    parser.add_argument(
        "--nice", type=int, default=0, help="(b): ringcast's nice value (negative: root)"
    )
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if sys.platform != "linux":
        raise SystemExit("needs Linux (/proc, 127.0.0.0/8 sources)")
    with tempfile.TemporaryDirectory(prefix="sip-flood-") as tmp:
        work = Path(tmp)
        runs: list[tuple[str, Path, dict[str, str]]] = []
        if not args.no_baseline:
            runs.append((f"{args.baseline} (baseline)", baseline_src(args.baseline, work), {}))
        runs.append(("this tree", ROOT / "src", {}))
        for variant in args.variant:
            name, _, value = variant.partition("=")
            runs.append((f"this tree, {name}={value}", ROOT / "src", {name: value}))
        now = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        print(f"sip_flood on {os.cpu_count()} CPUs, {now} UTC")
        if args.what in ("rss", "all"):
            print("(a) memory: RSS growth of `ringcast serve` under a flood of strangers' OPTIONS")
            for label, src, env in runs:
                print(run_rss(work, label, src, env, args), flush=True)
        if args.what in ("gaps", "all"):
            print(f"(b) a live call's RTP during a flood of {args.rate:,.0f} stranger requests/s")
            for label, src, env in runs:
                print(run_gaps(work, label, src, env, args), flush=True)


if __name__ == "__main__":
    main()
