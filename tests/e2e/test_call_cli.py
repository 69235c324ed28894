"""`ringcast call`: one call from the terminal to a real SIPp callee."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from conftest import free_port
from media_stream_lib import decode, normalized_xcorr, to_8k
from sipp import SippUas

from e2e.server import MediaServer, write_tone_wav
from ringcast.rtp.packet import parse_rtp


def run_call(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "ringcast")
    lo = 20000 + (free_port() % 300) * 20
    env = {**os.environ, "RINGCAST_ALLOW_PRIVATE_URLS": "1"}
    return subprocess.run(
        [exe, "call", *args, "--sip", f"127.0.0.1:{free_port()}", "--rtp-ports", f"{lo}-{lo + 9}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_call_says_text_and_prints_the_record(tmp_path: Path, sipp_bin: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(5)
        with SippUas(
            "uas_answer.xml", tmp_path, keys={"rtp_port": str(sink.getsockname()[1])}
        ) as uas:
            done = run_call(
                uas.uri("alice"), "--say", "Hello from ringcast", "--from", "me", cwd=tmp_path
            )
            first_rtp = sink.recv(2048)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["to"] == uas.uri("alice")
    assert record["from"] == "me"
    assert (record["result"], record["answered"]) == ("completed", True)
    assert record["disconnect_cause_code"] == "200"
    assert record["duration"] >= 1  # the spoken sentence lasts over a second
    assert first_rtp[0] >> 6 == 2  # RTP version 2 reached the callee's media port
    assert uas.invites_per_user() == {"alice": 1}


def test_call_plays_a_url_the_callee_hears(tmp_path: Path, sipp_bin: str) -> None:
    source = write_tone_wav(tmp_path / "tone.wav", seconds=1.0, rate=16000)
    packets: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(0.5)
        stop = threading.Event()

        def receive() -> None:
            while not stop.is_set():
                try:
                    packets.append(sink.recv(2048))
                except TimeoutError:
                    continue

        reader = threading.Thread(target=receive)
        reader.start()
        try:
            with (
                MediaServer(tmp_path) as media,
                SippUas(
                    "uas_answer.xml", tmp_path, keys={"rtp_port": str(sink.getsockname()[1])}
                ) as uas,
            ):
                done = run_call(uas.uri("dave"), "--play", media.url("tone.wav"), cwd=tmp_path)
        finally:
            stop.set()
            reader.join()
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["result"], record["answered"], record["codec"]) == ("completed", True, "PCMU")
    audio = [parse_rtp(p) for p in packets]
    payloads = [p.payload for p in sorted(audio, key=lambda p: p.seq) if p.payload_type == 0]
    assert len(payloads) == 50  # 1 s in 20 ms packets
    assert normalized_xcorr(decode(payloads, "PCMU"), to_8k(source, 16000)) >= 0.9


def test_call_to_a_busy_callee_reports_486(tmp_path: Path, sipp_bin: str) -> None:
    with SippUas("e2e_busy.xml", tmp_path) as uas:
        done = run_call(uas.uri("bob"), "--say", "Hi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["result"], record["outcome"], record["answered"]) == ("completed", "busy", False)
    assert record["disconnect_cause_code"] == "486"


def test_call_to_nobody_fails_with_an_error(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here: ICMP port unreachable, or Timer B
    exe = str(Path(sys.executable).parent / "ringcast")
    env = {**os.environ, "RINGCAST_SIP_T1": "0.05"}
    proc = subprocess.run(
        [
            exe,
            "call",
            f"sip:carol@127.0.0.1:{dead}",
            "--say",
            "Hi",
            "--sip",
            f"127.0.0.1:{free_port()}",
            "--ring-timeout",
            "3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    assert record["result"] == "failed"
    assert record["disconnect_cause_code"] in ("408", "503")
    assert record["error"]


def test_call_a_number_through_a_trunk(tmp_path: Path, sipp_bin: str, rtp_sink: str) -> None:
    """`ringcast call +1... --trunk`: the trunk's rules make the Request-URI SIPp gets."""
    with SippUas("uas_answer.xml", tmp_path, keys={"rtp_port": rtp_sink}) as carrier:
        config = tmp_path / "ringcast.toml"
        config.write_text(
            f'[trunks.carrier]\nproxy = "sip:{carrier.uri_host}"\nstrip = "+"\nprefix = "00"\n'
        )
        done = run_call(
            "(201) 555-0123",
            "--trunk",
            "carrier",
            "--country",
            "US",
            "--say",
            "Hi",
            "--config",
            str(config),
            cwd=tmp_path,
        )
        invites = [m for m in carrier.received() if m.startswith("INVITE ")]
        unknown = run_call("+15550100001", "--trunk", "nope", "--say", "Hi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["to"], record["result"]) == ("(201) 555-0123", "completed"), record
    assert [m.split()[1] for m in invites] == [f"sip:0012015550123@{carrier.uri_host}"]
    assert unknown.returncode != 0
    assert "--trunk nope: no [trunks.nope] table" in unknown.stderr
