"""The broadcast engine against real SIPp callees: limits, retries, windows,
cancel, prompt failure and crash recovery, through `ringcast serve`."""

from __future__ import annotations

import socket
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer, post, write_tone_wav


def report(rc: RingcastServer, request_id: str) -> list[dict[str, Any]]:
    status = httpx.get(f"{rc.base}/voice/call/status/{request_id}", timeout=10).json()
    if "record" in status:
        return [status["record"]]
    rep = httpx.get(f"{rc.base}/report/{status['report']['id']}", timeout=30).json()
    return list(rep["records"])


def pauses_to(rc: RingcastServer, uas: SippUas, prefix: str, n: int, *, pause: float) -> str:
    """POST a request whose playlist is one pause to users prefix0..prefix{n-1}."""
    recipients = [{"to": uas.uri(f"{prefix}{i}")} for i in range(n)]
    return post(rc, {"recipients": recipients, "from": "me", "playlist": [{"pause": pause}]})


def test_limits_hold_channels_and_cps(tmp_path: Path, sipp_bin: str, rtp_sink: str) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas,
        RingcastServer(tmp_path, args=["--max-calls", "3", "--cps", "5"]) as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": uas.uri(f"u{i}")} for i in range(12)],
                "from": "me",
                "playlist": [{"pause": 1.0}],
            },
        )
        rc.wait_ready(rid, timeout=60)
        records = report(rc, rid)
    assert all(r["answered"] for r in records), records
    assert uas.invites_per_user() == {f"u{i}": 1 for i in range(12)}
    peak = uas.max_concurrent_calls()
    assert 1 <= peak <= 3, peak
    times = uas.invite_times()
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.2 * 0.8, gaps  # --cps 5: one INVITE per 200 ms


def test_request_and_trunk_limits_hold(tmp_path: Path, sipp_bin: str, rtp_sink: str) -> None:
    """A request's max_concurrent/cps and a trunk's max_calls/cps (config file), on a
    node whose own limits are far above them: each callee sees at most 2 calls
    at once, INVITEs at least 250 ms apart."""
    keys = {"rtp_port": rtp_sink}
    with (
        SippUas("uas_answer.xml", tmp_path, keys=keys) as direct,
        SippUas("uas_answer.xml", tmp_path, keys=keys) as carrier,
    ):
        config = tmp_path / "ringcast.toml"
        config.write_text(
            f'[trunks.carrier]\nproxy = "sip:{carrier.uri_host}"\nmax_calls = 2\ncps = 4\n'
        )
        args = ["--max-calls", "50", "--cps", "100", "--config", str(config)]
        with RingcastServer(tmp_path, args=args) as rc:
            by_request = post(
                rc,
                {
                    "recipients": [{"to": direct.uri(f"r{i}")} for i in range(8)],
                    "playlist": [{"pause": 0.5}],
                    "max_concurrent": 2,
                    "cps": 4,
                },
            )
            by_trunk = post(
                rc,
                {
                    "recipients": [{"to": f"sip:t{i}@carrier.example"} for i in range(8)],
                    "playlist": [{"pause": 0.5}],
                    "sip": {"trunk": "carrier"},
                },
            )
            rc.wait_ready(by_request, timeout=60)
            rc.wait_ready(by_trunk, timeout=60)
            records = report(rc, by_request) + report(rc, by_trunk)
    assert [r["outcome"] for r in records] == ["answered"] * 16, records
    assert direct.invites_per_user() == {f"r{i}": 1 for i in range(8)}
    assert carrier.invites_per_user() == {f"t{i}": 1 for i in range(8)}
    for uas in (direct, carrier):
        assert uas.max_concurrent_calls() == 2
        times = uas.invite_times()
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.25 * 0.8, gaps  # cps 4: one INVITE per 250 ms


@pytest.mark.parametrize(
    ("scenario", "extra", "outcome", "attempts", "cause", "gap"),
    [
        # busy twice more after the first 486, one second apart
        (
            "e2e_busy.xml",
            {"retry": {"attempts": 2, "delay": 1, "on": ["busy"]}},
            "busy",
            3,
            "486",
            1,
        ),
        # rings out (ring timeout 1 s, our CANCEL, 487), once more after one second
        (
            "e2e_ring.xml",
            {"ring_timeout": 1, "retry": {"attempts": 1, "delay": 1, "on": ["no-answer"]}},
            "no-answer",
            2,
            "487",
            1 + 1,
        ),
    ],
)
def test_retry_until_the_cap_with_delay(
    tmp_path: Path,
    sipp_bin: str,
    scenario: str,
    extra: dict[str, Any],
    outcome: str,
    attempts: int,
    cause: str,
    gap: float,
) -> None:
    with (
        SippUas(scenario, tmp_path) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        rid = post(
            rc, {"to": uas.uri("carol"), "from": "me", "playlist": [{"pause": 0.5}], **extra}
        )
        final = rc.wait_ready(rid, timeout=40)["record"]
        assert (final["result"], final["outcome"], final["attempt"]) == (
            "completed",
            outcome,
            attempts,
        )
        every = httpx.get(
            f"{rc.base}/voice/call/status/{final['id']}", params={"attempts": "all"}, timeout=10
        ).json()["attempts"]
        assert [(a["attempt"], a["outcome"]) for a in every] == [
            (n, outcome) for n in range(1, attempts + 1)
        ]
        assert all(a["disconnect_cause_code"] == cause for a in every)
    times = uas.invite_times()
    assert len(times) == attempts  # then the cap
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= gap * 0.9, gaps
    if cause == "487":
        assert sum(m.startswith("CANCEL ") for m in uas.received()) == attempts


def test_closed_window_and_future_not_before_hold_calls(tmp_path: Path, sipp_bin: str) -> None:
    now = datetime.now(UTC)
    closed = {
        "window": {
            "start": (now + timedelta(hours=2)).strftime("%H:%M"),
            "end": (now + timedelta(hours=3)).strftime("%H:%M"),
        },
        "timezone": "UTC",
    }
    later = {"not_before": (now + timedelta(hours=1)).isoformat()}
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": "9"}) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        held = [
            post(
                rc,
                {
                    "to": uas.uri("w1"),
                    "from": "me",
                    "playlist": [{"pause": 0.2}],
                    "schedule": closed,
                },
            ),
            post(
                rc,
                {
                    "to": uas.uri("w2"),
                    "from": "me",
                    "playlist": [{"pause": 0.2}],
                    "schedule": later,
                },
            ),
        ]
        time.sleep(2.0)
        for rid in held:
            assert report(rc, rid)[0]["result"] == "queued"
    assert uas.invites_per_user() == {}


def test_prompt_failure_fails_every_call_and_dials_no_one(tmp_path: Path, sipp_bin: str) -> None:
    with (
        MediaServer(tmp_path) as media,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": "9"}) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        rid = post(
            rc,
            {
                "recipients": [{"to": uas.uri(f"p{i}")} for i in range(3)],
                "from": "me",
                "playlist": [{"play": media.url("missing.wav")}],
            },
        )
        rc.wait_ready(rid, timeout=30)
        records = report(rc, rid)
        assert httpx.get(f"{rc.base}/health", timeout=5).status_code == 200
    assert [r["result"] for r in records] == ["failed"] * 3
    assert all("404" in r["error"] for r in records), records
    assert uas.invites_per_user() == {}


def test_cancel_queued_ringing_and_connected_calls(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    far = {"not_before": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    with (
        SippUas("e2e_ring.xml", tmp_path) as ring,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        RingcastServer(tmp_path) as rc,
    ):
        queued = post(
            rc, {"to": answer.uri("q"), "from": "me", "playlist": [{"pause": 1}], "schedule": far}
        )
        ringing = post(
            rc, {"to": ring.uri("r"), "from": "me", "playlist": [{"pause": 1}], "ring_timeout": 60}
        )
        connected = post(rc, {"to": answer.uri("c"), "from": "me", "playlist": [{"pause": 60}]})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = {report(rc, ringing)[0]["result"], report(rc, connected)[0]["result"]}
            if states == {"ringing", "in-progress"}:
                break
            time.sleep(0.2)
        assert report(rc, ringing)[0]["result"] == "ringing"
        live = report(rc, connected)[0]
        assert live["result"] == "in-progress"
        assert live["answered"] is True and live["connect_time"], live  # consistent while live
        for rid in (queued, ringing, connected):
            r = httpx.delete(f"{rc.base}/voice/call/{rid}", timeout=10)
            assert r.status_code == 200, r.text
        finals = {
            rid: rc.wait_ready(rid, timeout=20)["record"] for rid in (queued, ringing, connected)
        }
    assert finals[queued]["result"] == "canceled"
    assert finals[ringing]["result"] == "canceled"
    assert finals[ringing]["disconnect_cause_code"] == "487"
    assert finals[connected]["answered"] is True  # it was answered, then hung up by us
    assert finals[connected]["result"] in ("completed", "canceled")
    assert any(m.startswith("CANCEL ") for m in ring.received())
    assert any(m.startswith("BYE ") for m in answer.received())
    assert answer.invites_per_user() == {"c": 1}


def test_kill9_mid_broadcast_loses_nothing_and_dials_no_one_twice(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    write_tone_wav(tmp_path / "hello.wav", seconds=1.0)
    users = [f"k{i:02d}" for i in range(20)]
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    args = ["--max-calls", "4", "--cps", "8"]
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas:
        first = RingcastServer(tmp_path, db=db, args=args).start()
        try:
            rid = post(
                first,
                {
                    "recipients": [{"to": uas.uri(u)} for u in users],
                    "from": "me",
                    "playlist": [{"pause": 1.5}],
                },
            )
            deadline = time.monotonic() + 30
            while len(uas.invite_times()) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            first.kill9()
        invited_before = sum(uas.invites_per_user().values())
        assert 6 <= invited_before < len(users)
        with RingcastServer(tmp_path, db=db, args=args) as second:
            second.wait_ready(rid, timeout=60)
            records = report(second, rid)
    per_user = uas.invites_per_user()
    assert max(per_user.values()) == 1, per_user  # nobody dialed twice
    assert len(records) == len(users)
    by_user = {r["to"].split(":")[1].split("@")[0]: r for r in records}
    for u in users:
        rec = by_user[u]
        assert rec["result"] in ("completed", "failed"), rec
        if rec["result"] == "failed":
            assert rec["error"] == "interrupted", rec
        else:
            assert rec["answered"] is True and per_user[u] == 1
    interrupted = [u for u in users if by_user[u]["result"] == "failed"]
    assert interrupted, "some calls were in flight at the kill"
    assert len(per_user) >= len(users) - len(interrupted)


class DtmfCallee:
    """The callee's RTP side: receives ringcast's audio and, `after` seconds
    after it starts flowing, presses `digits` as RFC 4733 telephone-events
    (payload type 101) sent back to where the audio came from."""

    def __init__(self, digits: str, after: float = 0.8) -> None:
        self.digits = digits
        self.after = after
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = str(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DtmfCallee:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def _run(self) -> None:
        seq, ts, ssrc = 1000, 8000, 0x1234ABCD
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            if len(data) < 12 or data[1] & 0x7F not in (0, 8):
                continue
            time.sleep(self.after)  # the callee listens to the prompt first
            for digit in self.digits:
                event = "0123456789*#".index(digit)
                for i in range(6):  # 3 updates then 3 end packets, 20 ms apart
                    end = i >= 3
                    duration = 160 * min(i + 1, 4)
                    payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
                    marker = 0x80 if i == 0 else 0
                    header = struct.pack("!BBHII", 0x80, marker | 101, seq, ts, ssrc)
                    self.sock.sendto(header + payload, addr)
                    seq += 1
                    time.sleep(0.02)
                ts += 1600
            return


def test_dnc_suppresses_and_gather_optout_adds_to_dnc(tmp_path: Path, sipp_bin: str) -> None:
    with (
        DtmfCallee("9") as callee,
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": callee.port}) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        r = httpx.post(f"{rc.base}/dnc", json={"entries": ["blocked"]}, timeout=10)
        assert r.status_code == 200, r.text
        rid = post(
            rc,
            {
                "recipients": [{"to": uas.uri("blocked")}, {"to": uas.uri("optme")}],
                "from": "me",
                "playlist": [
                    {"pause": 0.3},
                    {"gather": {"digits": 1, "timeout": 5, "optout": "9"}},
                ],
            },
        )
        rc.wait_ready(rid, timeout=40)
        blocked, opted = report(rc, rid)
        assert (blocked["result"], blocked["outcome"]) == ("completed", "suppressed")
        assert blocked["answered"] is False
        assert opted["answered"] is True
        assert opted["dtmf"] == "9"
        entries = httpx.get(f"{rc.base}/dnc", timeout=10).json()["entries"]
        assert {e["entry"] for e in entries} == {"blocked", "optme"}
        again = post(rc, {"to": uas.uri("optme"), "from": "me", "playlist": [{"pause": 0.2}]})
        assert rc.wait_ready(again, timeout=20)["record"]["outcome"] == "suppressed"
    assert uas.invites_per_user() == {"optme": 1}


def test_sigterm_lets_calls_finish_within_grace(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    db = f"sqlite:///{tmp_path / 'term.db'}"
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas:
        rc = RingcastServer(tmp_path, db=db, args=["--max-calls", "2"]).start()
        rid = pauses_to(rc, uas, "t", 6, pause=2.0)
        deadline = time.monotonic() + 20
        while len(uas.invite_times()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rc.stop(timeout=40) == 0
        with RingcastServer(tmp_path, db=db, args=["--max-calls", "2"]) as again:
            before = [r["result"] for r in report(again, rid)]
            again.wait_ready(rid, timeout=60)
            after = report(again, rid)
    # the two calls in progress at SIGTERM finished normally (answered, not cut)
    assert before.count("completed") >= 2, before
    assert "failed" not in before, before
    assert all(r["answered"] for r in after), after
    assert max(uas.invites_per_user().values()) == 1


def test_sigterm_hangs_up_what_outlasts_the_grace_and_records_it(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    db = f"sqlite:///{tmp_path / 'grace.db'}"
    env = {"RINGCAST_SHUTDOWN_GRACE": "1"}
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as uas:
        rc = RingcastServer(tmp_path, db=db, env=env).start()
        rid = pauses_to(rc, uas, "g", 2, pause=20.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum(m.startswith("ACK ") for m in uas.received()) >= 2:
                break  # both answered and playing
            time.sleep(0.05)
        assert rc.stop(timeout=30) == 0
        with RingcastServer(tmp_path, db=db, env=env) as again:
            records = report(again, rid)
    assert sum(m.startswith("BYE ") for m in uas.received()) == 2  # we hung up
    for rec in records:
        assert (rec["result"], rec["answered"]) == ("completed", True), rec
        assert rec["duration"] < 15 and rec["disconnect_time"], rec  # cut, not played out
        assert rec["error"] == "hung up at shutdown, after the 1 s grace", rec
    assert max(uas.invites_per_user().values()) == 1
