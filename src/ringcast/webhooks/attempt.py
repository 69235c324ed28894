"""One delivery attempt: POST a claimed outbox row, signed (Standard Webhooks),
and decide what the attempt ends in (:func:`decide`: delivered, retried at a
time from the :class:`~ringcast.webhooks.backoff.Backoff`, or given up).

The POST goes through an aiohttp session (:func:`open_session`) on the SSRF
guard's connector (:func:`ringcast.netguard_aiohttp.guarded_connector`): it costs a
quarter to a seventh of the CPU per POST of the httpx transport it replaced, which
bounded the deliverer's rate (bench/http_clients.py; bench/RESULTS.md, webhooks).
Only the status counts; the response body is read and dropped so the
connection stays open for the next POST, up to BODY_LIMIT bytes and for at most
DRAIN_WAIT seconds (within the attempt's time limit): a longer or slower body
closes the connection instead, the status still stands. Redirects are not
followed: a 3xx is the attempt's status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

import ringcast
from ringcast.netguard import AddressRefused
from ringcast.store.outbox import FINAL_CALL_EVENTS, Due, Settlement
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.sign import signed_headers

MAX_ERROR = 300  # characters of last_error
USER_AGENT = f"ringcast-webhooks/{ringcast.__version__}"
BODY_LIMIT = 64 * 1024  # bytes of a response body read to keep its connection
DRAIN_WAIT = 1.0  # seconds a response body may take to arrive, to keep its connection


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: a status (with its Retry-After), or an error."""

    status: int | None
    error: str | None
    retry_after: float | None = None
    unreachable: bool = False  # timed out or could not connect: the receiver looks down

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def where(url: str) -> str:
    """scheme://host:port of a URL, for logs and errors (paths and queries may hold tokens)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<bad url>"


def clean(message: str, url: str) -> str:
    """An error message without the URL's path and query (they may hold tokens)."""
    return message.replace(url, where(url)) if url else message


def retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header, or None (absent, negative, or an HTTP date:
    the backoff is close enough)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def open_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    """The deliverer's HTTP session on `connector` (close it with the deliverer): no
    cookies, proxies, decompression, nor headers beyond the ones :func:`post` sets;
    no time limits of its own (each attempt has one)."""
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        skip_auto_headers=("accept", "accept-encoding"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
    )


async def post(http: aiohttp.ClientSession, row: Due, secret: str, *, within: float) -> Attempt:
    """POST `row` signed with `secret`, following no redirect; the whole attempt
    ends within `within` seconds."""
    body = encode_body(row.payload)
    stamp = int(time.time())  # the attempt's wall-clock time: receivers check it
    headers = {
        **signed_headers(secret, row.webhook_id, stamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    deadline = asyncio.get_running_loop().time() + within
    try:
        async with asyncio.timeout_at(deadline):
            resp = await http.post(row.url, data=body, headers=headers, allow_redirects=False)
    except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
        return Attempt(None, f"timed out after {within:g}s", unreachable=True)
    except aiohttp.ClientConnectorError as exc:  # refused, unresolved, TLS handshake
        return Attempt(
            None, f"ConnectError: {clean(str(exc.os_error), row.url)}"[:MAX_ERROR], unreachable=True
        )
    except AddressRefused as exc:
        return Attempt(None, exc.message.split(": refused", 1)[0] + ": refused (private address)")
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
        return Attempt(None, "invalid URL")
    except aiohttp.ClientResponseError as exc:  # its text holds the URL: left out
        return Attempt(None, f"{type(exc).__name__}: {exc.status}, {clean(exc.message, row.url)}")
    except aiohttp.ClientError as exc:
        return Attempt(None, f"{type(exc).__name__}: {clean(str(exc), row.url)}")
    try:
        return Attempt(resp.status, None, retry_after(resp.headers.get("retry-after")))
    finally:
        await discard_body(resp, min(deadline, asyncio.get_running_loop().time() + DRAIN_WAIT))


async def discard_body(resp: aiohttp.ClientResponse, deadline: float) -> None:
    """Read and drop `resp`'s body, so its connection goes back to the pool; one
    over BODY_LIMIT bytes, still arriving at `deadline` (loop time), or broken
    closes the connection instead."""
    if resp.content.is_eof():  # the usual answer: no body, or all of it came with the head
        resp.release()
        return
    left = BODY_LIMIT
    kept = False
    try:
        async with asyncio.timeout_at(deadline):
            while left >= 0:
                chunk = await resp.content.readany()
                if not chunk:
                    kept = True
                    return
                left -= len(chunk)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    finally:
        if kept:
            resp.release()
        else:
            resp.close()


def decide(
    row: Due, attempt: Attempt, *, now: datetime, backoff: Backoff, rand: float
) -> Settlement:
    """What `attempt` of `row` ends in: delivered; retried at the backoff's next time
    (``Retry-After`` honoured up to its cap); or given up (``410 Gone``, the API key
    is gone, or the retry window has passed)."""
    request_id = None
    if row.event_type in FINAL_CALL_EVENTS:
        data = row.payload.get("data")
        if isinstance(data, Mapping) and isinstance(data.get("request_id"), str):
            request_id = data["request_id"]
    if attempt.ok:
        return Settlement(row.id, now, delivered=True, request_id=request_id)
    error = (attempt.error or f"HTTP {attempt.status}")[:MAX_ERROR]
    next_at = None
    if attempt.status != 410 and not row.key_missing:
        next_at = backoff.next_attempt(
            created_at=row.created_at,
            now=now,
            failures=row.attempts + 1,
            rand=rand,
            retry_after=attempt.retry_after,
        )
    if next_at is None:
        return Settlement(row.id, now, gave_up=True, error=error, request_id=request_id)
    return Settlement(row.id, now, next_attempt_at=next_at, error=error)
