"""Webhook delivery benchmarks against a local receiver (127.0.0.1, answers 200 at once).

The receiver runs in its own process (asyncio, HTTP/1.1 keep-alive) and counts
POSTs by their ``webhook-id`` header: events received, distinct ids, duplicates,
unsigned posts, and the wall-clock times of the first and the last arrival.

(a) raw: the outbox's delivery rate with a pre-filled outbox and no calls. A
    worker process fills a SQLite outbox with --events call-shaped events, starts
    a WebhookDeliverer and times until all are delivered (events/s and CPU s per
    1,000 events). The same worker runs twice per round, against the code under
    test and against a baseline tree (--baseline, default: ``git archive main``
    unpacked to a temporary directory, put first on PYTHONPATH); rounds alternate.
(b) calls: a broadcast of --calls short calls to SIPp through ``ringcast serve``
    at up to --cps, with a callback_url to the receiver. Printed: completed
    calls/s sustained (first call started to last call ended, from the report),
    events/s delivered while the calls ran, the time from the report being ready
    (first status poll that sees it) to the last event's arrival, and whether all
    events written to the run's outbox arrived exactly once. Run for the code under test and for
    the baseline tree, in turn. With --webhooks off the same broadcast has no
    callback_url (no events, the deliverer idle): the dialer's own rate, to
    compare with its rate while delivering; --webhooks both runs each tree
    with and without, alternated. --webhooks refused sends the callbacks to a
    port where nothing listens: the events are written but the receiver is
    soon left alone as down (a few attempts), so the dialer pays for writing
    the events and hardly for sending them.

    .venv/bin/python bench/webhooks.py raw --events 3000 --rounds 2
    .venv/bin/python bench/webhooks.py calls --calls 3000 --cps 800
    .venv/bin/python bench/webhooks.py calls --calls 5000 --webhooks both --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BASELINE: Path | None = None  # the baseline tree's src/, once unpacked
BASELINE_PYTHON: str | None = None  # --baseline-python
TICKS = os.sysconf("SC_CLK_TCK")
WARMUP = 200  # events delivered before the raw rate is timed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the receiver (its own process) ------------------------------------------------------


class _Counts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ids: set[str] = set()
        self.posts = 0
        self.dups = 0
        self.unsigned = 0
        self.first = 0.0
        self.last = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "posts": self.posts,
            "unique": len(self.ids),
            "dups": self.dups,
            "unsigned": self.unsigned,
            "first": self.first,
            "last": self.last,
        }


class _Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, content-length bodies only (what httpx sends)."""

    def __init__(self, counts: _Counts) -> None:
        self.counts = counts
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + size:
                return
            self.buf = self.buf[end + 4 + size :]
            method, path = lines[0].split(" ")[:2]
            body = b""
            if method == "POST":
                self._count(headers)
            elif path == "/stats":
                body = json.dumps(self.counts.as_dict()).encode()
            elif path == "/reset":
                self.counts.reset()
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )

    def _count(self, headers: dict[str, str]) -> None:
        c = self.counts
        now = time.time()
        c.first = c.first or now
        c.last = now
        c.posts += 1
        wid = headers.get("webhook-id", "")
        if wid in c.ids:
            c.dups += 1
        c.ids.add(wid)
        if not headers.get("webhook-signature", "").startswith("v1,"):
            c.unsigned += 1


async def _serve_receiver() -> None:
    counts = _Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(counts), "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)  # bounded: the parent stops it by PID long before


class Receiver:
    """The receiver process; `stats()` and `reset()` over its own HTTP."""

    def __enter__(self) -> Receiver:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "receiver"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def url(self, path: str = "/hook?token=t0p") -> str:
        return self.base + path

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.base + "/stats", timeout=10).json())

    def reset(self) -> None:
        httpx.get(self.base + "/reset", timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- (a) raw delivery rate ---------------------------------------------------------------


def _record(i: int) -> dict[str, Any]:
    """The data of a call event, shaped like a real call record (about 500 bytes)."""
    return {
        "request_id": "req_0123456789abcdef",
        "id": f"call_{i:08d}",
        "to": f"sip:user{i}@127.0.0.1:5070",
        "from": "bench",
        "result": "completed",
        "outcome": "answered",
        "answered_by": "human",
        "attempt": 1,
        "start_time": "2026-12-03T04:00:00.000000Z",
        "answer_time": "2026-12-03T04:00:00.100000Z",
        "end_time": "2026-12-03T04:00:00.300000Z",
        "duration": 0.2,
        "sip_code": 200,
        "sip_reason": "OK",
        "error": None,
        "digits": None,
        "recordings": [],
    }


async def _raw_worker(db: str, url: str, events: int, limit: float, concurrency: int) -> None:
    # Imported here: the worker runs against the tree first on its PYTHONPATH.
    import ringcast
    from ringcast.store import outbox
    from ringcast.store.db import open_store
    from ringcast.webhooks.deliver import WebhookDeliverer
    from ringcast.webhooks.sign import generate_secret

    store = open_store(db)
    await store.migrate()
    async with store.session() as s, s.begin():
        for i in range(WARMUP + events):
            await outbox.enqueue(
                s,
                url=url,
                api_key_id=None,
                event_type="call.completed",
                payload=outbox.build_payload("call.completed", _record(i)),
            )
    sessions = 0
    opened = store.session

    def counted(**kw: Any) -> Any:  # database sessions (transactions) per event
        nonlocal sessions
        sessions += 1
        return opened(**kw)

    store.session = counted  # type: ignore[method-assign]
    opts = {"max_concurrency": concurrency} if concurrency else {}
    d = WebhookDeliverer(store, allow_private=True, secret=generate_secret(), **opts)
    t_start = time.monotonic()
    d.start()
    # The first WARMUP events pay for lazy imports and connection set-up: not timed.
    while d.delivered < WARMUP and time.monotonic() - t_start < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    profile = os.environ.get("BENCH_PROFILE")  # a file: cProfile of the timed part only
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    c0, t0, s0, n0 = time.process_time(), time.monotonic(), sessions, d.delivered
    while d.delivered < WARMUP + events and time.monotonic() - t_start < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    t1, c1, s1, n1 = time.monotonic(), time.process_time(), sessions, d.delivered
    if prof is not None and profile:
        prof.disable()
        prof.dump_stats(profile)
    await d.stop()
    await store.close()
    print(
        json.dumps(
            {
                "tree": str(Path(ringcast.__file__).parent),
                "delivered": n1 - n0,
                "seconds": t1 - t0,
                "cpu": c1 - c0,
                "sessions": s1 - s0,
            }
        ),
        flush=True,
    )


def _python(tree: Path | None) -> str:
    """The interpreter of a run: --baseline-python for the baseline tree (its own
    environment, e.g. main's venv as installed), else this one."""
    return (
        BASELINE_PYTHON
        if tree is not None and tree == BASELINE and BASELINE_PYTHON
        else sys.executable
    )


def _run_raw(tree: Path | None, work: Path, rx: Receiver, events: int, tag: str) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    db = work / f"raw-{tag}-{time.monotonic_ns()}.db"
    rx.reset()
    out = subprocess.run(
        [_python(tree), __file__, "raw-worker", f"sqlite:///{db}", rx.url(), str(events)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"raw worker ({tag}) failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got.update(rx.stats())
    return got


def raw(args: argparse.Namespace, work: Path, baseline: Path) -> None:
    with Receiver() as rx:
        rows: dict[str, list[dict[str, Any]]] = {"new": [], "base": []}
        order: list[tuple[str, Path | None]] = [("new", None), ("base", baseline)]
        if args.extra_path:  # the code under test with more on its path (a package to try)
            rows["new+"] = []
            order.append(("new+", Path(args.extra_path)))
        for r in range(args.rounds):
            for tag, tree in order if r % 2 == 0 else order[::-1]:
                got = _run_raw(tree, work, rx, args.events, tag)
                rows[tag].append(got)
                total = args.events + WARMUP
                ok = got["unique"] == total and got["dups"] == 0 and not got["unsigned"]
                print(
                    f"  round {r + 1} {tag:4s}: {got['delivered'] / got['seconds']:7.0f} events/s, "
                    f"{got['cpu'] / max(1, got['delivered']) * 1000:.2f} CPU s per 1,000 events, "
                    f"{got['sessions'] / max(1, got['delivered']):.2f} DB transactions per event; "
                    f"received {got['unique']}/{total} distinct, {got['dups']} duplicates, "
                    f"{got['unsigned']} unsigned -> "
                    f"{'exactly once' if ok else 'NOT exactly once'}; "
                    f"load {loadavg()}  ({got['tree']})",
                    flush=True,
                )
        rate = {t: [g["delivered"] / g["seconds"] for g in v] for t, v in rows.items()}
        best = {t: max(v) for t, v in rate.items()}
        for tag in rows:
            print(
                f"  raw delivery {tag}, best of {args.rounds}: {best[tag]:.0f} events/s = "
                f"{best[tag] / best['base']:.2f}x the baseline"
            )


# --- (b) broadcast with webhooks -------------------------------------------------------------


def _run_calls(
    tree: Path | None, work: Path, rx: Receiver, args: argparse.Namespace, tag: str, mode: str
) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from e2e.server import RingcastServer
    from sipp import SippUas

    env = {"RINGCAST_LOG_LEVEL": "warning"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    rc_args = ["--max-calls", "2000", "--cps", str(args.cps), "--rtp-ports", "20000-29999"]
    rx.reset()
    run = work / f"calls-{tag}"
    run.mkdir()
    with (
        SippUas("uas_answer.xml", run, keys={"rtp_port": str(args.rtp_sink)}, trace=False) as uas,
        contextlib.ExitStack() as stack,
    ):
        rc = RingcastServer(run, db=f"sqlite:///{run}/w.db", args=rc_args, env=env)
        stack.callback(rc.stop)
        # RingcastServer runs the `ringcast` script beside sys.executable.
        own, sys.executable = sys.executable, _python(tree)
        try:
            rc.start(timeout=120)  # a loaded machine may take more than the default 20 s
        finally:
            sys.executable = own
        proc_pid = rc.proc.pid  # type: ignore[union-attr]
        c0 = cpu_seconds(proc_pid)
        t_post = time.time()
        body: dict[str, Any] = {
            "recipients": [{"to": uas.uri(f"w{i}")} for i in range(args.calls)],
            "from": "bench",
            "playlist": [{"pause": 0.2}],
        }
        if mode == "on":
            body["callback_url"] = rx.url()
        elif mode == "refused":
            body["callback_url"] = f"http://127.0.0.1:{args.refused_port}/hook"
        r = httpx.post(f"{rc.base}/voice/call/play", timeout=120, json=body)
        rid = r.json()["request_id"]
        deadline = time.monotonic() + args.calls / 20 + 120
        ready_at = None
        with httpx.Client(base_url=rc.base, timeout=30) as client:
            while time.monotonic() < deadline:
                status = client.get(f"/voice/call/status/{rid}").json()
                if status["report"]["status"] == "ready":
                    ready_at = time.time()
                    # events written but not yet received when the report is ready
                    backlog = outbox_rows(run / "w.db") - rx.stats()["unique"]
                    break
                time.sleep(0.1)
            if ready_at is None:
                raise RuntimeError(f"{tag}: report not ready in time\n{rc.output()}")
            report = client.get(f"/report/{status['report']['id']}").json()
            # Every event the run wrote (ringing may be left out when the answer
            # came in the same group commit; failed calls have no answered event).
            expected = outbox_rows(run / "w.db")
            while mode == "on" and time.monotonic() < deadline and rx.stats()["unique"] < expected:
                time.sleep(0.05)
                expected = outbox_rows(run / "w.db")
        if mode == "on":
            time.sleep(1.0)  # late duplicates, if any, arrive now
        stats = rx.stats()
        expected = outbox_rows(run / "w.db")
        cpu = cpu_seconds(proc_pid) - c0
    records = report["records"]
    starts = [_ts(x.get("setup_time")) for x in records]
    ends = [_ts(x.get("disconnect_time")) for x in records]
    completed = sum(1 for x in records if x["result"] == "completed")
    span = max(e for e in ends if e) - min(s for s in starts if s) + 1.0  # whole seconds
    return {
        "tag": tag,
        "completed": completed,
        "calls_per_s": completed / span,
        "dial_span": span,
        "events_per_s": stats["unique"] / max(1e-9, stats["last"] - stats["first"]),
        "lag": stats["last"] - ready_at if mode == "on" else 0.0,
        "ready_after": ready_at - t_post,
        "backlog": backlog,
        "expected": expected,
        "cpu": cpu,
        **stats,
    }


def outbox_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM webhook_outbox").fetchone()[0])


def _ts(value: str | None) -> float:
    """A record time (UTC ``YYYY-MM-DD HH:MM:SS``, whole seconds) as a timestamp."""
    if not value:
        return 0.0
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def calls(args: argparse.Namespace, work: Path, baseline: Path) -> None:
    import socket

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed,
        Receiver() as rx,
    ):
        sink.bind(("127.0.0.1", 0))  # RTP goes here and is dropped
        args.rtp_sink = sink.getsockname()[1]
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        args.refused_port = closed.getsockname()[1]
        modes = {"both": ["on", "off"]}.get(args.webhooks, [args.webhooks])
        for r in range(args.rounds):
            order = [
                (tag, tree, mode)
                for mode in modes
                for tag, tree in [("new", None), ("base", baseline)]
            ]
            for tag, tree, mode in order if r % 2 == 0 else order[::-1]:
                g = _run_calls(tree, work, rx, args, f"{tag}{r}{mode}", mode)
                if mode != "on":
                    print(
                        f"  round {r + 1} {tag:4s} webhooks {mode}: {g['completed']} calls "
                        f"completed at {g['calls_per_s']:.0f} calls/s ({g['dial_span']:.0f} s); "
                        f"report ready {g['ready_after']:.1f} s after the POST; "
                        f"{g['expected']} events written, {g['unique']} received; "
                        f"ringcast CPU {g['cpu']:.1f} s; load {loadavg()}",
                        flush=True,
                    )
                    continue
                raw_rate = _raw_rate(tree, work, rx, args.raw_events, tag)
                once = g["unique"] == g["expected"] and g["dups"] == 0 and not g["unsigned"]
                capacity = raw_rate / g["calls_per_s"]
                met = capacity >= 3 and g["lag"] <= 5.0 and once
                print(
                    f"  round {r + 1} {tag:4s} webhooks on: {g['completed']} calls completed at "
                    f"{g['calls_per_s']:.0f} calls/s ({g['dial_span']:.0f} s); events "
                    f"{g['unique']}/{g['expected']} distinct, {g['dups']} duplicates, "
                    f"{g['unsigned']} unsigned; received at {g['events_per_s']:.0f} events/s "
                    f"while dialing; report ready {g['ready_after']:.1f} s after the POST, "
                    f"last event {g['lag']:+.1f} s after that ({g['backlog']} events not yet "
                    f"received then: {g['backlog'] / max(0.1, g['lag']):.0f} events/s after); "
                    f"ringcast CPU {g['cpu']:.1f} s; outbox raw rate right after: "
                    f"{raw_rate:.0f} events/s = {capacity:.1f}x the calls/s; load {loadavg()} "
                    f"-> {'met' if met else 'not met'} (>= 3x, <= 5 s, exactly once)",
                    flush=True,
                )


def _raw_rate(tree: Path | None, work: Path, rx: Receiver, events: int, tag: str) -> float:
    got = _run_raw(tree, work, rx, events, tag)
    total = events + WARMUP
    if got["unique"] != total or got["dups"]:
        raise RuntimeError(f"{tag}: raw run not exactly once: {got}")
    return float(got["delivered"] / got["seconds"])


# --- main ---------------------------------------------------------------------------------------


def baseline_tree(work: Path, ref: str) -> Path:
    """`git archive <ref>` of the repository's src/ unpacked under `work`."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main() -> None:
    global BASELINE, BASELINE_PYTHON
    if len(sys.argv) > 1 and sys.argv[1] == "receiver":
        asyncio.run(_serve_receiver())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "raw-worker":
        db, url, events = sys.argv[2], sys.argv[3], int(sys.argv[4])
        concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # 0: the default
        asyncio.run(_raw_worker(db, url, events, 120.0, concurrency))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main", help="git ref of the baseline tree")
    ap.add_argument(
        "--baseline-python",
        help="interpreter for the baseline tree (another venv, e.g. main's as installed: "
        "its packages, not this one's); default: this interpreter",
    )
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("raw")
    a.add_argument("--events", type=int, default=3000)
    a.add_argument("--rounds", type=int, default=2)
    a.add_argument("--extra-path", help="also run the code under test with DIR on PYTHONPATH")
    b = sub.add_parser("calls")
    b.add_argument("--calls", type=int, default=3000)
    b.add_argument("--cps", type=float, default=800.0)
    b.add_argument("--rounds", type=int, default=1)
    b.add_argument("--raw-events", type=int, default=1000)
    b.add_argument(
        "--webhooks",
        choices=["on", "off", "both", "refused"],
        default="on",
        help="broadcasts with a callback_url (on), without (off: the dialer's own rate), both, "
        "or with one where nothing listens (refused: the events are written, hardly sent)",
    )
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load {loadavg()}; the receiver and SIPp share "
        f"these cores; baseline = {args.baseline}"
        + (f" run by {args.baseline_python}" if args.baseline_python else "")
    )
    work = Path(tempfile.mkdtemp(prefix="ringcast-bench-webhooks-"))
    try:
        baseline = BASELINE = baseline_tree(work, args.baseline)
        BASELINE_PYTHON = args.baseline_python
        if args.mode == "raw":
            raw(args, work, baseline)
        else:
            calls(args, work, baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
