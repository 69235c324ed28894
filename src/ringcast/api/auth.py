"""Bearer-key authentication, tenants, per-key POST rate limits and destination allowlists.

Policy (DESIGN.md, "Authentication"):

- When at least one active key exists, every request but ``GET /health`` needs
  ``Authorization: Bearer KEY`` (401 with the error envelope otherwise).
- With no key, a server bound to loopback is open (tenant ``default``); bound
  elsewhere it answers 401 unless ``insecure_no_auth`` is set (``ringcast
  serve`` also refuses to start in that case, see :func:`check_bind_policy`).
- A key's tenant scopes every query: the middleware puts it in
  ``request.state.tenant`` (read by ``common.tenant_of``) and the key itself in
  ``request.state.api_key``.
- A key with a ``rate_limit`` (POSTs per minute) gets 429 with ``Retry-After``
  past it. The bucket lives in this process's memory: with N API processes a
  key may send up to N times its rate.
- A key with an ``allow`` list may only call matching recipients (422 otherwise).

Key lookups are cached for :data:`CACHE_TTL` seconds, so a revoked key keeps
working for at most that long in a running server.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ringcast.api.errors import error_body
from ringcast.config import Settings
from ringcast.errors import ConfigError, RingcastError, StoreError, ValidationFailed
from ringcast.store import keys as store_keys
from ringcast.store.db import Store
from ringcast.store.keys import ApiKey

logger = logging.getLogger(__name__)

CACHE_TTL = 2.0  # seconds a key lookup (or "no key exists") is reused
CACHE_MAX = 10_000  # cached lookups before the cache is cleared
# "/" is the dashboard's page; /docs and /openapi.json are the API reference: no data
OPEN_PATHS = frozenset({"/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)  # the dashboard's static files
DEFAULT_TENANT = "default"
MAX_KEY_LENGTH = 256  # characters; longer Bearer values are refused without a lookup


class Unauthorized(RingcastError):
    """a valid API key is required: send Authorization: Bearer KEY"""

    code = 1007
    http_status = 401


class RateLimited(RingcastError):
    """Too many requests for this API key."""

    code = 1008
    http_status = 429


class DestinationNotAllowed(ValidationFailed):
    """This API key may not call that recipient."""

    code = 1009


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost` (what "bound to loopback" means)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_required_without_keys(settings: Settings) -> bool:
    """With no key, must requests still be refused (non-loopback bind, no opt-out)?"""
    return not settings.insecure_no_auth and not is_loopback_host(settings.http_host)


async def check_bind_policy(settings: Settings, store: Store) -> None:
    """ConfigError when the server would listen beyond loopback without any API key."""
    if not auth_required_without_keys(settings):
        return
    if await store_keys.any_active_key(store):
        return
    raise ConfigError(
        f"refusing to serve on {settings.http_bind} without an API key: create one with "
        "`ringcast keys create --name NAME --db URL`, bind to 127.0.0.1, or pass "
        "--insecure-no-auth",
        field="insecure_no_auth",
    )


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class KeyCache:
    """Short-lived cache of key lookups and of "does any key exist"."""

    def __init__(self, ttl: float = CACHE_TTL, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}
        self._any: tuple[float, bool] | None = None

    async def any_active(self, store: Store) -> bool:
        now = self._clock()
        if self._any is not None and now - self._any[0] < self.ttl:
            return self._any[1]
        found = await store_keys.any_active_key(store)
        self._any = (now, found)
        return found

    async def lookup(self, store: Store, key: str) -> ApiKey | None:
        digest = store_keys.hash_key(key)
        now = self._clock()
        hit = self._keys.get(digest)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        found = await store_keys.lookup_key(store, key)
        if len(self._keys) >= CACHE_MAX:
            self._keys.clear()
        self._keys[digest] = (now, found)
        return found

    def clear(self) -> None:
        self._keys.clear()
        self._any = None


class RateLimiter:
    """A token bucket per key: `rate` tokens per minute, bucket depth `rate` (at least 1)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str, per_minute: float) -> float:
        """Take one token; 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        depth = max(1.0, per_minute)
        refill = per_minute / 60.0  # tokens per second
        tokens, at = self._buckets.get(key_id, (depth, now))
        tokens = min(depth, tokens + (now - at) * refill)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / refill


@dataclass(frozen=True, slots=True)
class _Denied:
    exc: RingcastError
    headers: Mapping[str, str]


class AuthMiddleware:
    """ASGI middleware: resolve the caller's key and tenant, or answer 401/429/503."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.cache = KeyCache()
        self.limiter = RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        store: Store | None = getattr(scope["app"].state, "store", None) if "app" in scope else None
        if store is None:  # before the lifespan opened the database: routes answer 503
            await self.app(scope, receive, send)
            return
        try:
            outcome = await self._authenticate(scope, store)
        except StoreError as exc:
            outcome = _Denied(exc, {})
        if isinstance(outcome, _Denied):
            await _send_error(scope, receive, send, outcome.exc, outcome.headers)
            return
        state = scope.setdefault("state", {})
        state["tenant"] = outcome.tenant if outcome is not None else DEFAULT_TENANT
        state["api_key"] = outcome
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, store: Store) -> ApiKey | None | _Denied:
        token = bearer_token(Headers(scope=scope))
        if not await self.cache.any_active(store):
            if auth_required_without_keys(self.settings):
                return _Denied(
                    Unauthorized(
                        "this server has no API key yet: create one with `ringcast keys create`"
                    ),
                    {"WWW-Authenticate": "Bearer"},
                )
            return None
        if token is None:
            return _Denied(Unauthorized(), {"WWW-Authenticate": "Bearer"})
        key = None
        if len(token) <= MAX_KEY_LENGTH:
            key = await self.cache.lookup(store, token)
        if key is None:
            return _Denied(
                Unauthorized("the API key is not valid or was revoked"),
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope.get("method") == "POST" and key.rate_limit is not None:
            wait = self.limiter.take(key.id, key.rate_limit)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                return _Denied(
                    RateLimited(
                        f"this API key may send {key.rate_limit:g} POST requests per minute; "
                        f"retry in {retry_after} s"
                    ),
                    {"Retry-After": str(retry_after)},
                )
        return key


async def _send_error(
    scope: Scope, receive: Receive, send: Send, exc: RingcastError, headers: Mapping[str, str]
) -> None:
    """The error envelope, rendered exactly as the routes' errors are (one JSONResponse)."""
    body = error_body(exc.code, exc.http_status, exc.message, exc.field, str(uuid.uuid4()))
    response = JSONResponse(body, status_code=exc.http_status, headers=dict(headers))
    await response(scope, receive, send)


# --- destination allowlist -----------------------------------------------------------------


def _uri_parts(uri: str) -> tuple[str, str]:
    """(user part, lowercase host without port) of a sip:/sips: URI."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, _, hostport = rest.rpartition("@")
    user = user.split(":", 1)[0]  # drop a password part
    if hostport.startswith("["):
        host = hostport[1:].split("]", 1)[0]
    else:
        host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    return user, host.lower().rstrip(".")


def _host_allowed(host: str, allow: Mapping[str, tuple[str, ...]]) -> bool:
    hosts = allow.get("hosts", ())
    domains = allow.get("domains", ())
    if not hosts and not domains:
        return True
    if host in hosts:
        return True
    return any(host == d or host.endswith("." + d) for d in domains)


def destination_allowed(
    to_uri: str, allow: Mapping[str, tuple[str, ...]], proxy: str | None = None
) -> bool:
    """Does the key's allowlist let it call `to_uri` (through `proxy`, when given)?

    Hosts and domains restrict the recipient's host and the request's own
    outbound proxy; prefixes restrict the recipient's user part (the number).
    A kind left out of the allowlist does not restrict.
    """
    if not allow:
        return True
    user, host = _uri_parts(to_uri)
    if not _host_allowed(host, allow):
        return False
    if proxy is not None and not _host_allowed(_uri_parts(proxy)[1], allow):
        return False
    prefixes = allow.get("prefixes", ())
    return not prefixes or any(user.startswith(p) for p in prefixes)


def check_destinations(
    key: ApiKey | None, recipients: Iterable[tuple[str, str]], proxy: str | None = None
) -> None:
    """DestinationNotAllowed naming the first recipient the key may not call.

    `recipients` yields (field path, SIP URI); `proxy` is the request's own
    `sip.proxy` (a trunk from the operator's config file is trusted).
    """
    if key is None or not key.allow:
        return
    if proxy is not None and not _host_allowed(_uri_parts(proxy)[1], key.allow):
        raise DestinationNotAllowed(
            f"sip.proxy {proxy} is outside this API key's destination allowlist",
            field="sip.proxy",
        )
    for where, uri in recipients:
        if not destination_allowed(uri, key.allow):
            raise DestinationNotAllowed(
                f"recipient {uri} is outside this API key's destination allowlist", field=where
            )


def api_key_of(state: Any) -> ApiKey | None:
    """The authenticated key of a request (`request.state`), or None on an open server."""
    key = getattr(state, "api_key", None)
    return key if isinstance(key, ApiKey) else None
