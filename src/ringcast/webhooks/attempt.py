"""One delivery attempt: POST a claimed outbox row, signed (Standard Webhooks),
and decide what the attempt ends in (:func:`decide`: delivered, retried at a
time from the :class:`~ringcast.webhooks.backoff.Backoff`, or given up).

The response body is not read (any size, any speed): only the status counts.
With httpcore that closes the connection; reading the body to keep it alive
cost about 20 % more CPU per event against a loopback receiver
(bench/RESULTS.md, webhooks section).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

import ringcast
from ringcast.netguard import AddressRefused
from ringcast.store.outbox import FINAL_CALL_EVENTS, Due, Settlement
from ringcast.webhooks.backoff import Backoff
from ringcast.webhooks.sign import signed_headers

MAX_ERROR = 300  # characters of last_error
USER_AGENT = f"ringcast-webhooks/{ringcast.__version__}"


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


async def post(http: httpx.AsyncBaseTransport, row: Due, secret: str, *, within: float) -> Attempt:
    """POST `row` signed with `secret`; the whole attempt ends within `within` seconds."""
    body = encode_body(row.payload)
    stamp = int(time.time())  # the attempt's wall-clock time: receivers check it
    headers = {
        **signed_headers(secret, row.webhook_id, stamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    deadline = asyncio.get_running_loop().time() + within
    try:
        request = httpx.Request(
            "POST",
            row.url,
            content=body,
            headers=headers,
            extensions={"timeout": httpx.Timeout(within).as_dict()},
        )
        async with asyncio.timeout_at(deadline):
            resp = await http.handle_async_request(request)
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(None, f"timed out after {within:g}s", unreachable=True)
    except httpx.ConnectError as exc:
        return Attempt(
            None, f"ConnectError: {clean(str(exc), row.url)}"[:MAX_ERROR], unreachable=True
        )
    except AddressRefused as exc:
        return Attempt(None, exc.message.split(":", 1)[0] + ": refused (private address)")
    except httpx.InvalidURL:
        return Attempt(None, "invalid URL")
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {clean(str(exc), row.url)}")
    try:
        return Attempt(resp.status_code, None, retry_after(resp.headers.get("retry-after")))
    finally:
        with contextlib.suppress(httpx.HTTPError):
            await resp.aclose()


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
