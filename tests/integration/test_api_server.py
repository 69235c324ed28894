"""ringcast as a real process: `ringcast api` / `ringcast serve` under uvicorn on a
free loopback port, spoken to over real HTTP, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port

ARTICLE: dict[str, Any] = {
    "recipients": [
        {"to": "sip:123456@192.168.1.1:5060"},
        {"to": "sip:alice@192.168.1.1:5060"},
        {"to": "sip:bob@192.168.1.1:5060"},
        {"to": "sip:charlie@192.168.1.1:5060"},
        {"to": "sip:999777@192.168.1.1:5060"},
    ],
    "from": "me",
    "playlist": [{"play": "http://server.domain.com/voices/hello.wav"}],
}
RINGCAST = [sys.executable, "-c", "from ringcast.cli import main; main()"]


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, log: Path, sink: Any) -> None:
        self.proc = proc
        self.url = url
        self.log = log
        self.sink = sink

    def stop(self, timeout: float = 40.0) -> int:  # a hang guard; loaded machines are slow
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        finally:
            self.sink.close()


def start(command: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port(socket.SOCK_STREAM)
    log = tmp_path / f"{command}.log"
    sink = log.open("w")
    proc = subprocess.Popen(
        [*RINGCAST, command, "--http", f"127.0.0.1:{port}", *args],
        stdout=sink,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sink.close()
            pytest.fail(f"ringcast {command} exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(proc, url, log, sink)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(5)
    sink.close()
    pytest.fail(f"ringcast {command} did not start:\n{log.read_text()}")


@pytest.fixture
def api_server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start("api", tmp_path, "--db", db_url)
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RINGCAST, *args], capture_output=True, text=True, timeout=60, check=False, **kw
    )


async def test_article_over_real_http(api_server: Server) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, timeout=10) as client:
        resp = await client.post("/voice/call/play", json=ARTICLE)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        assert list(body) == ["code", "status", "data", "request_id"]
        assert (body["code"], body["status"], body["data"]) == (0, 200, "accepted")
        rid = body["request_id"]

        status = (await client.get(f"/voice/call/status/{rid}")).json()
        report = status["report"]
        assert report["location"] == f"/report/{report['id']}"
        assert report["status"] == "pending"

        full = (await client.get(report["location"])).json()
        assert full["request_id"] == report["id"]
        assert [r["to"] for r in full["records"]] == [r["to"] for r in ARTICLE["recipients"]]
        assert all(r["from"] == "me" and r["result"] == "queued" for r in full["records"])

        resp = await client.post("/voice/call/play", content=b"{oops")
        assert resp.status_code == 400 and resp.json()["data"] == "error"

    # the client commands of the CLI against the live server
    out = cli("status", rid, "--url", api_server.url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["report"]["id"] == report["id"]
    out = cli("report", report["id"], "--format", "ndjson", "--url", api_server.url)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 5
    out = cli("report", report["id"], "--format", "csv", "--url", api_server.url)
    assert out.stdout.splitlines()[0].startswith("type,id,result,request_time,to,from")
    out = cli("report", report["id"], "--url", api_server.url)
    assert json.loads(out.stdout)["report_status"] == "pending"
    out = cli("status", "no-such-id", "--url", api_server.url)
    assert out.returncode == 1 and "404" in out.stderr

    assert api_server.stop() == 0
    log = api_server.log.read_text()
    assert "Application shutdown complete" in log
    assert "API stopped" in log


def test_serve_defaults_and_sigterm(tmp_path: Path) -> None:
    """`ringcast serve` with no --db uses ./ringcast.db (in its working directory),
    migrates it, serves, and stops cleanly on SIGTERM (dialer included when present)."""
    sip_port = free_port()
    rtp = free_port()
    server = start(
        "serve",
        tmp_path,
        "--sip",
        f"127.0.0.1:{sip_port}",
        "--rtp-ports",
        f"{rtp}-{rtp + 20}",
        env={"RINGCAST_PUBLIC_IP": "127.0.0.1", "RINGCAST_SHUTDOWN_GRACE": "1"},
    )
    try:
        resp = httpx.post(
            server.url + "/voice/call/play",
            json={"to": "sip:nobody@127.0.0.1:9", "playlist": [{"pause": 0.1}]},
            timeout=10,
        )
        assert resp.status_code == 200
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    assert (tmp_path / "ringcast.db").exists()


def test_api_requires_db(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    out = cli("api", env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "db is required" in out.stderr
    out = cli("dialer", env=env, cwd=tmp_path)
    assert out.returncode == 2 and "db is required" in out.stderr


def test_bad_flag_value_fails_early_naming_it(tmp_path: Path) -> None:
    out = cli("api", "--db", f"sqlite:///{tmp_path}/x.db", "--http", "nowhere", cwd=tmp_path)
    assert out.returncode == 2
    assert "http must be HOST:PORT" in out.stderr
    out = cli("api", "--db", f"sqlite:///{tmp_path}/x.db", "--sip-transport", "sctp")
    assert out.returncode == 2 and "sip_transport" in out.stderr
    out = cli("serve", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert out.returncode == 2 and "config_file" in out.stderr


def test_dialer_process_stops_on_sigterm(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ringcast.db"
    log = tmp_path / "dialer.log"
    sip_port = free_port()
    rtp = free_port()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                *RINGCAST,
                "dialer",
                "--db",
                db,
                "--sip",
                f"127.0.0.1:{sip_port}",
                "--rtp-ports",
                f"{rtp}-{rtp + 20}",
                "--public-ip",
                "127.0.0.1",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 30
            while "dialer running" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert "dialer stopping" in log.read_text()
