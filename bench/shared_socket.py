"""Feasibility of one shared RTP socket sent with `sendmmsg` (issue 18 item 1).

Send side (default): the sender's CPU per packet for N streams (one 172-byte
G.711 RTP packet per stream per tick), four ways in one process, alternated
round by round (the order is reversed every other round):

* ``send``:  N connected per-call sockets, one ``send`` each per tick: today's
  bare send, the baseline every other row is divided by;
* ``sendto``: one shared unconnected socket, ``sendto(pkt, addr)`` per packet;
* ``mmsg``:  one shared socket, ``sendmmsg`` through ctypes once per tick (in
  calls of at most 1,024, the kernel's UIO_MAXIOV) over a preallocated
  ``mmsghdr``/``iovec``/``sockaddr_in`` array and N preallocated 172-byte slots;
  every tick first patches all N headers in place (sequence + 1, timestamp +
  160 on native numpy counters, stored into the big-endian fields of a
  structured view over the slots), and that patch is counted in the figure
  (its share is printed apart);
* ``mmsg2``: as ``mmsg`` with two iovecs per packet: the 12-byte header slot
  and a pointer into one shared prompt buffer (50 s of PCMU), advanced by 160
  bytes per tick and wrapped, vectorised: what a broadcast needs, since the
  payload changes every tick (no copy of the payload at all).

Each far end (one socket per stream, distinct port) is drained after every
tick, outside the timed step (``--far-end drain``), or drops everything in
the kernel with a BPF filter, as ringcast's own RTP sockets do with the
callee's audio (``--far-end filter``). Only the send step is timed
(``time.thread_time``; its system share from ``getrusage``, approximate). On
loopback the far end's kernel receive path runs in the sender's system call
and is counted too, equally in every mode. ``--modes`` picks and orders the
modes (the ratios need ``send``).

    .venv/bin/python bench/shared_socket.py                       # N = 1000, 3000, 5000
    .venv/bin/python bench/shared_socket.py --n 5000 --rounds 3 --seconds 2
    .venv/bin/python bench/shared_socket.py --patch               # per-tick array work alone
    .venv/bin/python bench/shared_socket.py --rx                  # receive lookup cost
    .venv/bin/python bench/shared_socket.py --kernel              # receive-side behaviour
    .venv/bin/python bench/shared_socket.py --kernel --host ::1   # the same over IPv6

``--rx``: the callee-to-ringcast direction, CPU per packet of N far ends each
sending one packet per tick to (i) N per-call sockets on N ports (today), or
(ii) N per-call sockets connected to their far ends on ONE port (SO_REUSEPORT
group, plus an unconnected demultiplexer), all with a drop-all BPF filter (the
production filter with nobody listening). The kernel's socket lookup is the
difference; a stranger's packet (to the demultiplexer) is timed too.

``--patch``: µs per stream per tick of the array work a batched tick would do
(header patch variants, a Python copy into a slot, gathering active mmsghdrs).

``--kernel``: 200 connected sockets and one unconnected demultiplexer on one
port: who receives what (peers, strangers), and how often a stranger's packet
lands on a socket in the window between its ``bind()`` and its ``connect()``,
unguarded, with a reuseport CBPF program (SO_ATTACH_REUSEPORT_CBPF, ``ret
#0``: the group's first socket, the demultiplexer), and with that plus a
drop-all socket filter attached before ``bind()`` and removed after
``connect()``; then the same port experiment with 0, 1 and 8 connected
sockets, with and without the CBPF program.

Everything stays on 127.0.0.1 (or ::1 with ``--host ::1``, for ``--kernel`` and
``--rx``) and is bounded: N <= 5,000, seconds <= 10 per row, rounds <= 5.
Linux only; the mmsghdr layout is LP64's (x86-64, aarch64). Results and the
design drawn from them: bench/RESULTS.md, "One shared RTP socket with
`sendmmsg`".
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

MAX_STREAMS = 5000
MAX_SECONDS = 10.0
MAX_ROUNDS = 5
PACKET = 172  # bytes: 12-byte RTP header + 160 bytes of PCMU (20 ms)
PAYLOAD = 160
UIO_MAXIOV = 1024  # the kernel's cap on one sendmmsg's vlen
SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_FILTER = 27
SHARED_SNDBUF = 4 * 1024 * 1024  # bytes (net.core.wmem_max caps it)
PROMPT_FRAMES = 2500  # 50 s of 20 ms frames in the mmsg2 prompt buffer

# the RTP header + payload of one slot, as it lies in memory (no padding)
RTP_SLOT = np.dtype(
    [
        ("b0", "u1"),
        ("b1", "u1"),
        ("seq", ">u2"),
        ("ts", ">u4"),
        ("ssrc", ">u4"),
        ("payload", "u1", (PAYLOAD,)),
    ]
)
RTP_HEADER = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])
# struct iovec, struct sockaddr_in, struct mmsghdr (x86-64 / aarch64 LP64 layouts)
IOVEC = np.dtype([("base", "<u8"), ("len", "<u8")])
SOCKADDR_IN = np.dtype([("family", "<u2"), ("port", ">u2"), ("addr", ">u4"), ("zero", "u1", (8,))])
MMSGHDR = np.dtype(
    [
        ("name", "<u8"),
        ("namelen", "<u4"),
        ("_pad0", "<u4"),
        ("iov", "<u8"),
        ("iovlen", "<u8"),
        ("control", "<u8"),
        ("controllen", "<u8"),
        ("flags", "<i4"),
        ("_pad1", "<u4"),
        ("len", "<u4"),
        ("_pad2", "<u4"),
    ]
)
assert RTP_SLOT.itemsize == PACKET and MMSGHDR.itemsize == 64 and SOCKADDR_IN.itemsize == 16

_rusage = resource.getrusage
_THREAD = resource.RUSAGE_THREAD
_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


# -- sockets -------------------------------------------------------------------------------


HOST = "127.0.0.1"  # --host ::1 for the receive-side checks over IPv6


def _family() -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in HOST else socket.AF_INET


def udp(bind_port: int = 0, *, reuseport: bool = False) -> socket.socket:
    s = socket.socket(_family(), socket.SOCK_DGRAM)
    s.setblocking(False)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, bind_port))
    return s


def attach(sock: socket.socket, prog: list[tuple[int, int, int, int]], opt: int) -> None:
    """Classic BPF `prog` as SO_ATTACH_FILTER (this socket) or SO_ATTACH_REUSEPORT_CBPF
    (its reuseport group's selector): a struct sock_fprog either way."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    sock.setsockopt(socket.SOL_SOCKET, opt, struct.pack("HL", len(prog), ctypes.addressof(code)))


DROP_ALL = [(0x06, 0, 0, 0)]  # ret #0
FIRST_SOCKET = [(0x06, 0, 0, 0)]  # as a reuseport selector: index 0 of the group


def far_ends(n: int, mode: str) -> list[socket.socket]:
    ends = []
    for _ in range(n):
        s = udp()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        if mode == "filter":
            attach(s, DROP_ALL, SO_ATTACH_FILTER)
        ends.append(s)
    return ends


def drain(ends: list[socket.socket], buf: bytearray) -> None:
    for s in ends:
        with contextlib.suppress(OSError):
            while s.recv_into(buf):
                pass


# -- the send modes --------------------------------------------------------------------------


class Batch:
    """N RTP streams as preallocated slots and one mmsghdr array over a shared socket."""

    def __init__(self, sock: socket.socket, dests: list[tuple[str, int]], two_iov: bool) -> None:
        n = len(dests)
        self.sock = sock
        self.fd = sock.fileno()
        self.n = n
        self.two_iov = two_iov
        if two_iov:
            self.hdrs = np.zeros(n, RTP_HEADER)
            self.prompt = np.frombuffer(os.urandom(PROMPT_FRAMES * PAYLOAD), np.uint8).copy()
            self.pos = (np.arange(n, dtype=np.uint64) * 7) % PROMPT_FRAMES  # frame per stream
            self.prompt_base = np.uint64(self.prompt.ctypes.data)
        else:
            self.hdrs = np.zeros(n, RTP_SLOT)
            self.hdrs["payload"] = 0xFF  # PCMU silence
        h = self.hdrs
        h["b0"] = 0x80
        h["b1"] = 0
        h["ssrc"] = np.arange(1, n + 1, dtype=np.uint32)
        # the counters in native arrays, stored into the big-endian header fields every
        # tick: half the cost of += on the big-endian views (--patch)
        self.seq_be = h["seq"]
        self.ts_be = h["ts"]
        self.seq = (np.arange(n) * 31).astype(np.uint16)
        self.ts = (np.arange(n) * 977).astype(np.uint32)
        self.seq_be[...] = self.seq
        self.ts_be[...] = self.ts
        base = self.hdrs.ctypes.data
        if two_iov:
            self.iov = np.zeros((n, 2), IOVEC)
            self.iov[:, 0]["base"] = base + np.arange(n, dtype=np.uint64) * RTP_HEADER.itemsize
            self.iov[:, 0]["len"] = RTP_HEADER.itemsize
            self.iov[:, 1]["len"] = PAYLOAD
            self.iov1 = self.iov[:, 1]["base"]
            self._advance()
        else:
            self.iov = np.zeros((n, 1), IOVEC)
            self.iov[:, 0]["base"] = base + np.arange(n, dtype=np.uint64) * PACKET
            self.iov[:, 0]["len"] = PACKET
        self.names = np.zeros(n, SOCKADDR_IN)
        self.names["family"] = socket.AF_INET
        self.names["port"] = [p for _, p in dests]
        self.names["addr"] = [int.from_bytes(socket.inet_aton(h), "big") for h, _ in dests]
        self.msgs = np.zeros(n, MMSGHDR)
        self.msgs["name"] = self.names.ctypes.data + np.arange(n, dtype=np.uint64) * 16
        self.msgs["namelen"] = 16
        per_iov = self.iov.itemsize * self.iov.shape[1]
        self.msgs["iov"] = self.iov.ctypes.data + np.arange(n, dtype=np.uint64) * per_iov
        self.msgs["iovlen"] = self.iov.shape[1]
        self.msgs_addr = self.msgs.ctypes.data
        self.errors = 0

    def _advance(self) -> None:
        """The next frame of every stream's prompt (wrapping), as iovec[1] pointers."""
        pos = self.pos
        pos += np.uint64(1)
        pos[pos >= PROMPT_FRAMES] = 0
        np.multiply(pos, np.uint64(PAYLOAD), out=self.iov1)
        self.iov1 += self.prompt_base

    def patch(self) -> None:
        seq, ts = self.seq, self.ts
        seq += 1  # uint16 wraps at 2**16, uint32 at 2**32, as RTP wants
        ts += PAYLOAD
        self.seq_be[...] = seq
        self.ts_be[...] = ts
        if self.two_iov:
            self._advance()

    def send(self) -> int:
        """One sendmmsg per UIO_MAXIOV packets; what the kernel refused is counted."""
        sent = 0
        n, fd, addr = self.n, self.fd, self.msgs_addr
        while sent < n:
            count = min(UIO_MAXIOV, n - sent)
            r = _sendmmsg(fd, addr + sent * 64, count, 0)
            if r < 0:  # EAGAIN (send buffer full) or another error: skip the packet
                self.errors += 1
                r = 1
            sent += r
        return n


def run_mode(
    mode: str,
    conns: list[socket.socket],
    shared: socket.socket,
    dests: list[tuple[str, int]],
    ends: list[socket.socket],
    far_end: str,
    seconds: float,
) -> tuple[float, float, float, int]:
    """(µs per packet, of which patch µs, of which kernel µs, errors) of `mode` over
    `seconds` of ticks (kernel: the thread's system time, getrusage)."""
    n = len(dests)
    pkt = bytes([0x80, 0]) + bytes(10) + b"\xff" * PAYLOAD
    buf = bytearray(2048)
    step: Callable[[], object]
    batch: Batch | None = None
    errors = 0
    if mode == "send":
        sends = [c.send for c in conns]

        def step() -> None:
            nonlocal errors
            for send in sends:
                try:
                    send(pkt)
                except OSError:
                    errors += 1

    elif mode == "sendto":
        sendto = shared.sendto

        def step() -> None:
            nonlocal errors
            for addr in dests:
                try:
                    sendto(pkt, addr)
                except OSError:
                    errors += 1

    else:
        batch = Batch(shared, dests, two_iov=mode == "mmsg2")
        step = batch.send
    clock = time.thread_time
    cpu = patch_cpu = sys_cpu = 0.0
    ticks = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s0 = _rusage(_THREAD).ru_stime
        t0 = clock()
        if batch is not None:
            batch.patch()
            t1 = clock()
            patch_cpu += t1 - t0
        step()
        cpu += clock() - t0
        sys_cpu += _rusage(_THREAD).ru_stime - s0
        ticks += 1
        if far_end == "drain":
            drain(ends, buf)
    if batch is not None:
        errors = batch.errors
    packets = ticks * n
    return cpu / packets * 1e6, patch_cpu / packets * 1e6, sys_cpu / packets * 1e6, errors


def send_side(ns: list[int], rounds: int, seconds: float, far_end: str, modes: list[str]) -> None:
    print(
        f"far end: {far_end}; {seconds:g} s per row; µs of sender CPU per packet "
        f"(thread_time around the send step)",
        flush=True,
    )
    print(
        f"{'round':>5} {'N':>5} {'mode':>6} {'µs/pkt':>7} {'patch µs':>8} {'kernel µs':>9} "
        f"{'× send':>7} {'streams/core':>12} {'errors':>6}",
        flush=True,
    )
    for n in ns:
        ends = far_ends(n, far_end)
        dests = [e.getsockname() for e in ends]
        conns = []
        for d in dests:
            c = udp()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # as rtp.udp
            c.connect(d)
            conns.append(c)
        shared = udp()
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SHARED_SNDBUF)
        try:
            for r in range(rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                results = {}
                for mode in order:
                    results[mode] = run_mode(mode, conns, shared, dests, ends, far_end, seconds)
                base = results["send"][0] if "send" in results else float("nan")
                for mode in modes:
                    us, patch, kern, errs = results[mode]
                    patch_s = f"{patch:8.3f}" if mode.startswith("mmsg") else f"{'':>8}"
                    print(
                        f"{r + 1:>5} {n:>5} {mode:>6} {us:7.3f} {patch_s} {kern:9.3f} "
                        f"{us / base:7.2f} "
                        f"{20000 / us:12.0f} {errs:>6}",
                        flush=True,
                    )
        finally:
            for s in (*conns, *ends, shared):
                s.close()


# -- header patch variants alone ---------------------------------------------------------------


def patch_variants(n: int, rounds: int) -> None:
    """µs per header of ways to advance N headers' seq and ts by one tick (no send)."""
    hdrs = np.zeros(n, RTP_SLOT)
    seq_be, ts_be = hdrs["seq"], hdrs["ts"]
    seq_n = np.zeros(n, np.uint16)
    ts_n = np.zeros(n, np.uint32)
    slots = [memoryview(hdrs[i : i + 1].view(np.uint8)).cast("B") for i in range(n)]
    pack_into = struct.Struct("!HI").pack_into
    counters = [[0, 0] for _ in range(n)]

    def be_inplace() -> None:
        seq_be[...] += 1
        ts_be[...] += PAYLOAD

    def native_then_store() -> None:
        seq_n[...] += 1
        ts_n[...] += PAYLOAD
        seq_be[...] = seq_n
        ts_be[...] = ts_n

    def python_pack_into() -> None:
        for slot, c in zip(slots, counters, strict=True):
            c[0] = (c[0] + 1) & 0xFFFF
            c[1] = (c[1] + PAYLOAD) & 0xFFFFFFFF
            pack_into(slot, 2, c[0], c[1])

    # a stream the vector step does not drive (an RFC 4733 event, a relayed packet)
    # copies its packet into its slot: the cost per such stream
    pkt = bytes(PACKET)

    def python_slot_copy() -> None:
        for slot in slots:
            slot[:] = pkt

    # a tick where some streams send nothing (held, idle): the mmsghdrs of those that
    # do, gathered into one contiguous array for sendmmsg (here 90 % of them)
    # (as rows of 8 uint64: numpy copies a structured dtype 20 times slower)
    msgs = np.zeros(n, MMSGHDR).view(np.uint64).reshape(n, 8)
    active = np.random.default_rng(1).random(n) < 0.9
    out = np.zeros((n, 8), np.uint64)

    def gather_active() -> None:
        k = int(np.count_nonzero(active))
        np.compress(active, msgs, axis=0, out=out[:k])

    variants: list[tuple[str, Callable[[], None], int]] = [
        ("numpy big-endian in place", be_inplace, 2000),
        ("numpy native + store", native_then_store, 2000),
        ("Python pack_into per slot", python_pack_into, 50),
        ("Python copy into slot", python_slot_copy, 50),
        ("gather 90 % active mmsghdr", gather_active, 2000),
    ]
    print(f"N = {n}: µs per stream per tick")
    for r in range(rounds):
        for name, fn, reps in variants:
            t0 = time.thread_time()
            for _ in range(reps):
                fn()
            us = (time.thread_time() - t0) / (reps * n) * 1e6
            print(f"  round {r + 1}  {name:<28} {us:7.4f}", flush=True)
    check = np.zeros(3, RTP_SLOT)
    check["seq"] = 0xFFFF
    check["ts"] = 0xFFFFFFFF - 100
    check["seq"] += 1
    check["ts"] += PAYLOAD
    assert check["seq"][0] == 0 and check["ts"][0] == 59, "big-endian wrap"
    assert bytes(check[:1].view(np.uint8)[2:8]) == b"\x00\x00\x00\x00\x00\x3b"


# -- receive side: the kernel's lookup cost ----------------------------------------------------


def rx_cost(ns: list[int], rounds: int, seconds: float) -> None:
    print("µs of far-end CPU per packet sent to ringcast's side (drop-all filter there)")
    print(f"{'round':>5} {'N':>5} {'ringcast side':>26} {'µs/pkt':>7} {'× ports':>8}", flush=True)
    for n in ns:
        for r in range(rounds):
            res: dict[str, float] = {}
            for layout in (
                ("ports", "shared", "stranger") if r % 2 == 0 else ("stranger", "shared", "ports")
            ):
                res[layout] = _rx_once(n, layout, seconds)
            for layout, label in (
                ("ports", "N ports (today)"),
                ("shared", "one port, N connected"),
                ("stranger", "one port, to demux"),
            ):
                print(
                    f"{r + 1:>5} {n:>5} {label:>26} {res[layout]:7.3f} "
                    f"{res[layout] / res['ports']:8.2f}",
                    flush=True,
                )


def _rx_once(n: int, layout: str, seconds: float) -> float:
    peers = [udp() for _ in range(n)]
    ours: list[socket.socket] = []
    try:
        if layout == "ports":
            for p in peers:
                s = udp()
                s.connect(p.getsockname())
                attach(s, DROP_ALL, SO_ATTACH_FILTER)
                ours.append(s)
        else:
            demux = udp(reuseport=True)
            attach(demux, DROP_ALL, SO_ATTACH_FILTER)
            ours.append(demux)
            port = demux.getsockname()[1]
            for p in peers:
                s = udp(port, reuseport=True)
                s.connect(p.getsockname())
                attach(s, DROP_ALL, SO_ATTACH_FILTER)
                ours.append(s)
        targets = [s.getsockname() for s in ours[-n:]]
        pkt = bytes([0x80, 0]) + bytes(10) + b"\xff" * PAYLOAD
        if layout == "stranger":
            stranger = udp()
            peers.append(stranger)
            sends: list[Callable[[], object]] = [
                lambda: stranger.sendto(pkt, targets[0]) for _ in range(n)
            ]
        else:
            for p, t in zip(peers, targets, strict=True):
                p.connect(t)
            sends = [lambda p=p: p.send(pkt) for p in peers]  # type: ignore[misc]
        cpu = 0.0
        count = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.thread_time()
            for send in sends:
                with contextlib.suppress(OSError):
                    send()
            cpu += time.thread_time() - t0
            count += len(sends)
        return cpu / count * 1e6
    finally:
        for s in (*peers, *ours):
            s.close()


# -- receive side: who gets what -----------------------------------------------------------------


def kernel_checks(n: int = 200, strangers: int = 64, rounds: int = 20) -> None:
    print(
        f"kernel {platform.release()}, {HOST}: {n} connected sockets + 1 demultiplexer on one port"
    )
    demux = udp(reuseport=True)
    port = demux.getsockname()[1]
    peers = [udp() for _ in range(n)]
    calls = []
    for p in peers:
        s = udp(port, reuseport=True)
        s.connect(p.getsockname())
        calls.append(s)
    outsiders = [udp() for _ in range(strangers)]
    try:
        for i, p in enumerate(peers):
            for k in range(3):
                p.sendto(b"peer %d %d" % (i, k), (HOST, port))
        for j, o in enumerate(outsiders):
            o.sendto(b"stranger %d" % j, (HOST, port))
        time.sleep(0.05)
        wrong = right = 0
        for i, s in enumerate(calls):
            for data, addr in _read_all(s):
                ok = data.startswith(b"peer %d " % i) and addr == peers[i].getsockname()
                right += ok
                wrong += not ok
        at_demux = list(_read_all(demux))
        from_strangers = sum(d.startswith(b"stranger") for d, _ in at_demux)
        print(
            f"  peers' packets on their own call socket: {right} of {3 * n}; misdelivered: "
            f"{wrong}; demux got {from_strangers} of {strangers} strangers' packets and "
            f"{len(at_demux) - from_strangers} others"
        )
        # the program stays attached to the group: the third row has both guards
        for guard in ("none", "cbpf", "cbpf+filter"):
            if guard == "cbpf":
                attach(demux, FIRST_SOCKET, SO_ATTACH_REUSEPORT_CBPF)
            hit = total = at_demux_n = peer_early = 0
            for _ in range(rounds):
                newcomer_peer = udp()
                new = socket.socket(_family(), socket.SOCK_DGRAM)
                new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                new.setblocking(False)
                if guard == "cbpf+filter":  # drop everything until connected
                    attach(new, DROP_ALL, SO_ATTACH_FILTER)
                new.bind((HOST, port))  # the window: bound, not yet connected
                for j, o in enumerate(outsiders):
                    o.sendto(b"stranger %d" % j, (HOST, port))
                newcomer_peer.sendto(b"early", (HOST, port))
                time.sleep(0.01)
                got = list(_read_all(new))
                hit += sum(d.startswith(b"stranger") for d, _ in got)
                peer_early += sum(d == b"early" for d, _ in got)
                at_demux_n += sum(d.startswith(b"stranger") for d, _ in _read_all(demux))
                total += strangers
                new.connect(newcomer_peer.getsockname())
                if guard == "cbpf+filter":  # the real filter would go here; none: pass all
                    new.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                # the connected newcomer now gets its own peer's packets, nothing else
                newcomer_peer.sendto(b"after", (HOST, port))
                outsiders[0].sendto(b"stranger late", (HOST, port))
                time.sleep(0.005)
                after = [d for d, _ in _read_all(new)]
                assert after == [b"after"], after
                late = [d for d, _ in _read_all(demux)]
                assert late == [b"stranger late"], late
                new.close()
                newcomer_peer.close()
            print(
                f"  bind->connect window, guard {guard!r}: {hit} of {total} strangers' packets "
                f"({100 * hit / total:.1f} %) read from the not-yet-connected socket, "
                f"{at_demux_n} by the demux, {total - hit - at_demux_n} dropped; its own "
                f"peer's early packet read there {peer_early} of {rounds} times; after "
                f"connect() every packet went where it belongs"
            )
        window = []
        for p in peers[:100]:  # how long a new socket's window lasts (no traffic)
            new = socket.socket(_family(), socket.SOCK_DGRAM)
            new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            attach(new, DROP_ALL, SO_ATTACH_FILTER)
            t0 = time.perf_counter()
            new.bind((HOST, port))
            new.connect(p.getsockname())
            window.append(time.perf_counter() - t0)
            new.close()
        window.sort()
        print(
            f"  bind() to connect() in Python: median {window[50] * 1e6:.1f} µs, "
            f"max {window[-1] * 1e6:.1f} µs over 100 sockets"
        )
    finally:
        for s in (demux, *peers, *calls, *outsiders):
            s.close()


def reuseport_groups(strangers: int = 64) -> None:
    """Why the CBPF selector does not close the window once a call has connected:
    64 strangers' packets to a port holding the demultiplexer, `conns` connected call
    sockets and one new bound-not-connected socket, with and without ``ret #0``."""
    for conns in (0, 1, 8):
        for cbpf in (False, True):
            demux = udp(reuseport=True)
            port = demux.getsockname()[1]
            if cbpf:
                attach(demux, FIRST_SOCKET, SO_ATTACH_REUSEPORT_CBPF)
            peers = [udp() for _ in range(conns)]
            calls = []
            for p in peers:
                c = udp(port, reuseport=True)
                c.connect(p.getsockname())
                calls.append(c)
            new = udp(port, reuseport=True)
            outs = [udp() for _ in range(strangers)]
            for o in outs:
                o.sendto(b"x", (HOST, port))
            time.sleep(0.02)
            got_new, got_demux = len(list(_read_all(new))), len(list(_read_all(demux)))
            print(
                f"  {conns} connected, {'CBPF ret #0' if cbpf else 'no program ':<11}: new socket "
                f"{got_new}, demux {got_demux} of {strangers}"
            )
            for s in (demux, new, *peers, *calls, *outs):
                s.close()


def _read_all(sock: socket.socket) -> Iterator[tuple[bytes, tuple[str, int]]]:
    while True:
        try:
            yield sock.recvfrom(2048)
        except BlockingIOError:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,3000,5000", help="stream counts (<= 5000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="per row")
    ap.add_argument("--far-end", choices=("drain", "filter"), default="drain")
    ap.add_argument("--modes", default="send,sendto,mmsg,mmsg2", help="send modes, in order")
    ap.add_argument("--patch", action="store_true", help="header patch variants alone")
    ap.add_argument("--rx", action="store_true", help="receive lookup cost")
    ap.add_argument("--kernel", action="store_true", help="receive-side behaviour")
    ap.add_argument("--host", choices=("127.0.0.1", "::1"), default="127.0.0.1")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("Linux only (sendmmsg, SO_REUSEPORT groups, BPF)")
    global HOST
    HOST = args.host
    if HOST != "127.0.0.1" and not (args.kernel or args.rx):
        sys.exit("the send side is IPv4 only (sockaddr_in)")
    ns = [int(x) for x in args.n.split(",")]
    if any(not 0 < n <= MAX_STREAMS for n in ns):
        sys.exit(f"N must be 1..{MAX_STREAMS}")
    seconds = min(args.seconds, MAX_SECONDS)
    rounds = max(1, min(args.rounds, MAX_ROUNDS))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(ns) + 400
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    load = os.getloadavg()[0]
    print(f"kernel {platform.release()}, python {platform.python_version()}, load {load:.1f}")
    if args.kernel:
        kernel_checks()
        reuseport_groups()
    elif args.patch:
        for n in ns:
            patch_variants(n, rounds)
    elif args.rx:
        rx_cost(ns, rounds, seconds)
    else:
        modes = args.modes.split(",")
        if not set(modes) <= {"send", "sendto", "mmsg", "mmsg2"}:
            sys.exit(f"unknown mode in {args.modes}")
        send_side(ns, rounds, seconds, args.far_end, modes)
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
