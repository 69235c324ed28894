"""Secrets stay secret through a real broadcast: `ringcast serve` (debug, JSON logs,
an API key) dials SIPp, which challenges with digest auth and checks the password.
Neither the SIP password (inline and from a config-file trunk), nor the webhook
secret, nor the API key appears in any API response, call record, report or log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from e2e.server import RingcastServer
from sipp import SippUas

from ringcast.store.models import (
    call_attempts_table,
    calls_table,
    requests_table,
    webhook_outbox_table,
)

RINGCAST = str(Path(sys.executable).parent / "ringcast")


def _wait_final(base: str, headers: dict[str, str], rid: str, seen: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = httpx.get(f"{base}/voice/call/status/{rid}", headers=headers, timeout=10)
        seen.append(resp.text)
        body = resp.json()
        if "report" in body and body["report"]["status"] == "ready":
            return body
        if "record" in body and body["record"]["result"] in ("completed", "failed", "canceled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"not final: {body}")


def test_passwords_and_secrets_never_leak(tmp_path: Path, sipp_bin: str) -> None:
    password = "Pw-" + uuid.uuid4().hex  # a string that can only come from here
    db = f"sqlite:///{tmp_path / 'ringcast.db'}"
    made = subprocess.run(
        [RINGCAST, "keys", "create", "--name", "ops", "--db", db, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    created = json.loads(made.stdout)
    key, whsec = created["key"], created["webhook_secret"]
    headers = {"Authorization": f"Bearer {key}"}
    seen: list[str] = []  # every response body and header block

    with SippUas(
        "uas_auth.xml", tmp_path, keys={"auth_user": "alice", "auth_password": password}
    ) as uas:
        config = tmp_path / "ringcast.toml"
        config.write_text(
            f'[trunks.carrier]\nproxy = "sip:{uas.uri_host}"\n'
            f'username = "alice"\npassword = "{password}"\n'
        )
        server = RingcastServer(
            tmp_path,
            db=db,
            args=["--config", str(config)],
            env={"RINGCAST_LOG_LEVEL": "debug", "RINGCAST_JSON_LOGS": "1"},
        )
        with server as rc:

            def call(method: str, path: str, **kw: Any) -> httpx.Response:
                resp = httpx.request(method, rc.base + path, timeout=30, **kw)
                seen.append(resp.text)
                seen.append(json.dumps(dict(resp.headers)))
                return resp

            sip: dict[str, str] = {
                "proxy": f"sip:{uas.uri_host}",
                "username": "alice",
                "password": password,
            }
            inline: dict[str, Any] = {
                "recipients": [{"to": f"sip:{u}@{uas.uri_host}"} for u in ("bob", "dave")],
                "from": "me",
                "playlist": [{"pause": 0.3}],
                "sip": sip,
                "callback_url": "http://127.0.0.1:9/hook",
            }
            trunk = {
                "to": f"sip:carol@{uas.uri_host}",
                "playlist": [{"pause": 0.3}],
                "sip": {"trunk": "carrier"},
            }
            assert call("POST", "/voice/call/play", json=inline).status_code == 401
            r1 = call("POST", "/voice/call/play", json=inline, headers=headers)
            assert r1.status_code == 200, r1.text
            r2 = call("POST", "/voice/call/play", json=trunk, headers=headers)
            assert r2.status_code == 200, r2.text
            # errors never echo the input, even with the password beside a bad field
            bad = {**inline, "ring_timeout": "soon"}
            assert call("POST", "/voice/call/play", json=bad, headers=headers).status_code == 422
            bad_sip = {**inline, "sip": {**sip, "transport": password}}
            assert (
                call("POST", "/voice/call/play", json=bad_sip, headers=headers).status_code == 422
            )
            idem = {**headers, "Idempotency-Key": "once"}
            call("POST", "/voice/call/play", json=trunk, headers=idem)
            call("POST", "/voice/call/play", json=trunk, headers=idem)

            rid1, rid2 = r1.json()["request_id"], r2.json()["request_id"]
            first = _wait_final(rc.base, headers, rid1, seen)
            second = _wait_final(rc.base, headers, rid2, seen)
            assert second["record"]["answered"] is True, second
            report_id = first["report"]["id"]
            for fmt in ("json", "csv", "ndjson"):
                resp = call("GET", f"/report/{report_id}?format={fmt}", headers=headers)
                assert resp.status_code == 200
            records = call("GET", f"/report/{report_id}", headers=headers).json()["records"]
            assert [r["answered"] for r in records] == [True, True], records
            for path in [
                f"/voice/call/status/{rid2}?attempts=all",
                "/requests",
                f"/requests/{rid1}",
                f"/requests/{rid1}/calls",
                "/metrics",
                "/dnc",
                "/openapi.json",
                "/health",
                "/",
            ]:
                call("GET", path, headers=headers)
            call("DELETE", f"/voice/call/{rid1}", headers=headers)
        assert server.stop() in (0, None)

    invites = [m for m in uas.received() if m.startswith("INVITE")]
    # bob, dave (inline credentials), carol twice (trunk; the idempotent replay adds none)
    assert sum("Authorization: Digest " in m for m in invites) == 4

    log = server.log.read_text(errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "call_state" for line in lines), log[-3000:]

    async_rows = _stored_rows(tmp_path / "ringcast.db")
    everything = "\n".join([*seen, log, async_rows])
    for secret, what in [(password, "SIP password"), (whsec, "webhook secret"), (key, "API key")]:
        assert secret not in everything, f"the {what} leaked"
    assert password not in "".join(uas.received())  # only the digest went out


def _stored_rows(db_file: Path) -> str:
    """Requests (their bodies keep a trunk's name and an inline password sealed, see
    test_secrets_at_rest.py), call records, earlier attempts and queued webhooks."""
    engine = sa.create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            out: list[str] = []
            for table in (requests_table, calls_table, call_attempts_table, webhook_outbox_table):
                out.extend(repr(tuple(row)) for row in conn.execute(sa.select(table)))
    finally:
        engine.dispose()
    assert out
    return "\n".join(out)
