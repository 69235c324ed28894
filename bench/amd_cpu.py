"""CPU of listening to callees: N live calls' media with and without detection.

    .venv/bin/python bench/amd_cpu.py --n 500 --window 8

One process holds N MediaSessions on the shared RTP clock, each streaming a
prompt to a socket nobody reads (the send path of N calls, as in production).
A second process plays the callees: every 20 ms it sends each session one
PCMU packet of a machine greeting from the synthetic corpus (50 packets/s per
call, like a real callee). Measured in the same run, over the same window,
the session process's CPU (user + system) in three set-ups:

- baseline: no one listens; the kernel's socket filter drops the callee's audio;
- detection: every session has a MachineDetector listening through the
  dialer's own listener (80 ms batches), re-armed when it finishes, so all N
  detect for the whole window: the worst case; a real call listens for its
  first seconds only;
- in-band DTMF: the sessions negotiated no telephone-event, so every audio
  packet goes through the Q.24 DTMF receiver for the whole call.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import resource
import socket
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import amd_corpus  # noqa: E402
from send_baseline import rtp_packets, send_cost  # noqa: E402

from ringcast.dialer.answered import _AmdListener  # noqa: E402
from ringcast.media import prepare_prompt  # noqa: E402
from ringcast.media.amd import MachineDetector  # noqa: E402
from ringcast.media.codecs import get_codec  # noqa: E402
from ringcast.rtp import MediaSession, PortAllocator, RtpClock  # noqa: E402
from ringcast.rtp.packet import build_rtp  # noqa: E402


def callees(ports: list[int], seconds: float, pcm: np.ndarray) -> None:
    """Send every port one 20 ms PCMU packet per tick, for `seconds` (bounded)."""
    payload = get_codec("PCMU").encode(pcm)
    frames = [payload[i : i + 160] for i in range(0, len(payload) - 159, 160)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        frame = frames[tick % len(frames)]
        for port in ports:
            pkt = build_rtp(
                frame, payload_type=0, seq=tick & 0xFFFF, timestamp=160 * tick, ssrc=port
            )
            try:
                sock.sendto(pkt, ("127.0.0.1", port))
            except OSError:
                pass
        tick += 1
        delay = start + tick * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.close()


def _ports() -> PortAllocator:
    """Ports above the kernel's ephemeral range (61000+ on Linux), from a random even
    start: other processes' RTP holds thousands of ports in 20000-29999 at times
    (a bind is retried only 32 times), the kernel hands out 32768-60999."""
    lo = 61000 + 2 * random.randrange(500)
    return PortAllocator(lo, 65534)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(n: int, window: float, mode: str, pcm: np.ndarray) -> tuple[float, float]:
    """(CPU share of one core used by this process over `window` with `mode`,
    callee packets read in Python per second over the same window)."""
    clock = RtpClock()
    ports = _ports()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    prompt = await prepare_prompt([{"pause": window + 30}], codecs=("PCMU",))
    sessions = [await MediaSession.open(clock, ports, bind_host="127.0.0.1") for _ in range(n)]
    te = None if mode == "inband" else 101
    plays = []
    for s in sessions:
        s.start("127.0.0.1", sink_port, 0, "PCMU", te, 101)
        if mode == "amd":
            # the dialer's own listener (80 ms batches), re-armed when its detector is done
            listener = _AmdListener(MachineDetector(timeout=30))

            def listen(pcm: np.ndarray, listener: _AmdListener = listener) -> None:
                if listener.detector.done:
                    listener.detector = MachineDetector(timeout=30)
                listener(pcm)

            s.listen(listen)
        plays.append(asyncio.create_task(s.play(prompt), name=f"bench-play-{s.local_port}"))
    sender = mp.Process(
        target=callees, args=([s.local_port for s in sessions], window + 4, pcm), daemon=True
    )
    sender.start()
    try:
        await asyncio.sleep(3.0)  # latch, connect, filters, warm-up
        r0 = sum(s.packets_received for s in sessions)
        c0, t0 = cpu(), time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - t0
        used = (cpu() - c0) / elapsed
        rate = (sum(s.packets_received for s in sessions) - r0) / elapsed
    finally:
        for s in sessions:
            s.stop()
        await asyncio.gather(*plays, return_exceptions=True)
        for s in sessions:
            await s.close()
        await clock.stop()
        sink.close()
        sender.join(timeout=10)
        if sender.is_alive():
            sender.terminate()
    print(f"  {mode:<9} {100 * used:6.1f} % of a core, {rate:6.0f} callee packets/s read")
    return used, rate


async def per_packet(pcm: np.ndarray, count: int = 20_000) -> None:
    """CPU (process time: what other processes do does not count) per callee packet
    handled in Python, against sending one RTP packet on a connected socket, the
    per-packet work of a call that only streams (same run, same payload size)."""
    pkts = rtp_packets(pcm)
    send = send_cost(pkts, count)
    clock = RtpClock()
    ports = _ports()
    results = {}
    for mode in ("inband", "amd"):
        media = await MediaSession.open(clock, ports, bind_host="127.0.0.1")
        media.start("127.0.0.1", 9, 0, "PCMU", None if mode == "inband" else 101, 101)
        listener = None
        if mode == "amd":
            listener = _AmdListener(MachineDetector(timeout=30))
            media.listen(listener)
        t0 = time.process_time()
        for i in range(count):
            if listener is not None and listener.detector.done:
                listener.detector = MachineDetector(timeout=30)  # keep detecting
            media._on_audio(pkts[i % len(pkts)])
        results[mode] = (time.process_time() - t0) / count
        await media.close()
    await clock.stop()
    print(f"per packet (process time, {count} packets):")
    print(f"  send one RTP packet (a streaming call's work per packet): {send * 1e6:.1f} µs")
    for mode, cost in results.items():
        print(
            f"  {mode:<7} decode + analyse one callee packet: {cost * 1e6:.1f} µs "
            f"(+ its recvfrom); {cost / send:.1f}x a send"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="concurrent calls")
    parser.add_argument("--window", type=float, default=8.0, help="seconds measured")
    parser.add_argument("--micro", action="store_true", help="only the per-packet costs")
    args = parser.parse_args()
    clip = next(c for c in amd_corpus.build() if c.label == "machine")
    pcm = clip.pcm[: 8000 * 8]
    asyncio.run(per_packet(pcm))
    if args.micro:
        return
    print(f"{args.n} calls streaming, a callee sending 50 packets/s to each:")
    base, _ = asyncio.run(measure(args.n, args.window, "baseline", pcm))
    full = args.n * 50  # callee packets per second when every callee keeps pace
    for mode in ("amd", "inband"):
        used, rate = asyncio.run(measure(args.n, args.window, mode, pcm))
        cost = (used - base) / max(rate, 1.0)  # CPU seconds per callee packet read
        projected = base + cost * full
        print(
            f"    {mode}: {cost * 1e6:.1f} µs per callee packet; measured "
            f"{used / base:.2f}x the baseline; at the full {full} packets/s "
            f"{projected / base:.2f}x"
        )


if __name__ == "__main__":
    main()
