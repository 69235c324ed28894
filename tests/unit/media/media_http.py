"""A tiny HTTP server on 127.0.0.1 in a thread, counting hits per path (tests only)."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import soundfile


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    etag: str | None = None
    cache_control: str | None = None
    delay: float = 0.0  # seconds before answering (timeouts)
    location: str | None = None  # redirect target
    headers: dict[str, str] = field(default_factory=dict)


class MediaServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.conditional: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits[self.path] += 1
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.delay:
                    time.sleep(route.delay)
                inm = self.headers.get("If-None-Match")
                if inm is not None:
                    outer.conditional[self.path] += 1
                if route.etag is not None and inm == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.location:
                    self.send_header("Location", route.location)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.cache_control:
                    self.send_header("Cache-Control", route.cache_control)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def media_server() -> Iterator[MediaServer]:
    srv = MediaServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def make_signal(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A non-periodic band-limited signal (300-3000 Hz), (n, channels) float32."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * rate)) / rate
    chans = []
    for ch in range(channels):
        x = np.zeros_like(t)
        for _ in range(6):
            f = rng.uniform(300, 3000)
            am = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t + rng.uniform(0, 6))
            x += am * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
        chans.append(0.6 * x / np.max(np.abs(x)) * (1.0 if ch == 0 else 0.8))
    return np.stack(chans, axis=1).astype(np.float32)


def encode_audio(frames: np.ndarray, rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, frames, rate, format=fmt)
    return buf.getvalue()
