"""The webhook POST (webhooks.attempt.post on the deliverer's aiohttp session)
against real receivers on loopback: the SSRF guard (netguard_aiohttp.guarded_connector),
no redirects, the time limit, TLS verification, and keep-alive."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tlspeers import Pki

from ringcast import netguard
from ringcast.netguard import NetPolicy
from ringcast.netguard_aiohttp import guarded_connector
from ringcast.store import outbox
from ringcast.store.db import Store
from ringcast.webhooks.attempt import DRAIN_WAIT, Attempt, open_session, post
from ringcast.webhooks.deliver import WebhookDeliverer
from ringcast.webhooks.sign import generate_secret, verify

SECRET = generate_secret()
LOOPBACK = ("127.0.0.0/8", "::1/128")


# --- a real receiver: HTTP/1.1 keep-alive, counting its TCP connections -------------------


@dataclass
class Receiver:
    """An asyncio HTTP/1.1 server on `host`. Paths: ``/redirect`` answers 302 to
    `location`; ``/slow`` answers after 3 s; ``/huge`` sends a 1 MiB body;
    ``/dribble`` sends a 100-byte body a byte per 0.2 s; ``/body`` a 2-byte body,
    ``/later`` the same after its head;
    anything else 200 with none. With `close` every answer ends its connection;
    with `tls` it is HTTPS."""

    host: str = "127.0.0.1"
    port: int = 0
    close: bool = False
    tls: ssl.SSLContext | None = None
    location: str = ""
    connections: int = 0
    hits: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.hits.append((path, headers, body))
                if not await self._answer(path, writer) or self.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _answer(self, path: str, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False: the connection is to end."""
        extra = "connection: close\r\n" if self.close else ""
        path = "/" + path.split("?")[0].split("/")[1]  # by the first segment
        if path == "/redirect":
            writer.write(
                f"HTTP/1.1 302 Found\r\nlocation: {self.location}\r\n"
                f"content-length: 0\r\n{extra}\r\n".encode()
            )
        elif path == "/slow":
            await asyncio.sleep(3.0)
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{extra}\r\n".encode())
        elif path == "/huge":
            size = 1 << 20
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode())
            writer.write(b"x" * size)
        elif path == "/dribble":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            for _ in range(100):
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(b"x")
            return False
        elif path == "/later":  # the body in a packet of its own, a little later
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"ok")
        elif path == "/body":
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{extra}\r\nok".encode())
        else:
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{extra}\r\n".encode())
        await writer.drain()
        return True


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = await Receiver().start()
    yield rx
    await rx.stop()


def due(url: str, n: int = 0) -> outbox.Due:
    return outbox.Due(
        n, f"msg_{n}", None, url, "call.ringing", {"type": "call.ringing"}, datetime.now(UTC), 0
    )


@asynccontextmanager
async def posting(
    policy: NetPolicy, *, within: float = 5.0, **connector: Any
) -> AsyncIterator[Callable[[str], Awaitable[Attempt]]]:
    """post() as the deliverer makes it: its session on the guarded connector."""
    async with open_session(guarded_connector(policy, **connector)) as session:
        n = 0

        async def send(url: str) -> Attempt:
            nonlocal n
            n += 1
            return await post(session, due(url, n), SECRET, within=within)

        yield send


@pytest.fixture
async def send() -> AsyncIterator[Callable[[str], Awaitable[Attempt]]]:
    """post() under the loopback-allowing policy the delivery tests use."""
    async with posting(NetPolicy.build(allow_networks=LOOPBACK)) as s:
        yield s


# --- the SSRF guard --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_unless_allowed(receiver: Receiver, host: str) -> None:
    """A callback to 127.0.0.1, by address or by a name that resolves to it, is
    refused before connecting when private addresses are not allowed (the
    receiver sees no request, nor a connection); allowed with allow_private and
    with loopback in allow_networks."""
    async with posting(NetPolicy()) as send:
        got = await send(receiver.url("/private/tok3n", host))
    assert got.status is None and not got.unreachable
    refused = (
        rf"{host} resolves to (127\.0\.0\.1|::1), a loopback address: refused \(private address\)"
    )
    assert got.error is not None and re.fullmatch(refused, got.error), got.error
    assert receiver.hits == [] and receiver.connections == 0
    for policy in (NetPolicy(allow_private=True), NetPolicy.build(allow_networks=LOOPBACK)):
        async with posting(policy) as send:
            assert (await send(receiver.url("/allowed", host))).status == 200
    assert [p for p, _, _ in receiver.hits] == ["/allowed", "/allowed"]


async def test_an_allowlist_frees_only_its_own_networks(receiver: Receiver) -> None:
    """127.0.0.2/32 allowed: 127.0.0.1 is still refused."""
    async with posting(NetPolicy.build(allow_networks=["127.0.0.2/32"])) as send:
        got = await send(receiver.url())
    assert got.error is not None and got.error.endswith(": refused (private address)")
    assert receiver.hits == []


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("[::1]", "::1 resolves to ::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1 resolves to ::ffff:7f00:1"),
        ("0x7f000001", "0x7f000001 resolves to 127.0.0.1"),
    ],
)
async def test_other_spellings_of_loopback_are_refused(
    receiver: Receiver, host: str, address: str
) -> None:
    """IPv6 loopback, IPv4-mapped loopback, a hex name getaddrinfo maps to 127.0.0.1."""
    async with posting(NetPolicy()) as send:
        got = await send(f"http://{host}:{receiver.port}/tok3n")
    assert got.error == f"{address}, a loopback address: refused (private address)"
    assert receiver.hits == [] and receiver.connections == 0


async def test_every_connection_is_checked_at_its_own_resolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: a name that resolved to an allowed address (::1 here, the one
    allowed network) and then to a refused one (127.0.0.1) gets its next connection refused; the
    connection goes to the address that was checked, never looked up again."""
    allowed = await Receiver(host="::1", close=True).start()  # loopback only, as every peer
    refused = await Receiver(host="127.0.0.1", port=allowed.port).start()
    answers = iter([["::1"], ["127.0.0.1"]])
    lookups: list[str] = []

    async def fake_resolve(host: str, port: int | None = None) -> list[netguard.IPAddress]:
        lookups.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    monkeypatch.setattr(netguard, "resolve", fake_resolve)
    try:
        async with posting(NetPolicy.build(allow_networks=["::1/128"])) as send:
            first = await send(allowed.url("/one", "rebind.test"))
            second = await send(allowed.url("/two", "rebind.test"))
    finally:
        await allowed.stop()
        await refused.stop()
    assert first.status == 200 and [p for p, _, _ in allowed.hits] == ["/one"]
    assert second.error == (
        "rebind.test resolves to 127.0.0.1, a loopback address: refused (private address)"
    )
    assert refused.hits == [] and refused.connections == 0
    assert lookups == ["rebind.test", "rebind.test"]  # one per connection, by the guard


# --- redirects, time limits, TLS -------------------------------------------------------------


async def test_no_redirect_is_followed(
    receiver: Receiver, send: Callable[[str], Awaitable[Attempt]]
) -> None:
    target = await Receiver().start()
    receiver.location = target.url("/elsewhere")
    try:
        got = await send(receiver.url("/redirect"))
    finally:
        await target.stop()
    assert got == Attempt(302, None)
    assert target.hits == [] and target.connections == 0


async def test_a_slow_receiver_times_out_within_the_limit(receiver: Receiver) -> None:
    async with posting(NetPolicy(allow_private=True), within=1.0) as send:
        began = time.monotonic()
        got = await send(receiver.url("/slow/tok3n?sig=qu3ry"))
        took = time.monotonic() - began
    assert got == Attempt(None, "timed out after 1s", unreachable=True)
    assert took < 2.0, took


async def test_connect_errors_and_bad_urls(send: Callable[[str], Awaitable[Attempt]]) -> None:
    with socketless_port() as port:
        refused = await send(f"http://127.0.0.1:{port}/tok3n?sig=qu3ry")
    assert refused.unreachable and refused.status is None
    assert refused.error is not None and refused.error.startswith("ConnectError: ")
    assert "tok3n" not in refused.error and "qu3ry" not in refused.error
    unknown = await send("http://no-such-host.invalid/tok3n")
    assert unknown == Attempt(
        None, "ConnectError: cannot resolve no-such-host.invalid", unreachable=True
    )
    assert await send("http://127.0.0.1:99999/tok3n") == Attempt(None, "invalid URL")


@contextmanager
def socketless_port() -> Iterator[int]:
    """A loopback TCP port where nothing listens (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_https_receivers_are_verified(tmp_path: Path) -> None:
    """A receiver whose certificate no trusted CA issued is not sent the event."""
    issued = Pki(tmp_path).issue("hook")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    rx = await Receiver(tls=context).start()
    try:
        async with posting(NetPolicy(allow_private=True)) as send:
            got = await send(f"https://127.0.0.1:{rx.port}/tok3n")
    finally:
        await rx.stop()
    assert got.status is None and got.unreachable
    assert got.error is not None and "CERTIFICATE_VERIFY_FAILED" in got.error, got.error
    assert rx.hits == []


# --- keep-alive --------------------------------------------------------------------------------


async def test_connections_are_kept_for_the_next_post(
    receiver: Receiver, send: Callable[[str], Awaitable[Attempt]]
) -> None:
    """One connection for 30 POSTs one after another, a 2-byte answer body (with
    its head or after it: it is read) or none."""
    for i in range(30):
        assert (await send(receiver.url(("/ok", "/body", "/later")[i % 3]))).status == 200
    assert len(receiver.hits) == 30 and receiver.connections == 1
    path, headers, body = receiver.hits[0]
    assert verify(SECRET, headers, body) == "msg_1"
    assert "cookie" not in headers and "accept-encoding" not in headers


async def test_a_huge_or_slow_body_closes_its_connection(
    receiver: Receiver, send: Callable[[str], Awaitable[Attempt]]
) -> None:
    """The status stands; the body is not waited for past DRAIN_WAIT nor read past
    BODY_LIMIT: the connection is closed and the next POST opens another."""
    began = time.monotonic()
    assert (await send(receiver.url("/dribble"))).status == 200
    assert time.monotonic() - began < DRAIN_WAIT + 1.0
    assert (await send(receiver.url("/huge"))).status == 200
    assert (await send(receiver.url("/ok"))).status == 200
    assert receiver.connections == 3


async def test_the_deliverer_keeps_a_connection_per_slot(store: Store, receiver: Receiver) -> None:
    """60 events to one receiver with 4 slots (2 for a receiver): at most 2 TCP
    connections, every event delivered once."""
    async with store.session() as s, s.begin():
        ids = [
            await outbox.enqueue(
                s,
                url=receiver.url("/kept"),
                api_key_id=None,
                event_type="call.ringing",
                payload=outbox.build_payload("call.ringing", {"id": f"c{i}"}),
            )
            for i in range(60)
        ]
    d = WebhookDeliverer(
        store,
        allow_networks=LOOPBACK,
        secret=SECRET,
        poll_interval=0.05,
        timeout=5.0,
        max_concurrency=4,
    )
    d.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if d.delivered == 60:
                break
            await asyncio.sleep(0.05)
    finally:
        await d.stop()
    assert d.delivered == 60
    assert sorted(verify(SECRET, h, b) for _, h, b in receiver.hits) == sorted(ids)
    assert 1 <= receiver.connections <= 2, receiver.connections
