"""Calls to SIP implementations other than SIPp: baresip as the callee, Kamailio as
the proxy in between (issue 14, "Real bytes").

baresip answers at once and records what it hears (its `sndfile` module writes
the decoded audio to a WAV); the test decodes that file and compares it with
the tone sequence ringcast played. Kamailio challenges the INVITE with digest
(qop=auth, a static password) and Record-Routes; its script logs every request
with the Route it carried, so the test sees the ACK and BYE take the route set,
over UDP and over TCP. Every peer listens on and advertises 127.0.0.1 only.

The last two tests are calls whose BYE is never answered (a SIPp scenario that
ignores it; SIPp's stock UAS behind Kamailio, whose 200 goes to the proxy):
the record's duration must be the call's, not the call's plus Timer F. They
fail until src/ringcast/sip/call.py ends the session when the BYE is sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import free_port
from media_stream_lib import normalized_xcorr
from peers import Baresip, Kamailio
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer

RATE = 8000
TONES = (440.0, 660.0, 880.0, 1100.0, 1320.0)  # Hz, 0.3 s each, in this order
TONE_SECONDS = 0.3
TAIL_SECONDS = 0.4  # silence after the tones: the callee's jitter buffer keeps ~0.1 s


def write_tones(path: Path) -> np.ndarray:
    """A WAV of TONES one after another, then silence; returns its samples."""
    n = int(TONE_SECONDS * RATE)
    t = np.arange(n) / RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
    parts = [0.3 * ramp * np.sin(2 * np.pi * f * t) for f in TONES]
    audio = np.concatenate([*parts, np.zeros(int(TAIL_SECONDS * RATE))])
    sf.write(path, audio, RATE, subtype="PCM_16")
    return audio


def lag_of(received: np.ndarray, reference: np.ndarray) -> int:
    """Where `reference` starts in `received` (samples; FFT cross-correlation)."""
    size = 1 << (received.size + reference.size - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(corr))
    return lag - size if lag >= size - reference.size else lag


def tone_sequence(heard: np.ndarray, source: np.ndarray) -> list[float]:
    """The dominant frequency of each tone slot in `heard`, aligned on `source`."""
    start = lag_of(heard, source)
    n = int(TONE_SECONDS * RATE)
    found = []
    for i in range(len(TONES)):
        lo = start + i * n + n // 10
        segment = heard[max(0, lo) : start + (i + 1) * n - n // 10]
        if segment.size < n // 2:
            break
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size)))
        found.append(float(np.fft.rfftfreq(segment.size, 1 / RATE)[int(np.argmax(spectrum))]))
    return found


def assert_heard_intact(callee: Baresip, source: np.ndarray) -> None:
    heard, rate = callee.heard()
    assert rate == RATE, rate
    tones = int(len(TONES) * TONE_SECONDS * RATE)
    assert heard.size >= tones, f"callee recorded {heard.size} samples, the tones are {tones}"
    assert normalized_xcorr(heard, source) >= 0.95
    found = tone_sequence(heard, source)
    assert len(found) == len(TONES), found
    for want, got in zip(TONES, found, strict=True):
        assert abs(got - want) <= 15, (TONES, found)


def assert_loopback_only(callee: Baresip) -> None:
    """Every address baresip advertised (SDP, Contact, Via, any IPv4 literal in
    what it sent) is 127.0.0.1, and 127.0.0.1 is the only local address it took."""
    sent = callee.sent()
    answers = [m for m in sent if m.startswith("SIP/2.0 200") and "application/sdp" in m]
    assert answers, callee.output()[-3000:]
    for msg in answers:
        addrs = re.findall(r"^(?:c=IN IP4|o=.* IN IP4) (\S+)$", msg, flags=re.M)
        assert len(addrs) >= 2 and set(addrs) == {"127.0.0.1"}, msg
    for msg in sent:
        hosts = re.findall(r"^(?:Contact|m)\s*:.*?<sips?:(?:[^@>]*@)?([^:;>]+)", msg, re.M | re.I)
        assert set(hosts) <= {"127.0.0.1"}, msg
        assert set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", msg)) == {"127.0.0.1"}, msg
    local = re.findall(r"^Local network address:(.*)$", callee.output(), re.M)
    assert local and all(line.split() == ["IPv4=lo|127.0.0.1"] for line in local), local


def run_call(
    *args: str, cwd: Path, env: dict[str, str] | None = None, sip_host: str = "127.0.0.1"
) -> dict[str, object]:
    """`ringcast call ...` on 127.0.0.1 (or `sip_host`, e.g. ::1); returns the record it prints."""
    exe = str(Path(sys.executable).parent / "ringcast")
    lo = 20000 + (free_port() % 300) * 20
    sip = f"[{sip_host}]" if ":" in sip_host else sip_host
    done = subprocess.run(
        [exe, "call", *args, "--sip", f"{sip}:{free_port()}", "--rtp-ports", f"{lo}-{lo + 9}"],
        cwd=cwd,
        env={**os.environ, "RINGCAST_ALLOW_PRIVATE_URLS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.stdout.startswith("{"), done.stderr[-3000:]
    record: dict[str, object] = json.loads(done.stdout)
    return record


@pytest.mark.baresip
def test_baresip_hears_the_tones_ringcast_plays(tmp_path: Path, baresip_bin: str) -> None:
    source = write_tones(tmp_path / "tones.wav")
    with MediaServer(tmp_path) as media, Baresip(tmp_path) as callee:
        record = run_call(callee.uri(), "--play", media.url("tones.wav"), cwd=tmp_path)
        assert (record["result"], record["answered"], record["codec"]) == (
            "completed",
            True,
            "PCMU",
        ), record
        assert record["disconnect_cause_code"] == "200"
        assert_heard_intact(callee, source)
    assert_loopback_only(callee)


@pytest.mark.baresip
def test_baresip_on_ipv6_only_hears_the_tones(tmp_path: Path, baresip_bin: str) -> None:
    """IPv6 with a real non-SIPp peer (issue 15 part 5): baresip listens on ::1 only
    (`net_af ipv6`); `ringcast call --sip [::1]:P` reaches it, both SDPs say
    `c=IN IP6 ::1`, and what baresip heard is the prompt (correlated as on IPv4)."""
    source = write_tones(tmp_path / "tones.wav")
    with MediaServer(tmp_path) as media, Baresip(tmp_path, host="::1") as callee:
        record = run_call(
            callee.uri(), "--play", media.url("tones.wav"), cwd=tmp_path, sip_host="::1"
        )
        assert (record["result"], record["answered"], record["codec"]) == (
            "completed",
            True,
            "PCMU",
        ), record
        assert record["to"] == callee.uri(), record
        assert_heard_intact(callee, source)
    messages = callee.messages()
    invites = [text for _, _, _, text in messages if text.startswith("INVITE ")]
    answers = [m for m in callee.sent() if m.startswith("SIP/2.0 200") and "application/sdp" in m]
    assert invites and answers, callee.output()[-3000:]
    assert all(src.startswith("[::1]:") and dst.startswith("[::1]:") for _, src, dst, _ in messages)
    for msg in invites + answers:  # our offer and baresip's answer: IPv6 media only
        assert re.findall(r"^c=IN (IP[46]) (\S+)$", msg, flags=re.M) == [("IP6", "::1")], msg
    local = re.findall(r"^Local network address:(.*)$", callee.output(), re.M)
    assert local and all("IPv4" not in line and "::1" in line for line in local), local


@pytest.mark.baresip
@pytest.mark.kamailio
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_through_kamailio_with_digest_and_record_route(
    tmp_path: Path, baresip_bin: str, kamailio_bin: str, transport: str
) -> None:
    source = write_tones(tmp_path / "tones.wav")
    with (
        MediaServer(tmp_path) as media,
        Baresip(tmp_path) as callee,
        Kamailio(tmp_path) as proxy,
        RingcastServer(tmp_path) as rc,
    ):
        body = {
            "to": callee.uri(transport),
            "from": "shop",
            "playlist": [{"play": media.url("tones.wav")}],
            "sip": {
                "proxy": proxy.uri(),
                "transport": transport,
                "username": proxy.username,
                "password": proxy.password,
            },
        }
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{rc.base}/voice/call/play", json=body)
        assert r.status_code == 200, r.text
        status = await rc.wait_ready_async(r.json()["request_id"], 60)
        record = status["record"]
        assert (record["result"], record["answered"], record["codec"]) == (
            "completed",
            True,
            "PCMU",
        ), record
        assert_heard_intact(callee, source)
        server_log = rc.output()
    assert proxy.password not in json.dumps(status) + server_log

    assert proxy.listening() == {("udp", "127.0.0.1"), ("tcp", "127.0.0.1")}
    events = proxy.events()
    kinds = [kind for kind, _ in events]
    # The first INVITE is challenged; the second carries credentials Kamailio accepts.
    assert kinds.count("challenge") == 1 and kinds.count("authorized") == 1, events
    assert kinds.index("challenge") < kinds.index("authorized")
    assert "unrouted" not in kinds, events
    routed = {fields["method"]: fields for kind, fields in events if kind == "routed"}
    incoming = [f for kind, f in events if kind == "in" and f["method"] in ("ACK", "BYE")]
    # ringcast's 2xx ACK and BYE reach the proxy with the Route it Record-Routed
    # (lr, its own address and transport, the ftag it added), and are relayed.
    assert [f["method"] for f in incoming] == ["ACK", "BYE"], events
    for f in incoming:
        assert f["proto"] == transport
        route = f["route"]
        assert route.startswith(f"<sip:127.0.0.1:{proxy.port};") and ";lr" in route, f
        assert (";transport=tcp" in route) == (transport == "tcp"), f
        assert f["method"] in routed
    # ... and the callee got them from the proxy (its Via on top), never straight.
    for method in ("ACK", "BYE"):
        got = [
            text
            for _, src, dst, text in callee.messages()
            if dst.endswith(f":{callee.port}") and text.startswith(f"{method} ")
        ]
        assert got, callee.output()[-3000:]
        for text in got:
            top_via = re.search(r"^(?:Via|v)\s*:\s*(.*)$", text, re.M | re.I)
            assert top_via is not None
            assert f"127.0.0.1:{proxy.port}" in top_via.group(1), text
            assert transport.upper() in top_via.group(1).upper()
    assert_loopback_only(callee)


@pytest.mark.sipp
def test_unanswered_bye_bills_the_call_not_the_bye_timeout(tmp_path: Path, sipp_bin: str) -> None:
    """The callee answers, then never answers ringcast's BYE (issue 14: "an
    unanswered BYE bills 32 s"). RFC 3261 §15.1.1: the session ends when the BYE
    is handed to its transaction, so the record's duration is the prompt's
    length, not that plus Timer F (64*T1: 6.4 s with the T1 of 100 ms used
    here, 32 s with the default 500 ms), and the BYE's 408 is the record's error."""
    source = write_tones(tmp_path / "tones.wav")
    prompt = source.size / RATE  # 1.9 s
    with MediaServer(tmp_path) as media, SippUas("uas_bye_unanswered.xml", tmp_path) as uas:
        record = run_call(
            uas.uri("alice"),
            "--play",
            media.url("tones.wav"),
            cwd=tmp_path,
            env={"RINGCAST_SIP_T1": "0.1"},
        )
        byes = uas.requests_per_call("BYE")
    assert (record["result"], record["answered"]) == ("completed", True), record
    assert list(byes.values()) and min(byes.values()) >= 2, byes  # the BYE was retransmitted
    duration = record["duration"]
    assert isinstance(duration, int)
    assert abs(duration - prompt) <= 1.5, (
        f"duration {duration} s for a {prompt:.1f} s call: the BYE's timeout was billed ({record})"
    )
    assert "408" in str(record.get("error")), record


def dump_stock_uas(sipp: str, path: Path) -> Path:
    """SIPp's built-in `uas` scenario (`sipp -sn uas`), as a file."""
    dumped = subprocess.run([sipp, "-sd", "uas"], capture_output=True, text=True, timeout=10)
    assert "<scenario" in dumped.stdout, dumped.stderr  # sipp -sd exits 99 after dumping
    path.write_text(dumped.stdout)
    return path


@pytest.mark.sipp
@pytest.mark.kamailio
async def test_unanswered_bye_behind_kamailio_with_sipps_stock_uas(
    tmp_path: Path, sipp_bin: str, kamailio_bin: str
) -> None:
    """The issue's own sighting: ringcast → Kamailio → SIPp's built-in `uas`
    scenario (`sipp -sd uas`). That UAS does not copy the Record-Route into its
    200, so the dialog has no route set and ringcast's BYE goes straight to its
    Contact (RFC 3261 §12.1.2), as it should; but SIPp sends its 200 to the
    address the INVITE came from, the proxy, which knows no such transaction.
    ringcast never hears the 200: the record must still bill the call, not the
    BYE's Timer F, and carry the 408."""
    stock = await asyncio.to_thread(dump_stock_uas, sipp_bin, tmp_path / "stock_uas.xml")
    source = write_tones(tmp_path / "tones.wav")
    prompt = source.size / RATE
    with (
        MediaServer(tmp_path) as media,
        SippUas(stock, tmp_path) as uas,
        Kamailio(tmp_path) as proxy,
        RingcastServer(tmp_path, env={"RINGCAST_SIP_T1": "0.1"}) as rc,
    ):
        body = {
            "to": uas.uri("alice"),
            "playlist": [{"play": media.url("tones.wav")}],
            "sip": {
                "proxy": proxy.uri(),
                "username": proxy.username,
                "password": proxy.password,
            },
        }
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{rc.base}/voice/call/play", json=body)
        assert r.status_code == 200, r.text
        record = (await rc.wait_ready_async(r.json()["request_id"], 60))["record"]
        byes = uas.requests_per_call("BYE")
    kinds = [kind for kind, _ in proxy.events()]
    assert kinds.count("authorized") == 1 and "routed" not in kinds  # no route set: BYE direct
    assert list(byes.values()) and min(byes.values()) >= 2, byes  # its 200 never came back
    assert (record["result"], record["answered"]) == ("completed", True), record
    assert abs(record["duration"] - prompt) <= 1.5, (
        f"duration {record['duration']} s for a {prompt:.1f} s call: the BYE's timeout was "
        f"billed ({record})"
    )
    assert "408" in str(record.get("error")), record
