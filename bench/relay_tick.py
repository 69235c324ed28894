"""Per-tick cost of the RTP relay (issue 17): one clock tick over N bridged pairs.

N pairs of real MediaSessions on 127.0.0.1 are bridged (`ringcast.rtp.relay.Bridge`)
and latched on one far-end socket of this process. The shared clock's task is
not run: each round puts datagrams in every leg's socket (untimed), then times
one `RtpClock._tick` (what the clock does every 20 ms: every leg reads its
socket and sends one packet), then drains what the relay sent (untimed).
Printed: µs per leg per tick (median and quartiles over the rounds of the
tick's CPU time, user and system, of this thread: a shared machine's other
load does not count, the kernel's loopback delivery of what the relay sends
does).

Patterns of what the far ends send before a tick (`--mix`):

* ``one``: exactly one datagram per leg (the steady state of a 20 ms call);
* ``jitter``: one per leg, but 10 % of legs none and 10 % two (a source off
  phase with the clock).

Run it against another tree's src with PYTHONPATH (same sitting, alternated):

    .venv/bin/python bench/relay_tick.py --n 200 --rounds 400
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/relay_tick.py --n 200

127.0.0.1 only; bounded in pairs and rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import struct
import time

import ringcast.rtp.relay as relay_mod
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.relay import Bridge

MAX_N = 1000
MAX_ROUNDS = 5000


def packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0xFA11) + bytes(
        160
    )


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return n
        n += 1


async def run(n: int, rounds: int, mix: str, seed: int) -> list[float]:
    clock = RtpClock()
    clock.start = lambda: None  # type: ignore[method-assign]  # ticks are driven by hand
    ports = PortAllocator(36000, 36000 + 4 * MAX_N + 100)
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.setblocking(False)
    far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    legs = [await MediaSession.open(clock, ports, "127.0.0.1") for _ in range(2 * n)]
    addrs = [("127.0.0.1", s.local_port) for s in legs]
    for s in legs:
        s.start("127.0.0.1", far.getsockname()[1], 0, "PCMU", 101, 101)
    for a in addrs:  # latch every session on the far end
        far.sendto(packet(0), a)
    await asyncio.sleep(0.2)
    bridges = [Bridge(clock, legs[2 * i], legs[2 * i + 1]) for i in range(n)]
    for b in bridges:
        b.start()
    assert all(leg.sock is not None for b in bridges for leg in (b.a_to_b, b.b_to_a))
    rng = random.Random(seed)
    samples: list[float] = []
    for r in range(rounds + 20):
        for a in addrs:
            k = 1 if mix == "one" else rng.choices((0, 1, 2), (1, 8, 1))[0]
            for _ in range(k):
                far.sendto(packet(r), a)
        clock.ticks += 1
        t0 = time.thread_time_ns()
        clock._tick(False)
        t1 = time.thread_time_ns()
        drain(far)
        if r >= 20:  # warm-up
            samples.append((t1 - t0) / 1e3 / (2 * n))
        if r % 50 == 49:
            await asyncio.sleep(0)  # let the loop breathe (latch timers etc.)
    relayed = sum(leg.packets for b in bridges for leg in (b.a_to_b, b.b_to_a))
    for b in bridges:
        b.stop()
    for s in legs:
        await s.close()
    far.close()
    assert relayed >= 0.7 * rounds * 2 * n, f"only {relayed} relayed"
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="bridged pairs")
    parser.add_argument("--rounds", type=int, default=400, help="timed ticks")
    parser.add_argument("--mix", choices=("one", "jitter"), default="one")
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process")
    args = parser.parse_args()
    if not 0 < args.n <= MAX_N or not 0 < args.rounds <= MAX_ROUNDS:
        raise SystemExit(f"--n 1..{MAX_N}, --rounds 1..{MAX_ROUNDS}")
    for i in range(min(args.repeat, 10)):
        s = sorted(await run(args.n, args.rounds, args.mix, seed=i))
        deciles = statistics.quantiles(s, n=10)
        print(
            f"{relay_mod.__file__.split('/src/')[0].split('/')[-1]:>14} N={args.n} {args.mix:6}"
            f" µs per leg per tick: median {deciles[4]:.2f}"
            f" (p10 {deciles[0]:.2f}, p90 {deciles[8]:.2f}, min {s[0]:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
