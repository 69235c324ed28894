"""Recording end to end: `ringcast serve` (SQLite and PostgreSQL) calls a SIPp callee
that answers and speaks (eSpeak NG speech in a pcap, RFC 3551 µ-law RTP); the
WAV served by GET /recordings/<id> must correlate with what the callee said
(>= 0.9), stop on the callee's silence, and stop on `#` (in-band Q.23 tones in
its audio, its SDP having no telephone-event) before what it says after it."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from media_stream_lib import normalized_xcorr

from e2e.server import RingcastServer, post
from e2e.test_amd_e2e import RATE, callee, line, silence, speech
from e2e.test_webhooks_e2e import Receiver
from ringcast.media.prompt import dtmf_tone
from ringcast.webhooks.sign import generate_secret

SAID = "My order number is four five six, please call me back tomorrow."
AFTER = "And this part comes after the hash key and must not be recorded."


@contextlib.contextmanager
def serving(tmp_path: Path, db: str, **kwargs: Any) -> Iterator[RingcastServer]:
    """`ringcast serve` on `db`, given time to start on a busy machine; stopped by PID."""
    rc = RingcastServer(tmp_path, db=db, **kwargs)
    try:
        yield rc.start(timeout=120)
    finally:
        rc.stop()


def _wav(rc: RingcastServer, url: str) -> np.ndarray:
    r = httpx.get(rc.base + url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def _cli_get_and_delete(rc: RingcastServer, url: str, out: Path) -> None:
    """`ringcast recordings get ID -o file.wav` writes the bytes GET serves; `delete`
    removes it (a second get fails with exit code 1 and leaves no file)."""
    served = httpx.get(rc.base + url, timeout=30).content
    rid = url.rsplit("/", 1)[-1]
    got = _ringcast("recordings", "get", rid, "-o", str(out), "--url", rc.base)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == served
    gone = _ringcast("recordings", "delete", url, "--url", rc.base)
    assert gone.returncode == 0 and gone.stdout.strip() == "deleted", gone.stderr
    again = _ringcast("recordings", "get", rid, "-o", str(out) + "2", "--url", rc.base)
    assert again.returncode == 1 and "404" in again.stderr, again.stderr
    assert not Path(str(out) + "2").exists()
    assert httpx.get(rc.base + url, timeout=30).status_code == 404


def _ringcast(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "ringcast")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.sipp
def test_recording_stops_on_silence_and_matches_what_was_said(
    sipp_bin: str, tmp_path: Path, db_url: str
) -> None:
    words = speech(SAID)
    audio = line(np.concatenate([silence(0.8), words, silence(8.0)]))
    secret = generate_secret()
    playlist = [
        {"record": {"max": 30, "silence": 2, "finish_on": "#", "beep": True}},
        {"say": "Thank you."},
    ]
    env = {"RINGCAST_WEBHOOK_SECRET": secret}
    with (
        Receiver(lambda: secret) as rx,
        serving(tmp_path, db_url, env=env) as rc,
        callee(tmp_path, audio, telephone_event=True) as uas,
    ):
        request_id = post(
            rc, {"to": uas.uri("rec"), "playlist": playlist, "callback_url": rx.url()}
        )
        record = rc.wait_ready(request_id, 180)["record"]
        assert record["answered"] is True, (record, rc.output())
        (entry,) = record["recordings"]
        got = _wav(rc, entry["url"])
        (event,) = rx.wait_for("call.recorded")
        _cli_get_and_delete(rc, entry["url"], tmp_path / "out.wav")
    assert event["payload"]["data"]["recordings"] == record["recordings"]
    said_s = words.size / RATE
    # the speech and up to `silence` of what came before it; the 2 s that ended it cut
    assert said_s - 0.2 <= entry["duration"] <= said_s + 1.2, (entry, said_s)
    assert got.size / RATE == pytest.approx(entry["duration"], abs=0.02)
    assert normalized_xcorr(got / 32768, words) >= 0.9
    # the call went on after the recording (the "Thank you."), well before the 8 s ran out
    assert int(record["duration"]) < (audio.size / RATE) - 3


@pytest.mark.sipp
def test_recording_stops_on_the_finish_on_digit(sipp_bin: str, tmp_path: Path, db_url: str) -> None:
    words, after = speech(SAID), speech(AFTER)
    audio = line(
        np.concatenate(
            [silence(0.8), words, silence(0.3), dtmf_tone("#", 0.12), silence(0.3), after]
            + [silence(6.0)]
        )
    )
    playlist = [{"record": {"max": 30, "silence": 0, "finish_on": "#", "beep": False}}]
    with serving(tmp_path, db_url) as rc, callee(tmp_path, audio, telephone_event=False) as uas:
        request_id = post(rc, {"to": uas.uri("rec"), "playlist": playlist})
        record = rc.wait_ready(request_id, 180)["record"]
        (entry,) = record["recordings"]
        got = _wav(rc, entry["url"])
    assert record["dtmf"] == "#", (record, rc.output())
    said_s = words.size / RATE
    assert said_s <= entry["duration"] <= said_s + 1.8, (entry, said_s)  # not AFTER (~4 s)
    assert normalized_xcorr(got / 32768, words) >= 0.9
    assert normalized_xcorr(got / 32768, after) < 0.5  # what came after `#` is not there
