"""Fetch prompt audio over http(s) with hard caps, and keep it in an on-disk cache.

A URL is fetched once: the body is stored by its SHA-256 under `blobs/`, and a
small JSON record per URL under `urls/` keeps the validators (ETag,
Last-Modified, RFC 9111 max-age). Inside the freshness window the cached body is
used without any network; after it a conditional GET (If-None-Match /
If-Modified-Since) revalidates and a 304 reuses the stored body.

Caps: connect and read timeouts, a total deadline, a byte cap checked against
Content-Length and again while streaming, and a redirect cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ringcast import __version__
from ringcast.errors import MediaError
from ringcast.netguard import AddressRefused, NetPolicy, guarded_transport

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # bytes; a 1 h 16-bit 8 kHz WAV is ~58 MB
DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds
DEFAULT_READ_TIMEOUT = 15.0  # seconds between two reads
DEFAULT_TOTAL_TIMEOUT = 120.0  # seconds for the whole download
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_FRESH_FOR = 300.0  # seconds a cached URL is used without revalidation
USER_AGENT = f"ringcast/{__version__} (media fetch)"


def default_cache_dir() -> Path:
    """`<tmp>/ringcast-media-cache`, for a fetcher made without `cache_dir`; ringcast's
    processes pass the setting `media_cache_dir` (`RINGCAST_MEDIA_CACHE_DIR`)."""
    return Path(tempfile.gettempdir()) / "ringcast-media-cache"


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    """The body of one URL, with its content hash (the decode cache key)."""

    url: str
    data: bytes
    sha256: str
    content_type: str | None
    from_cache: bool


def _max_age(cache_control: str | None) -> tuple[float | None, bool, bool]:
    """(max-age seconds or None, no-cache, no-store) from a Cache-Control header."""
    if not cache_control:
        return None, False, False
    value = cache_control.lower()
    no_store = "no-store" in value
    no_cache = "no-cache" in value
    m = re.search(r"max-age\s*=\s*(\d+)", value)
    return (float(m.group(1)) if m else None), no_cache, no_store


def _fmt_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n} bytes"


class MediaFetcher:
    """Fetches media URLs with caps and an on-disk cache shared across requests.

    SSRF guard (:mod:`ringcast.netguard`): unless `allow_private`, the URL and
    every redirect hop must resolve to public addresses (or to `allow_networks`
    CIDRs); the connection goes to the checked address, so a DNS answer that
    changes after the API's check still fails the fetch.
    Bodies used recently stay in memory (up to `memory_bytes`), so a fresh URL
    asked for by many prompts costs a dict lookup, not a disk read.
    `transport` lets tests plug an httpx transport in.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        fresh_for: float = DEFAULT_FRESH_FOR,
        allow_private: bool = False,
        allow_networks: Sequence[str] = (),
        memory_bytes: int = 64 * 1024 * 1024,
        negative_ttl: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.fresh_for = fresh_for
        self.allow_private = allow_private
        # --- SSRF guard (ringcast.netguard) ---
        self.policy = NetPolicy.build(allow_private=allow_private, allow_networks=allow_networks)
        self._transport = transport
        self._locks: dict[str, asyncio.Lock] = {}
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # recent bodies by sha256
        self._memory_size = 0
        self._fresh: dict[str, tuple[float, str, str | None]] = {}  # url: (until, sha, type)
        self.negative_ttl = negative_ttl  # seconds a failed URL answers its error again
        self._failed: dict[str, tuple[float, str]] = {}  # url: (until, message)
        self.network_fetches = 0  # requests that went to the network (200 or 304)

    # -- cache files ----------------------------------------------------------------------

    def _meta_path(self, url: str) -> Path:
        return self.cache_dir / "urls" / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def _blob_path(self, sha256: str) -> Path:
        return self.cache_dir / "blobs" / sha256

    def _read_meta(self, url: str) -> dict[str, Any] | None:
        try:
            meta = json.loads(self._meta_path(url).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url:
            return None
        if not self._blob_path(str(meta.get("sha256"))).is_file():
            return None
        return meta

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _store(self, url: str, data: bytes, sha: str, meta: dict[str, Any]) -> None:
        blob = self._blob_path(sha)
        if not blob.is_file():
            self._atomic_write(blob, data)
        self._atomic_write(self._meta_path(url), json.dumps(meta).encode())

    def _touch(self, url: str, meta: dict[str, Any]) -> None:
        self._atomic_write(self._meta_path(url), json.dumps(meta).encode())

    # -- fetching -------------------------------------------------------------------------

    async def fetch(self, url: str) -> FetchedMedia:
        """The body at `url`, from the cache when fresh; MediaError with a clear reason."""
        if not re.match(r"^https?://", url, flags=re.I):
            raise MediaError(f"media URL must be http or https: {url}")
        failed = self._failed.get(url)
        if failed is not None:
            if time.monotonic() < failed[0]:
                raise MediaError(failed[1])
            del self._failed[url]
        lock = self._locks.setdefault(url, asyncio.Lock())  # one download per URL at a time
        try:
            async with lock:
                try:
                    async with asyncio.timeout(self.total_timeout):
                        return await self._fetch(url)
                except TimeoutError as exc:
                    raise MediaError(
                        f"fetching {url} timed out (more than {self.total_timeout:g} s in total)"
                    ) from exc
        except MediaError as exc:
            if self.negative_ttl > 0:
                self._failed[url] = (time.monotonic() + self.negative_ttl, exc.message)
                while len(self._failed) > 10_000:
                    del self._failed[next(iter(self._failed))]
            raise
        finally:
            if not lock.locked() and self._locks.get(url) is lock:
                del self._locks[url]

    def _remember(self, url: str, data: bytes, sha: str, ctype: str | None, fresh: float) -> None:
        if fresh > 0:
            self._fresh[url] = (time.monotonic() + fresh, sha, ctype)
        if len(data) > self.memory_bytes or sha in self._memory:
            return
        self._memory[sha] = data
        self._memory_size += len(data)
        while self._memory_size > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_size -= len(old)

    def _from_memory(self, url: str) -> FetchedMedia | None:
        entry = self._fresh.get(url)
        if entry is None:
            return None
        until, sha, ctype = entry
        data = self._memory.get(sha)
        if time.monotonic() >= until or data is None:
            del self._fresh[url]
            return None
        self._memory.move_to_end(sha)
        return FetchedMedia(url, data, sha, ctype, True)

    async def _fetch(self, url: str) -> FetchedMedia:
        hit = self._from_memory(url)
        if hit is not None:
            return hit
        meta = await asyncio.to_thread(self._read_meta, url)
        now = time.time()
        headers = {"User-Agent": USER_AGENT}
        if meta is not None:
            fresh = float(meta.get("fresh_for", self.fresh_for))
            if now - float(meta.get("stored_at", 0)) < fresh:
                data = await asyncio.to_thread(self._blob_path(meta["sha256"]).read_bytes)
                log.debug("media cache hit for %s", url)
                left = fresh - (now - float(meta.get("stored_at", 0)))
                self._remember(url, data, meta["sha256"], meta.get("content_type"), left)
                return FetchedMedia(url, data, meta["sha256"], meta.get("content_type"), True)
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]

        timeout = httpx.Timeout(
            connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout,
            pool=self.connect_timeout,
        )  # fmt: skip
        try:
            async with httpx.AsyncClient(
                timeout=timeout,
                follow_redirects=True,
                max_redirects=self.max_redirects,
                # --- SSRF guard: check each hop's URL, connect only to checked addresses ---
                transport=self._transport or guarded_transport(self.policy, trust_env=False),
                event_hooks={"request": [self._check_hop]},
                trust_env=False,
            ) as client:
                async with client.stream("GET", url, headers=headers) as resp:
                    self.network_fetches += 1
                    if resp.status_code == 304 and meta is not None:
                        return await self._revalidated(url, meta, resp)
                    if resp.status_code >= 400:
                        raise MediaError(
                            f"fetching {url} failed: HTTP {resp.status_code} {resp.reason_phrase}"
                        )
                    if resp.status_code != 200:
                        raise MediaError(
                            f"fetching {url} failed: unexpected HTTP {resp.status_code}"
                        )
                    data = await self._read_capped(url, resp)
                    return await self._stored(url, data, resp)
        except AddressRefused as exc:  # SSRF guard
            raise MediaError(f"fetching {url} refused: {exc.message}") from exc
        except httpx.TimeoutException as exc:
            kind = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "reading"
            limit = self.connect_timeout if kind == "connecting" else self.read_timeout
            raise MediaError(f"fetching {url} timed out while {kind} (limit {limit:g} s)") from exc
        except httpx.TooManyRedirects as exc:
            raise MediaError(
                f"fetching {url} failed: more than {self.max_redirects} redirects"
            ) from exc
        except httpx.HTTPError as exc:
            raise MediaError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from exc

    async def _check_hop(self, request: httpx.Request) -> None:
        """SSRF guard, run for the first request and for every redirect hop."""
        await self.policy.check_url(str(request.url))

    async def _read_capped(self, url: str, resp: httpx.Response) -> bytes:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise MediaError(
                f"media at {url} is too big: {_fmt_bytes(int(length))}, "
                f"the limit is {_fmt_bytes(self.max_bytes)}"
            )
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.aiter_bytes():
            total += len(chunk)
            if total > self.max_bytes:
                raise MediaError(
                    f"media at {url} is too big: more than {_fmt_bytes(self.max_bytes)}"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _freshness(self, resp: httpx.Response) -> tuple[float, bool]:
        max_age, no_cache, no_store = _max_age(resp.headers.get("Cache-Control"))
        fresh = self.fresh_for if max_age is None else min(self.fresh_for, max_age)
        if no_cache:
            fresh = 0.0
        return fresh, no_store

    async def _stored(self, url: str, data: bytes, resp: httpx.Response) -> FetchedMedia:
        sha = hashlib.sha256(data).hexdigest()
        ctype = resp.headers.get("Content-Type")
        fresh, no_store = self._freshness(resp)
        if not no_store:
            meta = {
                "url": url,
                "sha256": sha,
                "etag": resp.headers.get("ETag"),
                "last_modified": resp.headers.get("Last-Modified"),
                "content_type": ctype,
                "stored_at": time.time(),
                "fresh_for": fresh,
                "size": len(data),
            }
            try:
                await asyncio.to_thread(self._store, url, data, sha, meta)
            except OSError as exc:
                log.warning("media cache not written for %s: %s", url, exc)
        log.info("fetched %s: %s bytes, sha256 %s", url, len(data), sha[:12])
        self._remember(url, data, sha, ctype, 0.0 if no_store else fresh)
        return FetchedMedia(url, data, sha, ctype, False)

    async def _revalidated(
        self, url: str, meta: dict[str, Any], resp: httpx.Response
    ) -> FetchedMedia:
        fresh, _ = self._freshness(resp)
        meta = {**meta, "stored_at": time.time(), "fresh_for": fresh}
        try:
            await asyncio.to_thread(self._touch, url, meta)
        except OSError as exc:
            log.warning("media cache record not updated for %s: %s", url, exc)
        data = await asyncio.to_thread(self._blob_path(meta["sha256"]).read_bytes)
        log.debug("media %s not modified (304)", url)
        self._remember(url, data, meta["sha256"], meta.get("content_type"), fresh)
        return FetchedMedia(url, data, meta["sha256"], meta.get("content_type"), True)
