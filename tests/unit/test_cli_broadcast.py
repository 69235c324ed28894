"""`ringcast broadcast`'s pure parts: CSV -> recipients, error lines, summaries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ringcast.cli import app
from ringcast.client import (
    CsvError,
    Summary,
    build_request,
    counts_text,
    error_line,
    read_recipients,
)


def write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "r.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_columns_become_recipient_fields_and_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffto, from ,name,slot,timezone\r\n"
        "sip:a@h,,Ann,9:00,\r\n"
        "\r\n"
        "sip:b@h,sales,Bob,,Europe/Riga\r\n",
    )
    assert read_recipients(path) == [
        {"to": "sip:a@h", "variables": {"name": "Ann", "slot": "9:00"}},
        {
            "to": "sip:b@h",
            "from": "sales",
            "timezone": "Europe/Riga",
            "variables": {"name": "Bob"},
        },
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("number,name\n1,a\n", "the header row has no 'to' column"),
        ("to,name\n", "no recipients"),
        ("", "the header row has no 'to' column"),
        ("to\nsip:a@h,extra\n", ":2: more fields than the header has"),
    ],
)
def test_unusable_files_are_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CsvError) as info:
        read_recipients(write(tmp_path, text))
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="No such file"):
        read_recipients(tmp_path / "nope.csv")
    with pytest.raises(CsvError, match="not UTF-8"):
        read_recipients(write(tmp_path, "to\n\xff\xfe", encoding="latin-1"))


def test_request_body() -> None:
    body = build_request([{"to": "sip:a@h"}], play=None, say="Hi {name}", from_="me")
    assert body == {
        "recipients": [{"to": "sip:a@h"}],
        "playlist": [{"say": "Hi {name}"}],
        "from": "me",
    }
    assert "from" not in build_request([], play="http://x/a.wav", say=None, from_=None)


def test_error_line_uses_the_envelope_message() -> None:
    envelope = {"code": 1001, "status": 422, "data": "error", "error": {"message": "to: bad\nx"}}
    assert error_line(httpx.Response(422, json=envelope)) == "HTTP 422: to: bad x"
    assert error_line(httpx.Response(502, text="<html>\nBad gateway")) == "HTTP 502: <html>"
    assert error_line(httpx.Response(503)) == "HTTP 503: Service Unavailable"


def test_summary_and_counts() -> None:
    summary = Summary()
    for record in (
        {"outcome": "busy"},
        {"outcome": "answered", "answered": True, "duration": 7},
        {"outcome": "answered", "answered": True, "duration": 3},
        {"result": "failed"},
        {"outcome": "weird"},
    ):
        summary.add(record)
    assert summary.rows() == [("answered", 2), ("busy", 1), ("failed", 1), ("weird", 1)]
    assert (summary.total, summary.connected_seconds) == (5, 10)
    assert counts_text({"queued": 2, "answered": 1, "in-progress": 0}) == "answered 1 · queued 2"
    assert counts_text({}) == "queued"


def test_play_or_say_exactly_one(tmp_path: Path) -> None:
    path = write(tmp_path, "to\nsip:a@h\n")
    runner = CliRunner()
    for args in ([], ["--play", "http://x/a.wav", "--say", "hi"]):
        out = runner.invoke(app, ["broadcast", str(path), *args])
        assert out.exit_code == 2 and "exactly one of --play" in out.stderr


def test_numbers_go_through_a_trunk_in_a_country() -> None:
    body = build_request(
        [{"to": "(201) 555-0123"}], play=None, say="Hi", from_=None, trunk="carrier", country="US"
    )
    assert (body["sip"], body["country"]) == ({"trunk": "carrier"}, "US")
    assert "sip" not in build_request([], play=None, say="Hi", from_=None)
