"""Bridged-transfer benchmark (issue 17): N relayed pairs against N plain calls, one run.

For each N, in the same process and run:

* plain: N MediaSessions stream a prepared prompt on the shared clock while
  their "callees" send them G.711 at 50 packets/s (dropped by the kernel's
  socket filter, as in a real call with no one listening);
* bridged: N pairs of MediaSessions relayed both ways by `ringcast.rtp.relay.Bridge`
  while both "callee" and "agent" send them G.711 at 50 packets/s.

The far ends are one separate process that paces every stream against absolute
20 ms deadlines and drains what it receives. Printed per N: CPU % of one core
of the ringcast process (process_time over a steady window after the latch),
CPU per plain call and per bridged pair and their ratio (target <= 2.5), and
the relay delay: each packet carries its send time, and the far ends' receiver
thread times its return through the relay (send on one leg -> receive from
the other; loopback itself adds ~0.05 ms), at p50/p99/max (target p99 <=
20 ms, one tick). The delay is measured without transcoding (the payload
must come back unchanged).
127.0.0.1 only; bounded in streams and seconds.

    .venv/bin/python bench/bridge.py                    # N = 100, 200, 400
    .venv/bin/python bench/bridge.py --n 200 --seconds 5 --transcode
    .venv/bin/python bench/bridge.py --n 200 --rounds 6   # medians of alternated phases
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import socket
import statistics
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ringcast.media import prepare_prompt
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.relay import Bridge

PTIME = 0.020  # seconds per packet
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux <asm-generic/socket.h>
MAX_N = 1000  # hard bound on pairs


def far_ends(conn: Connection) -> None:
    """Separate process: send 50 packets/s of PCMU (PT 0, the send time in the first 8
    payload bytes) to every port it is given, from one socket, until told to stop;
    a thread receives what comes back and times the relayed packets by the kernel's
    receive timestamp (SO_TIMESTAMPNS: this process's own scheduling does not count)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    conn.send(sock.getsockname()[1])
    ports: list[int] = conn.recv()
    delays: list[float] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data, anc, _, _ = sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            stamp = [d for level, kind, d in anc if kind == SO_TIMESTAMPNS]
            if not stamp:
                continue
            sec, nsec = struct.unpack("@ll", stamp[0][:16])
            now = sec + nsec * 1e-9
            if len(data) >= 20 and data[1] & 0x7F == 0 and data[12:14] == b"\xfa\x11":
                delays.append(now - struct.unpack_from("!d", data, 14)[0])

    reader = threading.Thread(target=receive, name="far-ends-recv", daemon=True)
    reader.start()
    rest = bytes(range(146))
    seq = 0
    start = time.monotonic()
    n = 0
    while not conn.poll():
        n += 1
        delay = start + n * PTIME - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        hdr = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0xFA11)
        seq += 1
        for port in ports:
            pkt = hdr + b"\xfa\x11" + struct.pack("!d", time.time()) + rest
            with contextlib.suppress(OSError):
                sock.sendto(pkt, ("127.0.0.1", port))
    conn.recv()
    stop.set()
    reader.join(2)
    conn.send(delays[len(delays) // 5 :])  # the first fifth: latching, warm-up
    sock.close()


async def measure(seconds: float) -> float:
    """CPU % of one core over `seconds`, after a second for every session to latch."""
    await asyncio.sleep(1.0)  # the far ends' first packets latch and connect every socket
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)


@dataclass
class Phase:
    cpu: float  # % of one core over the window
    delays: list[float]  # relay delays (bridged), seconds, sorted
    relayed: int = 0
    dropped: int = 0
    rate: float = 0.0  # packets/s per stream the relays read around the window


async def _with_far_ends(
    sessions: list[MediaSession], body: Callable[[int], Awaitable[float]]
) -> tuple[float, list[float]]:
    """Run `body(far_port)` with a far-ends process sending to every session."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=far_ends, args=(child,), daemon=True)
    proc.start()
    delays: list[float] = []
    try:
        far = parent.recv()
        parent.send([s.local_port for s in sessions])
        cpu = await body(far)
    finally:
        parent.send("stop")
        parent.send("report")
        delays = sorted(parent.recv()) if parent.poll(10) else []
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return cpu, delays


async def plain_phase(
    clock: RtpClock, n: int, seconds: float, prompt: Any, ports: PortAllocator
) -> Phase:
    plain = [await MediaSession.open(clock, ports, "127.0.0.1") for _ in range(n)]
    plays: list[asyncio.Task[object]] = []

    async def body(far: int) -> float:
        for s in plain:
            s.start("127.0.0.1", far, 0, "PCMU", 101, 101)
            plays.append(asyncio.create_task(s.play(prompt), name="bench-play"))
        return await measure(seconds)

    cpu, _ = await _with_far_ends(plain, body)
    for s in plain:
        s.stop()
    await asyncio.gather(*plays, return_exceptions=True)
    for s in plain:
        await s.close()
    return Phase(cpu, [])


async def bridged_phase(
    clock: RtpClock, n: int, seconds: float, transcode: bool, ports: PortAllocator
) -> Phase:
    legs = [await MediaSession.open(clock, ports, "127.0.0.1") for _ in range(2 * n)]
    bridges: list[Bridge] = []
    arrived: list[int] = []  # packets the relays read, at the window's start and end

    def count() -> int:
        return sum(leg.packets + leg.dropped for b in bridges for leg in (b.a_to_b, b.b_to_a))

    async def body(far: int) -> float:
        for i, s in enumerate(legs):
            codec, pt = ("PCMA", 8) if transcode and i % 2 else ("PCMU", 0)
            s.start("127.0.0.1", far, pt, codec, 101, 101)
        for i in range(n):
            b = Bridge(clock, legs[2 * i], legs[2 * i + 1])
            b.start()
            bridges.append(b)
        await asyncio.sleep(1.0)  # every socket latched
        arrived.append(count())
        cpu = await measure(seconds - 1.0)
        arrived.append(count())
        return cpu

    cpu, delays = await _with_far_ends(legs, body)
    relayed = sum(leg.packets for b in bridges for leg in (b.a_to_b, b.b_to_a))
    dropped = sum(leg.dropped for b in bridges for leg in (b.a_to_b, b.b_to_a))
    for b in bridges:
        b.stop()
    for s in legs:
        await s.close()
    rate = (arrived[1] - arrived[0]) / (2 * n * seconds)  # per stream, around the window
    return Phase(cpu, delays, relayed, dropped, rate)


async def run_n(n: int, seconds: float, transcode: bool, ports: PortAllocator, rounds: int) -> None:
    clock = RtpClock()
    clock.start()
    prompt = await prepare_prompt([{"pause": seconds + 30}], codecs=("PCMU", "PCMA"))
    per_call: list[float] = []
    per_pair: list[float] = []
    for r in range(rounds):
        # alternated: plain first in odd rounds, bridged first in even ones
        if r % 2 == 0:
            plain = await plain_phase(clock, n, seconds, prompt, ports)
            bridged = await bridged_phase(clock, n, seconds, transcode, ports)
        else:
            bridged = await bridged_phase(clock, n, seconds, transcode, ports)
            plain = await plain_phase(clock, n, seconds, prompt, ports)
        per_call.append(plain.cpu / n)
        per_pair.append(bridged.cpu / n)
        delays = bridged.delays

        def pick(q: float, delays: list[float] = delays) -> float:
            return 1e3 * delays[min(len(delays) - 1, int(q * len(delays)))] if delays else 0.0

        delay = (
            f" | relay delay p50 {pick(0.5):.1f} ms p99 {pick(0.99):.1f} ms max {pick(1.0):.1f} ms"
            if delays and not transcode
            else ""
        )
        print(
            f"N={n:5d} {'PCMU<->PCMA' if transcode else 'PCMU<->PCMU'}"
            + (f" round {r + 1}" if rounds > 1 else "")
            + f" | plain: {plain.cpu:5.1f} % CPU, {per_call[-1]:.4f} %/call"
            f" | bridged: {bridged.cpu:5.1f} % CPU, {per_pair[-1]:.4f} %/pair"
            f" | ratio {per_pair[-1] / per_call[-1]:.2f}{delay}"
            f" | {bridged.relayed} relayed, {bridged.dropped} dropped"
            f" | far ends delivered {bridged.rate:.0f} of 50 packets/s per stream",
            flush=True,
        )
    await clock.stop()
    if rounds > 1:
        call, pair = statistics.median(per_call), statistics.median(per_pair)
        print(
            f"N={n:5d} median of {rounds} rounds: {call:.4f} %/call, {pair:.4f} %/pair,"
            f" ratio of the medians {pair / call:.2f}"
            f" (per-round ratios {min(a / b for a, b in zip(per_pair, per_call, strict=True)):.2f}"
            f"-{max(a / b for a, b in zip(per_pair, per_call, strict=True)):.2f})",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="100,200,400", help="pairs (and plain calls) per run")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per phase")
    parser.add_argument("--transcode", action="store_true", help="agent legs in PCMA")
    parser.add_argument(
        "--rounds", type=int, default=1, help="plain and bridged phases alternated, per N (1..10)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ports = PortAllocator(32000, 32000 + 4 * MAX_N + 200)
    for n in (int(x) for x in args.n.split(",")):
        if not 0 < n <= MAX_N:
            raise SystemExit(f"N must be 1..{MAX_N}")
        await run_n(n, min(args.seconds, 30.0), args.transcode, ports, max(1, min(args.rounds, 10)))


if __name__ == "__main__":
    asyncio.run(main())
