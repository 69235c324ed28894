"""Opt-out and barge-in against SIPp: the callee presses a key while the prompt plays.

SIPp answers and, 800 ms after the ACK, replays an RFC 4733 digit from a pcap
(tests/data/media/rfc4733_*.pcap, written by tests/rtp_pcap.py) with
`play_pcap_audio`, to the media address of ringcast's SDP offer. The prompt
is about ten seconds of speech followed by a gather waiting 60 s: a record
that ends after a few seconds shows both the prompt and the gather were cut.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from rtp_pcap import pcap_path, rfc4733_pcap
from sipp import SippUas

from e2e.server import RingcastServer, post

PROMPT_SECONDS = 9  # the speech below lasts longer than this (three loops of 3.8 s)
SPEECH = {"say": "Press 9 to stop receiving these calls, or 1 to hear more.", "loop": 3}
pytestmark = pytest.mark.sipp


def _callee(tmp_path: Path, digit: str) -> SippUas:
    shutil.copyfile(pcap_path(digit), tmp_path / "dtmf.pcap")
    return SippUas("uas_rfc4733_dtmf.xml", tmp_path, extra=["-mp", str(free_port())])


def _record(rc: RingcastServer, request_id: str) -> dict[str, Any]:
    record: dict[str, Any] = rc.wait_ready(request_id, timeout=45)["record"]
    return record


def test_the_pcaps_are_what_the_generator_writes() -> None:
    for digit in "19":
        assert pcap_path(digit).read_bytes() == rfc4733_pcap(digit)


def test_optout_key_during_the_prompt_opts_out_at_once(tmp_path: Path, sipp_bin: str) -> None:
    with _callee(tmp_path, "9") as uas, RingcastServer(tmp_path) as rc:
        rid = post(
            rc,
            {
                "to": uas.uri("optme"),
                "playlist": [SPEECH, {"gather": {"digits": 1, "timeout": 60, "optout": "9"}}],
                "max_duration": 120,
            },
        )
        record = _record(rc, rid)
        assert (record["outcome"], record["dtmf"]) == ("answered", "9"), record
        assert record["duration"] < PROMPT_SECONDS  # the prompt and the gather were cut
        entries = httpx.get(f"{rc.base}/dnc", timeout=10).json()["entries"]
        assert [e["entry"] for e in entries] == ["optme"]
        # the same user at another address (another port here) is not called again
        other = uas.uri("optme").replace(f":{uas.port}", f":{free_port()}")
        again = post(rc, {"to": other, "playlist": [{"pause": 0.2}]})
        assert _record(rc, again)["outcome"] == "suppressed"
    assert uas.invites_per_user() == {"optme": 1}, uas.errors()


def test_a_digit_during_the_prompt_answers_the_gather(tmp_path: Path, sipp_bin: str) -> None:
    with _callee(tmp_path, "1") as uas, RingcastServer(tmp_path) as rc:
        rid = post(
            rc,
            {
                "to": uas.uri("hurry"),
                "playlist": [
                    SPEECH,
                    {"gather": {"digits": 1, "timeout": 60, "optout": "9"}},
                    {"say": "Thank you."},
                ],
                "max_duration": 120,
            },
        )
        record = _record(rc, rid)
        assert (record["outcome"], record["dtmf"]) == ("answered", "1"), record
        assert record["duration"] < PROMPT_SECONDS
        assert httpx.get(f"{rc.base}/dnc", timeout=10).json()["entries"] == []
