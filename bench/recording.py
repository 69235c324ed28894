"""What recording a callee costs, per call, against same-run baselines.

    .venv/bin/python bench/recording.py [--pg postgresql://127.0.0.1/test]

1. Per packet (process time, 20,000 callee packets through
   `MediaSession._on_audio` with a record segment's listener: G.711 decode +
   energy test + keeping the PCM) against sending one RTP packet on a
   connected socket (the per-packet work of a call that only streams).
2. Per recording (wall time, 30 s of speech, 480 KB of WAV): building the WAV
   and inserting it with the call's final write, against the same final
   write without a recording; then reading it back as GET /recordings/ID
   does (1 MiB pieces). On SQLite (a file) and, with --pg, PostgreSQL.
3. Memory: the PCM a call holds while recording, per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from send_baseline import rtp_packets, send_cost  # noqa: E402

from ringcast.api.recordings import PIECE  # noqa: E402
from ringcast.media.codecs import SAMPLE_RATE  # noqa: E402
from ringcast.media.prompt import RecordSegment  # noqa: E402
from ringcast.media.recorder import Recorder, RecordSettings, wav_bytes  # noqa: E402
from ringcast.rtp import MediaSession, PortAllocator, RtpClock  # noqa: E402
from ringcast.store import recordings as store_recordings  # noqa: E402
from ringcast.store import requests as q  # noqa: E402
from ringcast.store.db import open_store  # noqa: E402
from ringcast.store.models import calls_table  # noqa: E402

SECONDS = 30.0  # one recording


def speechlike(seconds: float) -> np.ndarray:
    """Amplitude-modulated noise at speech level (never silent for 3 s)."""
    rng = np.random.default_rng(7)
    n = round(seconds * SAMPLE_RATE)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / SAMPLE_RATE)
    return np.clip(rng.standard_normal(n) * 0.1 * env, -1, 1)


async def per_packet(count: int = 20_000) -> None:
    pcm = (speechlike(10.0) * 32767).astype(np.int16)
    pkts = rtp_packets(pcm)
    send = send_cost(pkts, count)

    clock = RtpClock()
    ports = PortAllocator(31200, 31300)
    media = await MediaSession.open(clock, ports, bind_host="127.0.0.1")
    media.start("127.0.0.1", 9, 0, "PCMU", 101, 101)
    settings = RecordSettings(max=count * 0.02 + 1, silence=3.0)
    recorder = Recorder(settings)

    def listener(p: np.ndarray) -> None:
        recorder.feed(p)

    media.listen(listener)
    t0 = time.process_time()
    for i in range(count):
        media._on_audio(pkts[i % len(pkts)])
    cost = (time.process_time() - t0) / count
    media.unlisten(listener)
    await media.close()
    await clock.stop()
    assert not recorder.done and recorder.duration == count * 0.02, recorder.duration
    assert isinstance(RecordSegment(settings), RecordSegment)
    print(f"per packet (process time, {count} packets):")
    print(f"  baseline: send one RTP packet (a streaming call's work): {send * 1e6:.1f} µs")
    print(
        f"  recording: decode + energy + keep one callee packet: {cost * 1e6:.1f} µs "
        f"(+ its recvfrom); {cost / send:.1f}x a send; "
        f"{cost * 50 * 100:.3f} % of a core per recording call"
    )


async def per_recording(url: str, label: str, runs: int = 20) -> None:
    store = open_store(url)
    await store.migrate()
    pcm = (speechlike(SECONDS) * 32767).astype(np.int16)
    plain, recorded, build, read = [], [], [], []
    size = 0
    for _ in range(runs):
        accepted = await q.create_request(
            store,
            body={},
            calls=[q.NewCall(to_uri="sip:1@h", from_uri="me") for _ in range(2)],
            body_hash="h",
        )
        a, b = await q.report_page(store, accepted.request_id, after_seq=-1, limit=2)
        final = {"result": "completed", "outcome": "answered", "duration": 30}
        t0 = time.perf_counter()
        async with store.session() as s, s.begin():
            await s.execute(sa.update(calls_table).where(calls_table.c.id == a.id).values(final))
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        item = store_recordings.NewRecording(
            store_recordings.new_id(), wav_bytes(pcm), SECONDS, "silence"
        )
        build.append(time.perf_counter() - t0)
        size = len(item.wav)
        t0 = time.perf_counter()
        async with store.session() as s, s.begin():
            listed = store_recordings.record_list_json([item])
            await s.execute(
                sa.update(calls_table)
                .where(calls_table.c.id == b.id)
                .values({**final, "recordings": listed})
            )
            await store_recordings.add(s, tenant="default", call_id=b.id, attempt=1, items=[item])
        recorded.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = b""
        while len(got) < size:
            got += await store_recordings.read_piece(store, item.id, len(got), PIECE)
        read.append(time.perf_counter() - t0)
        assert got == item.wav
    await store.close()

    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:.2f}"

    print(f"per {SECONDS:.0f} s recording ({size} bytes of WAV), {label}, median of {runs}:")
    print(f"  baseline: the call's final write alone: {ms(plain)} ms")
    print(f"  WAV built: {ms(build)} ms; final write + recording inserted: {ms(recorded)} ms")
    print(f"  read back in 1 MiB pieces (GET /recordings/ID): {ms(read)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", help="also PostgreSQL at this URL (a scratch database)")
    args = parser.parse_args()
    asyncio.run(per_packet())
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(per_recording(f"sqlite:///{tmp}/bench.db", "SQLite"))
    if args.pg:
        asyncio.run(per_recording(args.pg, "PostgreSQL"))
    print(f"memory while recording: {2 * SAMPLE_RATE} bytes of PCM per second per call")


if __name__ == "__main__":
    main()
