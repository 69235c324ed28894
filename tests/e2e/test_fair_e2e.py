"""Sharing one service fairly, against real SIPp callees through `ringcast
serve`: a single call behind a broadcast, slow and failing media that hold up
no one else, pause/resume, recipient order under a request's cps, every
attempt kept, and replay of a request's recipients."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sipp import SippUas

from e2e.server import RingcastServer, post


def records_of(rc: RingcastServer, request_id: str) -> list[dict[str, Any]]:
    status = httpx.get(f"{rc.base}/voice/call/status/{request_id}", timeout=10).json()
    if "record" in status:
        return [status["record"]]
    rep = httpx.get(f"{rc.base}/report/{status['report']['id']}", timeout=30).json()
    return list(rep["records"])


def invite_order(uas: SippUas) -> list[str]:
    """The users of the initial INVITEs SIPp received, in order."""
    out = []
    for msg in uas.received():
        first = msg.split("\n", 1)[0]
        if (
            first.startswith("INVITE sip:")
            and ";tag=" not in msg.split("\nTo:", 1)[-1].split("\n", 1)[0]
        ):
            out.append(first.split("sip:", 1)[1].split("@", 1)[0])
    return out


def cli(rc: RingcastServer, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ringcast"), *args, "--url", rc.base],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_call_behind_a_broadcast_takes_one_of_the_next_channels(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path, args=["--max-calls", "2"]) as rc,
    ):
        big = post(
            rc,
            {
                "recipients": [{"to": uas.uri(f"b{i}")} for i in range(20)],
                "playlist": [{"pause": 1.0}],
            },
        )
        deadline = time.monotonic() + 30
        while len(invite_order(uas)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # every channel is busy with the broadcast
        counts = httpx.get(f"{rc.base}/requests/{big}", timeout=10).json()["request"]["counts"]
        one = post(rc, {"to": uas.uri("urgent"), "playlist": [{"pause": 0.2}]})
        before = 20 - counts["queued"]  # broadcast calls claimed before the POST
        assert rc.wait_ready(one, timeout=30)["record"]["answered"]
        order = invite_order(uas)
        # FIFO would dial it 21st; fair, it takes one of the next free channels: the
        # first claim after the POST starts preparing its prompt, the next takes it
        assert order.index("urgent") <= before + 2, (before, order)
        status = httpx.get(f"{rc.base}/voice/call/status/{big}", timeout=10).json()
        assert status["report"]["done"] < 20  # the broadcast was still running
        rc.wait_ready(big, timeout=60)
    assert [u for u in invite_order(uas) if u != "urgent"] == [f"b{i}" for i in range(20)]


@contextmanager
def media_server(tmp_path: Path) -> Iterator[str]:
    """HTTP on 127.0.0.1: /slow answers after 25 s, /missing is a 404."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/slow":
                release.wait(25)
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_slow_and_failing_media_hold_up_no_other_request(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        media_server(tmp_path) as media,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        slow = post(rc, {"to": uas.uri("slow"), "playlist": [{"play": f"{media}/slow"}]})
        missing = post(rc, {"to": uas.uri("gone"), "playlist": [{"play": f"{media}/missing"}]})
        time.sleep(0.5)  # both prompts are being prepared
        quick = post(rc, {"to": uas.uri("quick"), "playlist": [{"pause": 1.0}]})
        record = rc.wait_ready(quick, timeout=10)["record"]
        assert record["answered"], record
        held = records_of(rc, slow)[0]
        assert held["result"] == "queued", held  # its URL has not answered yet
        failed = rc.wait_ready(missing, timeout=20)["record"]
        assert failed["result"] == "failed" and "404" in failed["error"], failed
        slow_end = rc.wait_ready(slow, timeout=40)["record"]
        assert slow_end["result"] == "failed" and "prompt" in slow_end["error"], slow_end
    assert invite_order(uas) == ["quick"]


def test_pause_stops_claims_and_resume_restarts_them(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path, args=["--max-calls", "1"]) as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": uas.uri(f"p{i}")} for i in range(6)],
                "playlist": [{"pause": 1.0}],
            },
        )
        assert "paused" in cli(rc, "pause", rid)
        time.sleep(2.0)  # a call claimed before the pause is still placed
        dialed = invite_order(uas)
        time.sleep(3.0)
        assert invite_order(uas) == dialed  # then nothing more
        assert len(dialed) < 6
        detail = httpx.get(f"{rc.base}/requests/{rid}", timeout=10).json()["request"]
        assert detail["status"] == "paused" and detail["paused_at"], detail
        queued = [r for r in records_of(rc, rid) if r["result"] == "queued"]
        assert len(queued) == 6 - len(dialed)
        gone = httpx.post(f"{rc.base}/voice/call/nope/pause", timeout=10)
        assert gone.status_code == 404 and gone.json()["code"] != 0
        answer = httpx.post(f"{rc.base}/voice/call/{rid}/resume", timeout=10).json()
        assert (answer["data"], answer["queued"]) == ("resumed", len(queued))
        rc.wait_ready(rid, timeout=60)
        assert all(r["answered"] for r in records_of(rc, rid))
    assert invite_order(uas) == [f"p{i}" for i in range(6)]


def test_recipients_are_dialed_in_order_under_a_request_cps(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path, args=["--max-calls", "20", "--cps", "50"]) as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": uas.uri(f"r{i}")} for i in range(10)],
                "playlist": [{"pause": 0.3}],
                "cps": 4,
                "max_concurrent": 3,
            },
        )
        rc.wait_ready(rid, timeout=60)
    assert invite_order(uas) == [f"r{i}" for i in range(10)]


def test_every_attempt_is_kept_after_busy_and_no_answer_retries(
    tmp_path: Path, sipp_bin: str
) -> None:
    with (
        SippUas("e2e_busy.xml", tmp_path) as busy,
        SippUas("e2e_ring.xml", tmp_path) as ring,
        RingcastServer(tmp_path) as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": busy.uri("carol")}, {"to": ring.uri("dave")}],
                "playlist": [{"pause": 0.5}],
                "ring_timeout": 1,
                "retry": {"attempts": 2, "delay": 1, "on": ["busy", "no-answer"]},
            },
        )
        rc.wait_ready(rid, timeout=60)
        carol, dave = records_of(rc, rid)
        report_id = httpx.get(f"{rc.base}/voice/call/status/{rid}", timeout=10).json()["report"][
            "id"
        ]
        csv_text = httpx.get(f"{rc.base}/report/{report_id}?format=csv", timeout=10).text
        single = httpx.get(f"{rc.base}/voice/call/status/{carol['id']}", timeout=10).json()
    for record, outcome, cause in ((carol, "busy", "486"), (dave, "no-answer", "487")):
        attempts = record["attempts"]
        assert [a["attempt"] for a in attempts] == [1, 2, 3]
        assert all(a["outcome"] == outcome for a in attempts), attempts
        assert all(a["disconnect_cause_code"] == cause for a in attempts), attempts
        assert all(a["setup_time"] <= a["disconnect_time"] for a in attempts)
        times = [a["setup_time"] for a in attempts]
        assert times == sorted(times) and len(set(times)) == 3  # retried 1 s apart
        # the top-level fields are the last attempt's
        last = attempts[-1]
        assert (record["attempt"], record["outcome"], record["setup_time"]) == (
            3,
            outcome,
            last["setup_time"],
        )
    assert single["record"]["attempts"] == carol["attempts"]
    header, *rows = csv_text.strip().split("\r\n")
    assert header.split(",")[-1] == "attempts"
    assert [row.split(",")[-1] for row in rows] == ["3", "3"]


def test_replay_calls_exactly_the_recipients_with_those_outcomes(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        SippUas("uas_busy.xml", tmp_path) as busy,
        RingcastServer(tmp_path) as rc,
    ):
        recipients = [
            {"to": answer.uri("a0"), "variables": {"name": "Ann"}},
            {"to": busy.uri("b0"), "variables": {"name": "Bob"}, "timezone": "Europe/Riga"},
            {"to": answer.uri("a1")},
            {"to": busy.uri("b1"), "from": "sip:desk@example.com"},
        ]
        first = post(
            rc, {"recipients": recipients, "from": "me", "playlist": [{"say": "Hi {name}"}]}
        )
        rc.wait_ready(first, timeout=60)
        again = cli(rc, "replay", first, "--say", "Again, {name}", "--only", "busy").strip()
        rc.wait_ready(again, timeout=60)
        records = records_of(rc, again)
        every = httpx.post(
            f"{rc.base}/voice/call/{first}/replay",
            json={"playlist": [{"pause": 0.2}], "from": "you"},
            timeout=30,
        ).json()
        refused = httpx.post(
            f"{rc.base}/voice/call/{first}/replay",
            json={"to": answer.uri("x"), "playlist": [{"pause": 0.2}]},
            timeout=30,
        )
        none = httpx.post(
            f"{rc.base}/voice/call/{first}/replay",
            json={"playlist": [{"pause": 0.2}], "only": ["declined"]},
            timeout=30,
        )
        rc.wait_ready(every["request_id"], timeout=60)
        everyone = records_of(rc, every["request_id"])
    assert [r["to"] for r in records] == [busy.uri("b0"), busy.uri("b1")]
    assert [r["from"] for r in records] == ["me", "sip:desk@example.com"]
    assert all(r["outcome"] == "busy" for r in records)
    assert busy.invites_per_user() == {"b0": 3, "b1": 3}  # first request, replay, replay of all
    assert answer.invites_per_user() == {"a0": 2, "a1": 2}
    assert every["replay_of"] == first
    assert [r["to"] for r in everyone] == [r["to"] for r in recipients]
    assert [r["from"] for r in everyone] == ["you", "you", "you", "sip:desk@example.com"]
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "to"
    assert none.status_code == 422 and none.json()["error"]["field"] == "only"
