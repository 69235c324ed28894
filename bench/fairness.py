"""Bench: fair claims against the old FIFO order, in the same run, on the real store.

(a) Head-of-line: N calls of a broadcast are queued (N = 1,000 and 100,000),
    every channel is busy (CHANNELS calls claimed), then a one-call request is
    POSTed (stored). Each time a channel frees, one call is claimed. Printed:
    how many broadcast calls are claimed before the one call, and the wall time
    from the channel freeing to the one call's claim. Baseline: the same, with
    the old FIFO claim (global (not_before, seq) order, over the old
    (result, not_before, seq) index, made for the baseline only). With FIFO the
    one call waits for all N; its dial time is then N / CHANNELS call durations
    (printed for CALL_SECONDS-long calls).
(b) Claim throughput: calls/s claimed in batches of BATCH (as free channels
    ask) from 50 concurrent requests of Q/50 calls each, against a single
    request of Q calls (same total), until TAKE calls are claimed, the two
    databases' claims interleaved (one of each in turn). As in a
    dialer of BATCH channels, the calls of a claim end (`completed`, in a
    transaction of their own, not timed) before the next claim: at most BATCH
    calls are live. (Until 2026-12-03 the calls were never ended, so each
    claim counted up to TAKE live calls, which no dialer has.) Only the
    claims are timed.

Usage: .venv/bin/python bench/fairness.py [--backends sqlite,postgresql]
Only 127.0.0.1 is used. PostgreSQL: a scratch database on 127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
import uuid
from datetime import datetime

import asyncpg
import sqlalchemy as sa

from ringcast.domain import Result, now_precise
from ringcast.store import queue
from ringcast.store import requests as rq
from ringcast.store.db import Store, open_store
from ringcast.store.models import calls_table
from ringcast.store.queue import Fence

PG_ADMIN = os.environ.get("RINGCAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CHANNELS = 4
CALL_SECONDS = 2.0
BATCH = 50
Q = 100_000
TAKE = 20_000
BODY = {"from": "me", "playlist": [{"pause": 1}]}


async def fifo_claim(store: Store, node: Fence, limit: int) -> list[str]:
    """The claim as it was before fair claims: the oldest due calls of any request."""
    c = calls_table
    pick = (
        sa.select(c.c.id)
        .where(c.c.result == Result.QUEUED.value, c.c.not_before <= now_precise())
        .order_by(c.c.not_before, c.c.seq)
        .limit(limit)
    )
    if store.dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        sa.update(c)
        .where(c.c.id.in_(pick.scalar_subquery()))
        .values(result=Result.DIALING.value, node_id=node.node_id, claim_epoch=node.epoch)
        .returning(c.c.id, c.c.request_id)
    )
    async with store.session() as s, s.begin():
        await queue.prefer_claim_order(s)
        return [r.request_id for r in await s.execute(stmt)]


async def add(store: Store, n: int, tag: str) -> str:
    calls = [rq.NewCall(f"sip:{tag}{i}@127.0.0.1:5", "me") for i in range(n)]
    accepted = await rq.create_request(store, body=BODY, calls=calls, body_hash=tag)
    return accepted.request_id


async def head_of_line(url: str, n: int, fifo: bool) -> tuple[int, float]:
    store = open_store(url)
    await store.migrate()
    try:
        if fifo:
            async with store.session() as s, s.begin():
                await s.execute(
                    sa.text(
                        "CREATE INDEX ix_calls_fifo_baseline ON calls (result, not_before, seq)"
                    )
                )
        node = Fence("bench", await queue.register_node(store, "bench"))
        await add(store, n, "b")
        if fifo:
            await fifo_claim(store, node, CHANNELS)
        else:
            await queue.claim_calls(store, node, CHANNELS)
        one = await add(store, 1, "one")
        ahead = 0
        while True:  # a channel frees: claim one call
            start = time.perf_counter()
            if fifo:
                got = await fifo_claim(store, node, 1)
            else:
                got = [c.request_id for c in await queue.claim_calls(store, node, 1)]
            took = time.perf_counter() - start
            if got == [one]:
                return ahead, took
            if not got:
                raise RuntimeError("queue drained without the one call")
            ahead += 1
            if fifo:
                # FIFO takes every older queued call first: count them instead of
                # claiming them one by one (100,000 claims)
                c = calls_table.c
                async with store.session(readonly=True) as s:
                    older = await s.scalar(
                        sa.select(sa.func.count())
                        .select_from(calls_table)
                        .where(c.result == Result.QUEUED.value, c.request_id != one)
                    )
                return ahead + int(older or 0), took
    finally:
        await store.close()


class Queue:
    """One database with Q queued calls in `requests` requests, claimed BATCH at a
    time; the calls of a claim end before its next claim (not timed)."""

    def __init__(self, url: str, requests: int) -> None:
        self.store = open_store(url)
        self.requests = requests
        self.taken = 0
        self.spent = 0.0

    async def fill(self) -> None:
        await self.store.migrate()
        self.node = Fence("bench", await queue.register_node(self.store, "bench"))
        for r in range(self.requests):
            await add(self.store, Q // self.requests, f"r{r}x")

    async def claim(self) -> None:
        start = time.perf_counter()
        got = await queue.claim_calls(self.store, self.node, BATCH)
        self.spent += time.perf_counter() - start
        if not got:
            raise RuntimeError("nothing claimed")
        self.taken += len(got)
        c = calls_table.c
        async with self.store.session() as s, s.begin():  # the channels free: the calls end
            await s.execute(
                sa.update(calls_table)
                .where(c.id.in_([x.id for x in got]))
                .values(result=Result.COMPLETED.value)
            )

    def rate(self) -> float:
        return self.taken / self.spent


async def throughput(url_one: str, url_many: str) -> tuple[float, float]:
    """Calls/s claimed from 1 request and from 50, the claims of the two
    interleaved (one of each in turn, which goes first alternating), so that
    both see the same machine: on a loaded machine, runs one after the other
    differed by 2x between repetitions (bench/RESULTS.md)."""
    one, many = Queue(url_one, 1), Queue(url_many, 50)
    try:
        await one.fill()
        await many.fill()
        turn = 0
        while one.taken < TAKE or many.taken < TAKE:
            pair = (one, many) if turn % 2 == 0 else (many, one)
            for side in pair:
                if side.taken < TAKE:
                    await side.claim()
            turn += 1
        return one.rate(), many.rate()
    finally:
        await one.store.close()
        await many.store.close()


class Databases:
    """A fresh database per measurement: SQLite files in a temporary directory,
    PostgreSQL scratch databases dropped at the end."""

    def __init__(self, backend: str, tmp: str) -> None:
        self.backend = backend
        self.tmp = tmp
        self.made: list[str] = []

    async def new(self) -> str:
        name = f"fair_{uuid.uuid4().hex[:10]}"
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp}/{name}.db"
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.made.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    async def drop(self) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            for name in self.made:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="throughput pairs per backend")
    args = parser.parse_args()
    print(f"# bench/fairness.py {datetime.now():%Y-%m-%d %H:%M} on {platform.node()}")
    print(f"python {platform.python_version()}, {os.cpu_count()} cores; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            dbs = Databases(backend, tmp)
            try:
                sizes = [] if args.throughput_only else [int(x) for x in args.sizes.split(",")]
                for n in sizes:
                    fair_ahead, fair_s = await head_of_line(await dbs.new(), n, fifo=False)
                    fifo_ahead, fifo_s = await head_of_line(await dbs.new(), n, fifo=True)
                    print(
                        f"{backend:10} N={n:>7,}: one call behind the broadcast, all"
                        f" {CHANNELS} channels busy: fair: {fair_ahead} claimed before it, its"
                        f" claim {fair_s * 1000:.1f} ms after a channel frees | FIFO (baseline):"
                        f" {fifo_ahead:,} claimed before it, dialed after"
                        f" ~{fifo_ahead / CHANNELS * CALL_SECONDS:,.0f} s of {CALL_SECONDS:g} s"
                        f" calls, its claim {fifo_s * 1000:.1f} ms"
                    )
                for _ in range(args.repeat):
                    single, many = await throughput(await dbs.new(), await dbs.new())
                    print(
                        f"{backend:10} claim throughput, batches of {BATCH}, {Q:,} queued:"
                        f" 50 requests {many:,.0f} calls/s, 1 request (baseline) {single:,.0f}"
                        f" calls/s: {100 * many / single:.0f} % (load {os.getloadavg()[0]:.1f})"
                    )
            finally:
                if backend == "postgresql":
                    await dbs.drop()


if __name__ == "__main__":
    asyncio.run(main())
