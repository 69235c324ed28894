"""`ringcast broadcast`, `status` and `report` as real subprocesses against a real
`ringcast serve` dialing SIPp callees on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from e2e.server import RingcastServer
from sipp import SippUas

RINGCAST = str(Path(sys.executable).parent / "ringcast")


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    return subprocess.run(
        [RINGCAST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
    )


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def table_row(text: str, name: str) -> list[str]:
    """The cells of the summary table's row `name` (rich box characters stripped)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{text}")


def test_broadcast_progress_summary_status_and_csv_report(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as answer,
        SippUas("e2e_busy.xml", tmp_path) as busy,
        RingcastServer(tmp_path) as rc,
    ):
        recipients = write_csv(
            tmp_path / "recipients.csv",
            [
                {"to": answer.uri("ann"), "from": "", "name": "Ann"},
                {"to": answer.uri("bob"), "from": "sales", "name": "Bob"},
                {"to": answer.uri("cy"), "from": "", "name": "Cy"},
                {"to": busy.uri("dee"), "from": "", "name": "Dee"},
            ],
        )
        out = cli(
            "broadcast",
            str(recipients),
            "--say",
            "Hello {name}.",
            "--from",
            "ringcast",
            "--url",
            rc.base,
            "--interval",
            "0.3",
        )
        assert out.returncode == 0, out.stderr + rc.output()
        rid = re.search(r"request (\S+) accepted: 4 calls", out.stderr)
        assert rid is not None, out.stderr
        request_id = rid.group(1)
        assert "4/4" in out.stderr  # the progress bar's last state
        assert table_row(out.stdout, "answered")[1:] == ["3", "75%"]
        assert table_row(out.stdout, "busy")[1:] == ["1", "25%"]
        assert table_row(out.stdout, "total")[1:] == ["4", "100%"]
        assert "connected seconds:" in out.stdout

        status = cli("status", request_id, "--url", rc.base)
        assert status.returncode == 0, status.stderr
        ref = json.loads(status.stdout)["report"]
        assert (ref["status"], ref["done"], ref["total"]) == ("ready", 4, 4)
        text = cli("status", request_id, "--text", "--url", rc.base)
        assert text.returncode == 0, text.stderr
        assert "answered 3" in text.stdout and "busy 1" in text.stdout

        by_report = cli("report", ref["id"], "--format", "csv", "--url", rc.base)
        by_request = cli("report", request_id, "--format", "csv", "--url", rc.base)
        assert by_report.returncode == 0 and by_request.returncode == 0, by_request.stderr
        assert by_report.stdout == by_request.stdout
        rows = list(csv.DictReader(io.StringIO(by_report.stdout)))
        assert [r["to"] for r in rows] == [
            answer.uri("ann"),
            answer.uri("bob"),
            answer.uri("cy"),
            busy.uri("dee"),
        ]
        assert [r["from"] for r in rows] == ["ringcast", "sales", "ringcast", "ringcast"]
        assert [r["outcome"] for r in rows] == ["answered"] * 3 + ["busy"]
        assert rows[3]["disconnect_cause_code"] == "486"
    assert answer.invites_per_user() == {"ann": 1, "bob": 1, "cy": 1}


def test_broadcast_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    with RingcastServer(tmp_path) as rc:
        bad = write_csv(
            tmp_path / "bad.csv",
            [{"to": "sip:ann@127.0.0.1:5060", "name": "Ann"}, {"to": "not-a-uri", "name": "X"}],
        )
        out = cli("broadcast", str(bad), "--say", "Hi {name}", "--url", rc.base)
        assert out.returncode == 1
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith("ringcast: error: HTTP 422: recipients[1].to"), lines
        assert out.stdout == ""

        no_to = tmp_path / "no_to.csv"
        no_to.write_text("number,name\n123,Ann\n")
        out = cli("broadcast", str(no_to), "--say", "Hi", "--url", rc.base)
        assert out.returncode != 0
        assert out.stderr.strip() == f"ringcast: error: {no_to}: the header row has no 'to' column"

        out = cli(
            "broadcast", str(bad), "--say", "Hi", "--play", "http://x/a.wav", "--url", rc.base
        )
        assert out.returncode == 2
        assert "exactly one of --play" in out.stderr

        out = cli("report", "no-such-report", "--url", rc.base)
        assert out.returncode == 1
        assert out.stderr.strip().splitlines() == [
            "ringcast: error: HTTP 404: no report 'no-such-report'"
        ]
        # the rejected broadcast queued nothing
        listed = httpx.get(f"{rc.base}/requests", timeout=10).json()
        assert listed["requests"] == []


def test_broadcast_a_csv_of_numbers_through_a_trunk(
    tmp_path: Path, sipp_bin: str, rtp_sink: str
) -> None:
    """A CSV whose `to` column holds numbers (E.164 and national), sent with
    --trunk and --country: SIPp, as the carrier, gets the trunk's Request-URIs."""
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as carrier:
        config = tmp_path / "ringcast.toml"
        config.write_text(f'[trunks.carrier]\nproxy = "sip:{carrier.uri_host}"\n')
        with RingcastServer(tmp_path, args=["--config", str(config)]) as rc:
            recipients = write_csv(
                tmp_path / "numbers.csv",
                [{"to": "+15550100001", "name": "Ann"}, {"to": "(201) 555-0123", "name": "Bob"}],
            )
            out = cli(
                "broadcast",
                str(recipients),
                "--say",
                "Hello {name}.",
                "--from",
                "+15550100099",
                "--trunk",
                "carrier",
                "--country",
                "US",
                "--url",
                rc.base,
                "--interval",
                "0.3",
            )
            assert out.returncode == 0, out.stderr + rc.output()
        uris = sorted(m.split()[1] for m in carrier.received() if m.startswith("INVITE "))
    assert table_row(out.stdout, "answered")[1] == "2", out.stdout
    assert uris == [f"sip:+12015550123@{carrier.uri_host}", f"sip:+15550100001@{carrier.uri_host}"]
