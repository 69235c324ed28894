"""Client CPU per webhook-sized POST: the deliverer's former httpx path, plain
aiohttp, and the deliverer's aiohttp path as it is.

A minimal HTTP/1.1 keep-alive receiver (answers 200 with an empty body) runs in
a child process on 127.0.0.1; this process POSTs --posts JSON bodies of a
call event's size, --concurrency at a time, through each client in turn and
prints POSTs per second and this process's CPU per POST, alternated --rounds
times.

- httpx: `httpx.AsyncHTTPTransport` used as `webhooks/attempt.py` uses it
  (a transport, not a client; the response body is not read, so httpcore
  closes the connection after each response);
- aiohttp: one `ClientSession` with keep-alive, the body read;
- deliverer: `webhooks.attempt.post` (signed, the body read and dropped) on the
  deliverer's session (`attempt.open_session`) over the SSRF guard's connector
  (`netguard_aiohttp.guarded_connector`, loopback allowed by its allowlist).

This bench decided that the deliverer moves from httpx to aiohttp (issue 18.4).
In the project's venv:

    .venv/bin/python bench/http_clients.py --posts 3000 --rounds 3

Bounded: --posts requests per client per round; the receiver is ended by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

BODY = json.dumps(
    {
        "type": "call.completed",
        "data": {"id": "x" * 36, "result": "completed", "n": list(range(40))},
    }
).encode()


def receiver(ports: Any) -> None:
    """Child process: answer every request on a keep-alive connection with 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.sleep(600)  # ended by the parent

    asyncio.run(main())


async def with_httpx(url: str, posts: int, concurrency: int) -> None:
    import httpx

    transport = httpx.AsyncHTTPTransport(
        retries=0,
        limits=httpx.Limits(
            max_connections=2 * concurrency, max_keepalive_connections=2 * concurrency
        ),
    )
    gate = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(10).as_dict()

    async def one() -> None:
        async with gate:
            request = httpx.Request(
                "POST",
                url,
                content=BODY,
                headers={"content-type": "application/json"},
                extensions={"timeout": timeout},
            )
            response = await transport.handle_async_request(request)
            await response.aclose()

    await asyncio.gather(*(one() for _ in range(posts)))
    await transport.aclose()


async def with_aiohttp(url: str, posts: int, concurrency: int) -> None:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=2 * concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate:
                async with session.post(
                    url, data=BODY, headers={"content-type": "application/json"}, timeout=timeout
                ) as response:
                    await response.read()

        await asyncio.gather(*(one() for _ in range(posts)))


async def with_deliverer(url: str, posts: int, concurrency: int) -> None:
    from datetime import UTC, datetime

    from ringcast.netguard import NetPolicy
    from ringcast.netguard_aiohttp import guarded_connector
    from ringcast.store.outbox import Due
    from ringcast.webhooks.attempt import open_session, post
    from ringcast.webhooks.sign import generate_secret

    secret = generate_secret()
    payload = json.loads(BODY)
    policy = NetPolicy.build(allow_networks=["127.0.0.0/8"])
    gate = asyncio.Semaphore(concurrency)
    connector = guarded_connector(policy, limit=2 * concurrency, limit_per_host=concurrency)
    async with open_session(connector) as session:

        async def one(n: int) -> None:
            async with gate:
                row = Due(n, f"msg_{n}", None, url, "call.completed", payload, datetime.now(UTC), 0)
                got = await post(session, row, secret, within=10.0)
                assert got.status == 200, got

        await asyncio.gather(*(one(n) for n in range(posts)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    posts = max(1, min(args.posts, 100_000))
    ports: Any = mp.Queue()
    child = mp.Process(target=receiver, args=(ports,), daemon=True)
    child.start()
    clients: list[tuple[str, Callable[[str, int, int], Awaitable[None]]]] = [
        ("httpx", with_httpx),
        ("aiohttp", with_aiohttp),
        ("deliverer", with_deliverer),
    ]
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/hook"
        print(
            f"load {os.getloadavg()}; {posts} POSTs per client per round, "
            f"{args.concurrency} at once"
        )
        for n in range(1, args.rounds + 1):
            for name, client in clients:
                cpu, wall = time.process_time(), time.monotonic()
                asyncio.run(client(url, posts, args.concurrency))
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                print(
                    f"round {n} {name:9s} {posts / wall:7.0f} POSTs/s  "
                    f"{cpu / posts * 1e3:.3f} ms CPU per POST"
                )
    finally:
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
        child.join(5)


if __name__ == "__main__":
    main()
