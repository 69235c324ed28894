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

Deterministic figures, on a machine too busy for timings: `--callgrind` runs
each tick inside `functools.reduce`, so callgrind counts the user-space
instructions (and system calls) of the ticks alone; valgrind slows the
process ~50x, so give the relay's poll interval ~50x too (this tree's relay
polls by time within a tick; main's has no poll interval):

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        --collect-systime=nsec .venv/bin/python bench/relay_tick.py --n 50 --rounds 100 \
        --callgrind --poll-interval 0.025

Instructions per leg per tick = "Collected" Ir / (2N x (rounds + 20)).

`--primitives` times, on 2N plain non-blocking sockets holding one datagram each
(or none), the ways a relay can learn what a socket holds, interleaved round by
round: recv then FIONREAD (is a second datagram there?), recv then a recv that
fails with EAGAIN, and one epoll for all: poll, recv each ready socket, poll
again (a second datagram keeps a socket ready); with the costs of an empty
socket's failing recv and FIONREAD beside them.

127.0.0.1 only; bounded in pairs and rounds.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import fcntl
import functools
import random
import select
import socket
import statistics
import struct
import termios
import time
from collections.abc import Callable

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


def _call(_: object, tick: Callable[[bool], None]) -> None:
    tick(False)


async def run(
    n: int, rounds: int, mix: str, seed: int, callgrind: bool = False
) -> tuple[list[float], int, int]:
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
        if callgrind:
            functools.reduce(_call, (clock._tick,), None)  # what callgrind counts
        else:
            clock._tick(False)
        t1 = time.thread_time_ns()
        drain(far)
        if r >= 20:  # warm-up
            samples.append((t1 - t0) / 1e3 / (2 * n))
        if r % 50 == 49:
            await asyncio.sleep(0)  # let the loop breathe (latch timers etc.)
    relayed = sum(leg.packets for b in bridges for leg in (b.a_to_b, b.b_to_a))
    dropped = sum(leg.dropped for b in bridges for leg in (b.a_to_b, b.b_to_a))
    for b in bridges:
        b.stop()
    for s in legs:
        await s.close()
    far.close()
    assert relayed >= 0.7 * rounds * 2 * n, f"only {relayed} relayed"
    return samples, relayed, dropped


def primitives(n: int, rounds: int) -> None:
    """µs per socket of each way to read 2N sockets' datagrams (see the docstring)."""
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.setblocking(False)
    socks = []
    for _ in range(2 * n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.connect(far.getsockname())
        socks.append(s)
    addrs = [s.getsockname() for s in socks]
    fds = [s.fileno() for s in socks]
    recvs = {s.fileno(): s.recv for s in socks}
    ep = select.epoll()
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    waiting = array.array("i", [0])
    ioctl, fionread = fcntl.ioctl, termios.FIONREAD
    pkt = packet(1)

    def recv_fionread() -> None:  # main's relay: recv, then FIONREAD until it says 0
        for s, fd in zip(socks, fds, strict=True):
            try:
                s.recv(2048)
                while not ioctl(fd, fionread, waiting) and waiting[0]:
                    s.recv(2048)
            except OSError:
                pass

    def recv_until_eagain() -> None:
        for s in socks:
            try:
                while True:
                    s.recv(2048)
            except OSError:
                pass

    def epoll_repoll() -> None:  # this relay: one poll, a recv per ready socket, poll again
        ready = ep.poll(0)
        while ready:
            for fd, _ in ready:
                try:
                    recvs[fd](2048)
                except OSError:
                    pass
            ready = ep.poll(0)

    def recv_empty() -> None:
        for s in socks:
            try:
                s.recv(2048)
            except OSError:
                pass

    def fionread_empty() -> None:
        for fd in fds:
            ioctl(fd, fionread, waiting)

    ways: list[tuple[str, Callable[[], None], bool]] = [
        ("recv + FIONREAD (one datagram)", recv_fionread, True),
        ("recv until EAGAIN (one datagram)", recv_until_eagain, True),
        ("epoll: poll, recv ready, poll (one datagram)", epoll_repoll, True),
        ("recv failing with EAGAIN (empty socket)", recv_empty, False),
        ("FIONREAD (empty socket)", fionread_empty, False),
        ("epoll: one poll, nothing ready (per socket)", epoll_repoll, False),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    for _ in range(rounds):
        for name, way, full in ways:
            if full:
                for a in addrs:
                    far.sendto(pkt, a)
            t0 = time.thread_time_ns()
            way()
            times[name].append((time.thread_time_ns() - t0) / 1e3 / len(socks))
            recv_until_eagain()
    for name, _, _ in ways:
        q = statistics.quantiles(times[name], n=10)
        print(f"{name:46} µs per socket: median {q[4]:.3f} (p10 {q[0]:.3f}, p90 {q[8]:.3f})")
    ep.close()
    for s in socks:
        s.close()
    far.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="bridged pairs")
    parser.add_argument("--rounds", type=int, default=400, help="timed ticks")
    parser.add_argument("--mix", choices=("one", "jitter"), default="one")
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process")
    parser.add_argument("--primitives", action="store_true", help="the ways to read, alone")
    parser.add_argument("--callgrind", action="store_true", help="ticks inside functools.reduce")
    parser.add_argument("--poll-interval", type=float, help="the relay's POLL_INTERVAL (s)")
    args = parser.parse_args()
    if args.poll_interval is not None and hasattr(relay_mod, "POLL_INTERVAL"):
        relay_mod.POLL_INTERVAL = args.poll_interval
    if not 0 < args.n <= MAX_N or not 0 < args.rounds <= MAX_ROUNDS:
        raise SystemExit(f"--n 1..{MAX_N}, --rounds 1..{MAX_ROUNDS}")
    if args.primitives:
        primitives(args.n, args.rounds)
        return
    for i in range(min(args.repeat, 10)):
        samples, relayed, dropped = await run(
            args.n, args.rounds, args.mix, seed=i, callgrind=args.callgrind
        )
        s = sorted(samples)
        deciles = statistics.quantiles(s, n=10)
        print(
            f"{relay_mod.__file__.split('/src/')[0].split('/')[-1]:>14} N={args.n} {args.mix:6}"
            f" µs per leg per tick: median {deciles[4]:.2f}"
            f" (p10 {deciles[0]:.2f}, p90 {deciles[8]:.2f}, min {s[0]:.2f})"
            f" | {relayed} relayed, {dropped} dropped",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
