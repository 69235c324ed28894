"""Media-plane benchmark: N concurrent RTP streams from one process.

For each N, the same MediaSessions (real per-call sockets, real prepared G.711
prompt) are driven two ways in the same run:

* clock: the shared RtpClock (one task, absolute 20 ms deadlines);
* task:  a task per call, each sleeping to its own absolute deadlines (the
  per-call baseline DESIGN.md measured for aiortp);
* srtp:  the shared clock with every session secured (SRTP, RFC 3711, a fresh
  key pair per call, ``--suite``): encryption per packet on the clock's send
  path, against `clock` (plain RTP) in the same run.

Printed per N and mode: CPU % of one core for the whole sender process and per
stream (process_time over a steady-state window, after the symmetric-RTP latch
has connected the sockets), the p50/p99 inter-packet gap seen by a receiver in
a separate process for a sample of streams, and the share of due packets that
were actually sent (a sender that falls behind shows < 100 % and a low CPU per
stream: read the two together), and the CPU time per packet sent (which stays
comparable when the machine's other load starves the sender). The machine's
other load shows in the gaps. All traffic stays on 127.0.0.1; every run is
bounded in streams and seconds.

    .venv/bin/python bench/media.py                 # N = 500, 1000, 2000, 3000
    .venv/bin/python bench/media.py --n 1000 --seconds 3 --mode clock
    .venv/bin/python bench/media.py --n 2000 --mode clock,srtp   # SRTP against plain
    .venv/bin/python bench/media.py --n 2000 --send-path         # the tick alone, no waiting

`--send-path` times the clock's own tick (`RtpClock._tick`) without its 20 ms
waits: the same N connected sessions, a bare `send` per socket (the floor),
plain and SRTP in turn (``--repeat`` rounds), each running ticks back to back
for ``--seconds``; it prints CPU time per packet, the streams one core could
carry at that cost (20 ms / cost), and the ratios to plain and to the bare send.
It is less sensitive to the machine's other load than the paced runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import secrets
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from ringcast.media import Prompt, prepare_prompt
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.session import LATCH_TIMEOUT
from ringcast.rtp.srtp import SrtpContext
from ringcast.sip.crypto_sdp import SUITES

PTIME = 0.020  # seconds per packet
SAMPLED = 100  # streams whose packets the receiver process timestamps
MAX_STREAMS = 5000  # hard bound on N


def receiver(conn: Connection, ready: Connection) -> None:
    """Separate process: timestamp arrivals of the sampled streams, report gap stats."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    ready.send(sock.getsockname()[1])
    arrivals: dict[bytes, list[float]] = {}
    while True:
        try:
            data = sock.recv(2048)
            now = time.monotonic()
            arrivals.setdefault(data[8:12], []).append(now)
        except TimeoutError:
            pass
        if conn.poll():
            t0, t1 = conn.recv()
            break
    gaps: list[float] = []
    for times in arrivals.values():
        window = [t for t in times if t0 <= t <= t1]
        gaps += [b - a for a, b in zip(window, window[1:], strict=False)]
    gaps.sort()
    if gaps:
        stats = (gaps[len(gaps) // 2], gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], len(gaps))
    else:
        stats = (float("nan"), float("nan"), 0)
    conn.send(stats)
    sock.close()


async def per_call_task(session: MediaSession, prompt: Prompt) -> None:
    """The baseline: one task per call, its own absolute-deadline sleeps."""
    loop = asyncio.get_running_loop()
    nxt = session._packets(prompt).__next__
    start = loop.time()
    n = 0
    while True:
        n += 1
        delay = start + n * PTIME - loop.time()
        await asyncio.sleep(delay if delay > 0 else 0)
        try:
            pkt = nxt()
        except StopIteration:
            return
        if pkt is None:
            continue
        try:
            session._send(pkt)
        except OSError:
            session.send_errors += 1


async def run_one(
    n: int, mode: str, seconds: float, prompt: Prompt, suite: str = "AES_CM_128_HMAC_SHA1_80"
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    ready_r, ready_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=receiver, args=(child, ready_w), name="bench-receiver")
    proc.start()
    measured_port = ready_r.recv()
    drop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: the kernel drops
    drop.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    drop.bind(("127.0.0.1", 0))
    drop_port = drop.getsockname()[1]

    clock = RtpClock()
    allocator = PortAllocator(40000, 59999)
    sessions = [await MediaSession.open(clock, allocator, "127.0.0.1") for _ in range(n)]
    every = max(1, n // SAMPLED)
    for i, s in enumerate(sessions):
        if mode == "srtp":
            size = SUITES[suite].key_salt_len
            s.secure(suite, secrets.token_bytes(size), secrets.token_bytes(size))
        s.start("127.0.0.1", measured_port if i % every == 0 else drop_port, 0, "PCMU", 101)
    tasks: list[asyncio.Task[Any]] = []
    if mode in ("clock", "srtp"):
        clock.start()
        tasks = [
            asyncio.create_task(s.play(prompt), name=f"bench-play-{i}")
            for i, s in enumerate(sessions)
        ]
    else:
        tasks = [
            asyncio.create_task(per_call_task(s, prompt), name=f"bench-call-{i}")
            for i, s in enumerate(sessions)
        ]
    await asyncio.sleep(LATCH_TIMEOUT + 0.5)  # sockets connect after the latch window
    late0 = clock.late_ticks
    sent0 = sum(s.packets_sent for s in sessions)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = time.process_time(), time.monotonic()
    sent1 = sum(s.packets_sent for s in sessions)
    late = clock.late_ticks - late0
    ticks = clock.ticks
    parent.send((t0, t1))
    p50, p99, ngaps = parent.recv()
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for s in sessions:
        await s.close()
    await clock.stop()
    drop.close()
    proc.join(timeout=10)
    cpu = (cpu1 - cpu0) / (t1 - t0) * 100
    return {
        "n": n,
        "mode": mode,
        "cpu": cpu,
        "per_stream": cpu / n,
        "streams_per_core": 100 / (cpu / n) if cpu > 0 else float("inf"),
        "p50": p50 * 1e3,
        "p99": p99 * 1e3,
        "gaps": ngaps,
        "sent": (sent1 - sent0) / (n * (t1 - t0) / PTIME) * 100,  # % of the packets due
        # CPU per packet actually sent: comparable even when a loaded machine starves
        # the sender (then "sent %" < 100 and CPU per stream reads low)
        "us_per_packet": (cpu1 - cpu0) / max(1, sent1 - sent0) * 1e6,
        "late": late if mode != "task" else None,
        "ticks": ticks,
    }


async def send_path(n: int, seconds: float, rounds: int, prompt: Prompt, suite: str) -> None:
    """The tick's cost per packet, plain and SRTP, alternating (see the module docstring)."""
    drop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: the kernel drops
    drop.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    drop.bind(("127.0.0.1", 0))
    clock = RtpClock()  # never started: the loop below is its tick, without the waits
    allocator = PortAllocator(40000, 59999)
    print(f"{'N':>5} {'mode':>5} {'us/pkt':>7} {'streams/core':>12} {'x plain':>8} {'x bare':>7}")
    for _ in range(rounds):
        plain_cost = bare_cost = 0.0
        for mode in ("bare", "clock", "srtp"):
            sessions = [await MediaSession.open(clock, allocator, "127.0.0.1") for _ in range(n)]
            for s in sessions:
                if mode == "srtp":
                    size = SUITES[suite].key_salt_len
                    s.secure(suite, secrets.token_bytes(size), secrets.token_bytes(size))
                s.start("127.0.0.1", drop.getsockname()[1], 0, "PCMU", 101)
                s._latch(None)  # connected, as after the latch window
            sent = 0
            cpu0 = time.process_time()
            end = time.monotonic() + seconds
            if mode == "bare":  # the floor: a bare send of a 172-byte packet per socket
                sends = [s._sock.send for s in sessions]
                pkt = bytes(172)
                while time.monotonic() < end:
                    for send in sends:
                        with contextlib.suppress(OSError):
                            send(pkt)
                    sent += len(sends)
            else:
                for s in sessions:  # as play() and clock.add() do, without starting the task
                    s._next = s._packets(prompt).__next__
                    clock._streams[s] = None
                clock._dirty = True
                while time.monotonic() < end:
                    before = clock.packets_sent
                    clock._tick(False)
                    sent += clock.packets_sent - before
                for s in sessions:
                    clock.remove(s)
            cost = (time.process_time() - cpu0) / sent * 1e6
            plain_cost = cost if mode == "clock" else plain_cost
            bare_cost = cost if mode == "bare" else bare_cost
            ratio = f"{cost / plain_cost:8.2f}" if mode == "srtp" else f"{'':>8}"
            print(
                f"{n:>5} {mode:>5} {cost:>7.2f} {20000 / cost:>12.0f} {ratio} "
                f"{cost / bare_cost:>7.2f}",
                flush=True,
            )
            for s in sessions:
                await s.close()
        alone = libsrtp_alone(n, suite)
        print(f"{n:>5} {'(protect + copy alone)':>22} {alone:.2f} us/pkt", flush=True)
    drop.close()


def libsrtp_alone(n: int, suite: str, packets: int = 200_000) -> float:
    """CPU microseconds of `srtp_protect` itself per 172-byte packet, round-robin over n
    contexts (no Python session, no socket): the floor the SRTP send path adds."""
    sessions = []
    for i in range(n):
        size = SUITES[suite].key_salt_len
        ctx = SrtpContext(suite, secrets.token_bytes(size), secrets.token_bytes(size), ssrc=i + 1)
        pkt = bytearray(b"\x80\x00\x00\x00\x00\x00\x00\x00" + (i + 1).to_bytes(4, "big"))
        sessions.append((ctx, ctx.wrap_send(len), pkt + bytes(160)))
    rounds = max(1, packets // n)
    cpu0 = time.process_time()
    for r in range(rounds):
        for _, send, pkt in sessions:
            pkt[2:4] = (r & 0xFFFF).to_bytes(2, "big")
            send(pkt)
    return (time.process_time() - cpu0) / (rounds * n) * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="500,1000,2000,3000", help="stream counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument(
        "--mode", default="both", help="clock, task, srtp, comma-separated (both: clock,task)"
    )
    ap.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80", choices=sorted(SUITES))
    ap.add_argument("--send-path", action="store_true", help="time the tick alone (no pacing)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of --send-path")
    args = ap.parse_args()
    modes = ["clock", "task"] if args.mode == "both" else args.mode.split(",")
    if not set(modes) <= {"clock", "task", "srtp"}:
        raise SystemExit(f"--mode: clock, task or srtp, not {args.mode!r}")
    counts = [min(int(x), MAX_STREAMS) for x in args.n.split(",")]
    seconds = min(args.seconds, 30.0)
    total = LATCH_TIMEOUT + 0.5 + seconds + 2
    prompt = await prepare_prompt(
        [{"say": "This is a broadcast benchmark of the ringcast media plane.", "loop": 20}],
        codecs=["PCMU"],
    )
    if prompt.duration < total:
        raise SystemExit(f"prompt is {prompt.duration:.1f} s, need {total:.1f} s")
    if args.send_path:
        for n in counts:
            await send_path(n, min(seconds, 5.0), min(args.repeat, 10), prompt, args.suite)
        return
    print(
        f"{'N':>5} {'mode':>5} {'CPU %':>7} {'%/stream':>9} {'streams/core':>12} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'sent %':>7} {'late ticks':>10} {'us/pkt':>7}"
    )
    for n in counts:
        for mode in modes:
            r = await run_one(n, mode, seconds, prompt, args.suite)
            late = "-" if r["late"] is None else f"{r['late']}/{int(seconds / PTIME)}"
            print(
                f"{r['n']:>5} {r['mode']:>5} {r['cpu']:>7.1f} {r['per_stream']:>9.4f} "
                f"{r['streams_per_core']:>12.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
                f"{r['sent']:>7.1f} {late:>10} {r['us_per_packet']:>7.2f}",
                flush=True,
            )
            await asyncio.sleep(0.5)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
