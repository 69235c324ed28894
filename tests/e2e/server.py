"""Run `ringcast serve` as a real subprocess, and serve media files over HTTP, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from conftest import free_port


class MediaServer:
    """A static file server on 127.0.0.1 that counts requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hits[self.path] += 1
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_tone_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    """A chirp (not a pure tone, so correlation can tell offsets apart)."""
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.4 * np.sin(2 * np.pi * (300 + 400 * t / seconds) * t)
    sf.write(path, audio, rate, subtype="PCM_16")
    return audio


class RingcastServer:
    """`ringcast serve` (or `api`, `dialer`) in a subprocess; stopped (or
    killed) by its own PID."""

    def __init__(
        self,
        workdir: Path,
        *,
        db: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        command: str = "serve",
        sip_host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.command = command
        self.http_port = free_port(socket.SOCK_STREAM)
        self.sip_port = free_port()
        rtp_lo = 20000 + (self.sip_port % 45) * 200  # 100 RTP/RTCP pairs
        self.db = db or f"sqlite:///{workdir / 'ringcast.db'}"
        http = [] if command == "dialer" else ["--http", f"127.0.0.1:{self.http_port}"]
        sip = (
            []
            if command == "api"
            else [
                "--sip",
                f"[{sip_host}]:{self.sip_port}"
                if ":" in sip_host
                else f"{sip_host}:{self.sip_port}",
                "--rtp-ports",
                f"{rtp_lo}-{rtp_lo + 199}",
            ]
        )
        self.args = ["--db", self.db, *http, *sip, *(args or [])]
        self.env = {**os.environ, "RINGCAST_ALLOW_PRIVATE_URLS": "1", **(env or {})}
        self.log = workdir / f"ringcast-{self.http_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> RingcastServer:
        # 60 s: a loaded 2-core machine was seen taking 14-23 s to import and migrate
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ringcast"), self.command, *self.args],
            cwd=self.workdir,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ringcast {self.command} exited: {self.output()}")
            if self.command == "dialer":
                if " started (max_calls=" in self.output():
                    return self
                time.sleep(0.1)
                continue
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        # Not left running: `with RingcastServer(...)` never reaches __exit__ from here.
        self.stop(timeout=5)
        raise RuntimeError(f"ringcast {self.command} did not become ready: {self.output()}")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 40.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=5)

    def __enter__(self) -> RingcastServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, request_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll GET /voice/call/status until the report (or record) is final."""
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        # One client for the whole wait: a client per poll costs a TLS context
        # each time, CPU the server under test then lacks.
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                body = client.get(f"/voice/call/status/{request_id}").json()
                if is_final(body):
                    return body
                time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout}s: {body}\n{self.output()}")

    async def wait_ready_async(self, request_id: str, within: float = 60.0) -> dict[str, Any]:
        """`wait_ready` that lets the test's event loop run (an RTP sink reads meanwhile)."""
        deadline = time.monotonic() + within
        body: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                body = (await client.get(f"/voice/call/status/{request_id}")).json()
                if is_final(body):
                    return body
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready in {within}s: {body}\n{self.output()}")


def wait_for(check: Callable[[], object], within: float, what: str) -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {within} s: {what}")


def is_final(status: dict[str, Any]) -> bool:
    """A GET /voice/call/status body whose report is ready or whose record is final."""
    if "report" in status:
        return bool(status["report"]["status"] == "ready")
    record = status.get("record")
    return bool(record and record["result"] in ("completed", "failed", "canceled"))


def post(rc: RingcastServer, body: dict[str, Any]) -> str:
    """POST /voice/call/play and return the request id (asserting the 200)."""
    r = httpx.post(f"{rc.base}/voice/call/play", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])
