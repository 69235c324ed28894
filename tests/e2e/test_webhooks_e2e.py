"""Webhooks end to end: a broadcast through `ringcast serve` to SIPp callees whose
callback_url is a real HTTP receiver on 127.0.0.1 that verifies every signature."""

from __future__ import annotations

import http.server
import json
import re
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
from sipp import SippUas

from e2e.server import RingcastServer
from ringcast.webhooks.sign import SignatureError, generate_secret, verify


class Receiver:
    """Records POSTs as (headers, body, verified id or error); answers 204."""

    def __init__(self, secret: Callable[[], str]) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = verify(outer.secret(), headers, body)
                except SignatureError as exc:
                    verified = f"invalid: {exc}"
                with outer.lock:
                    outer.events.append(
                        {
                            "id": headers.get("webhook-id"),
                            "verified": verified,
                            "content_type": headers.get("content-type"),
                            "payload": json.loads(body),
                        }
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/ringcast?token=t0p"

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)

    def wait_for(self, kind: str, n: int = 1, within: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            got = [e for e in self.snapshot() if e["payload"]["type"] == kind]
            if len(got) >= n:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{n} {kind} not received in {within}s: {self.snapshot()}")

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def records_of(rc: RingcastServer, request_id: str, headers: dict[str, str]) -> list[Any]:
    status = httpx.get(
        f"{rc.base}/voice/call/status/{request_id}", headers=headers, timeout=10
    ).json()
    if "record" in status:
        return [status["record"]]
    rep = httpx.get(f"{rc.base}/report/{status['report']['id']}", headers=headers, timeout=10)
    return list(rep.json()["records"])


def wait_final(rc: RingcastServer, request_id: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recs = records_of(rc, request_id, headers)
        if all(r["result"] in ("completed", "failed", "canceled") for r in recs):
            return
        time.sleep(0.2)
    raise AssertionError(f"not final in 60s\n{rc.output()}")


def test_broadcast_webhooks_signed_with_the_install_secret(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    secret_file = tmp_path / "ringcast.db.webhook-secret"
    with (
        Receiver(lambda: secret_file.read_text().strip()) as rx,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        SippUas("e2e_busy.xml", tmp_path) as busy,
        RingcastServer(tmp_path, env={"RINGCAST_WEBHOOK_SECRET": ""}) as rc,
    ):
        # No key and no RINGCAST_WEBHOOK_SECRET: the install secret is the file beside the DB.
        assert secret_file.read_text().startswith("whsec_")
        users = ["alice", "bob", "carol"]
        body = {
            "recipients": [{"to": answer.uri(u)} for u in users] + [{"to": busy.uri("dave")}],
            "from": "me",
            "playlist": [{"pause": 0.5}],
            "retry": {"attempts": 1, "delay": 1, "on": ["busy"]},
            # Credentials for a challenge that never comes: they must not leak into a webhook.
            "sip": {"username": "u", "password": "s3cret-pw"},
            "callback_url": rx.url(),
        }
        r = httpx.post(f"{rc.base}/voice/call/play", json=body, timeout=10)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        wait_final(rc, rid, {})
        done = rx.wait_for("request.completed")
        records = records_of(rc, rid, {})
        time.sleep(1.0)  # anything sent twice would arrive by now
        events = rx.snapshot()
        log = rc.output()

    assert all(e["verified"] == e["id"] for e in events), events
    assert all(e["content_type"] == "application/json" for e in events)
    ids = Counter(e["id"] for e in events)
    assert all(n == 1 for n in ids.values()), ids  # no duplicates
    assert len(done) == 1
    assert events[-1]["payload"]["type"] == "request.completed"  # sent 1 s after the last call's
    summary = done[0]["payload"]["data"]
    assert summary["id"] == rid and summary["total"] == 4 and summary["done"] == 4
    assert summary["results"] == {"completed": 4}
    assert summary["outcomes"] == {"answered": 3, "busy": 1}

    by_call: dict[str, list[str]] = {}
    for e in events:
        data = e["payload"]["data"]
        if e["payload"]["type"] != "request.completed":
            assert data["request_id"] == rid
            by_call.setdefault(data["id"], []).append(e["payload"]["type"])
    final = {rec["id"]: rec for rec in records}
    assert set(by_call) == set(final)
    for rec in records[:3]:
        assert sorted(by_call[rec["id"]]) == ["call.answered", "call.completed", "call.ringing"]
        sent = next(
            e["payload"]["data"]
            for e in events
            if e["payload"]["type"] == "call.completed" and e["payload"]["data"]["id"] == rec["id"]
        )
        assert {k: v for k, v in sent.items() if k != "request_id"} == rec
    busy_rec = records[3]
    assert busy_rec["attempt"] == 2 and busy_rec["outcome"] == "busy"
    assert by_call[busy_rec["id"]] == ["call.completed", "call.completed"]
    busy_events = sorted(
        (e["payload"]["data"] for e in events if e["payload"]["data"].get("id") == busy_rec["id"]),
        key=lambda d: d["attempt"],
    )
    assert [d["attempt"] for d in busy_events] == [1, 2]
    assert busy_events[0].get("retrying") is True and "retrying" not in busy_events[1]
    assert all(e["payload"]["timestamp"].endswith("Z") for e in events)
    assert all("s3cret-pw" not in json.dumps(e["payload"]) for e in events)
    assert "t0p" not in log  # the callback URL's query is never logged
    assert secret_file.read_text().strip() not in log


def test_webhooks_of_a_keyed_request_use_the_keys_secret(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    db = f"sqlite:///{tmp_path / 'ringcast.db'}"
    made = subprocess.run(
        [str(Path(sys.executable).parent / "ringcast"), "keys", "create", "--name", "hooks"]
        + ["--db", db, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = json.loads(made.stdout)
    install = generate_secret()
    with (
        Receiver(lambda: str(key["webhook_secret"])) as rx,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        RingcastServer(tmp_path, db=db, env={"RINGCAST_WEBHOOK_SECRET": install}) as rc,
    ):
        auth = {"authorization": f"Bearer {key['key']}"}
        body = {
            "to": answer.uri("erin"),
            "from": "me",
            "playlist": [{"pause": 0.3}],
            "callback_url": rx.url(),
        }
        r = httpx.post(f"{rc.base}/voice/call/play", json=body, headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        wait_final(rc, rid, auth)
        rx.wait_for("request.completed")
        events = rx.snapshot()
        log = rc.output()
    kinds = sorted(e["payload"]["type"] for e in events)
    assert kinds == ["call.answered", "call.completed", "call.ringing", "request.completed"]
    assert all(e["verified"] == e["id"] for e in events), events  # the key's secret
    assert key["webhook_secret"] not in log and install not in log


def test_a_receiver_that_never_answers_holds_up_no_call(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    """The callback URL accepts TCP connections and never answers: every call of
    the broadcast still ends, and its events wait in the outbox, none delivered."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        dead.listen(1)  # never accepted: connections queue, then SYNs go unanswered
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/hooks"
        with (
            SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
            RingcastServer(tmp_path) as rc,
        ):
            body = {
                "recipients": [{"to": answer.uri(f"u{i}")} for i in range(10)],
                "from": "me",
                "playlist": [{"pause": 0.3}],
                "callback_url": url,
            }
            r = httpx.post(f"{rc.base}/voice/call/play", json=body, timeout=10)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            wait_final(rc, rid, {})
            records = records_of(rc, rid, {})
            metrics = httpx.get(f"{rc.base}/metrics", timeout=10).text
    assert [rec["outcome"] for rec in records] == ["answered"] * 10
    deliveries = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^ringcast_webhook_deliveries\{state="(\w+)"\} (\S+)$', metrics, re.M)
    }
    assert deliveries["delivered"] == 0
    assert deliveries["pending"] >= 30  # ringing, answered and completed of each call
