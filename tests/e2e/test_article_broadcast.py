"""The article's multi-recipient broadcast, end to end: `ringcast serve` as a
real process, SIPp as the callees, audio served over real HTTP."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path

import httpx
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer, write_tone_wav

TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ARTICLE_USERS = ["123456", "alice", "bob", "charlie"]


def test_article_broadcast_rings_sipp_and_reports(tmp_path: Path, sipp_bin: str) -> None:
    write_tone_wav(tmp_path / "hello.wav", seconds=1.0)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_sink,
        MediaServer(tmp_path) as media,
    ):
        rtp_sink.bind(("127.0.0.1", 0))
        sink_port = str(rtp_sink.getsockname()[1])
        answer, busy = broadcast(tmp_path, media, sink_port)
    assert answer.invites_per_user() == {u: 1 for u in ARTICLE_USERS}
    assert busy.invites_per_user() == {"999777": 1}


def broadcast(tmp_path: Path, media: MediaServer, sink_port: str) -> tuple[SippUas, SippUas]:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": sink_port}) as answer,
        SippUas("e2e_busy.xml", tmp_path) as busy,
        RingcastServer(tmp_path) as rc,
    ):
        recipients = [{"to": answer.uri(u)} for u in ARTICLE_USERS]
        recipients.append({"to": busy.uri("999777")})
        body = {
            "recipients": recipients,
            "from": "me",
            "playlist": [{"play": media.url("hello.wav")}],
        }
        r = httpx.post(f"{rc.base}/voice/call/play", json=body, timeout=10)
        assert r.status_code == 200
        accepted = r.json()
        assert accepted == {
            "code": 0,
            "status": 200,
            "data": "accepted",
            "request_id": accepted["request_id"],
        }
        request_id = accepted["request_id"]
        assert str(uuid.UUID(request_id)) == request_id

        status = rc.wait_ready(request_id, timeout=60)
        assert (status["code"], status["status"], status["data"]) == (0, 200, "accepted")
        report = status["report"]
        assert report["status"] == "ready"
        assert (report["total"], report["done"]) == (5, 5)
        assert report["location"] == f"/report/{report['id']}"

        got = httpx.get(f"{rc.base}/report/{report['id']}", timeout=10).json()
        assert (got["code"], got["status"], got["data"]) == (0, 200, "accepted")
        assert got["request_id"] == report["id"]
        records = got["records"]
        assert [rec["to"] for rec in records] == [x["to"] for x in recipients]
        for rec in records[:4]:
            assert rec["type"] == "voice"
            assert rec["result"] == "completed", rec
            assert rec["from"] == "me"
            for field in ("request_time", "setup_time", "connect_time", "disconnect_time"):
                assert TIME.match(rec[field]), (field, rec)
            assert rec["disconnect_cause_code"] == "200"
            assert rec["disconnect_cause_text"] == "OK"
            assert rec["answered"] is True
            assert isinstance(rec["duration"], int) and 0 <= rec["duration"] <= 5
            assert rec["codec"] in ("PCMU", "PCMA")
        busy_rec = records[4]
        assert busy_rec["result"] == "completed"
        assert busy_rec["disconnect_cause_code"] == "486"
        assert busy_rec["disconnect_cause_text"] == "User Busy"
        assert busy_rec["answered"] is False
        assert busy_rec["duration"] == 0
        assert "connect_time" not in busy_rec
        assert busy_rec["outcome"] == "busy"

        one = httpx.get(f"{rc.base}/voice/call/status/{busy_rec['id']}", timeout=10).json()
        assert one["request_id"] == busy_rec["id"]
        assert one["record"] == busy_rec

        assert media.hits["/hello.wav"] == 1  # the prompt was fetched once for 5 calls
    return answer, busy
