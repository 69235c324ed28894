"""SDES-SRTP calls (RFC 4568 keys, RFC 3711 media) against real peers (issue 15 part 4).

baresip with its `srtp` module is the callee: `mediaenc=srtp-mand` answers only
RTP/SAVP with a key, `mediaenc=srtp` is best effort. It records what it
hears (its `sndfile` module, after SRTP is opened and G.711 decoded); the
test correlates that with the prompt. SIPp's stock answer carries no
`a=crypto`: with `"srtp": "required"` that call fails (ACK, BYE, a clear
error). No key ringcast sent or received may appear in its log (at debug
level), its record or its metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from media_stream_lib import normalized_xcorr
from peers import Baresip
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer, post
from e2e.test_dashboard import CHROMIUM_ARGS, UI_TIMEOUT_MS, chromium_path  # noqa: F401
from e2e.test_real_peers import run_call

RATE = 8000
INLINE = re.compile(r"^a=crypto:(\d+) (\S+) inline:([^\s|]+)", re.M)


def write_prompt(path: Path) -> np.ndarray:
    """1.5 s of a gliding tone (no two 20 ms frames alike), then 0.4 s of silence."""
    t = np.arange(int(1.5 * RATE)) / RATE
    glide = 0.3 * np.sin(2 * np.pi * (300 * t + 400 * t * t))
    audio = np.concatenate([glide, np.zeros(int(0.4 * RATE))])
    sf.write(path, audio, RATE, subtype="PCM_16")
    return audio


def sdp_of(callee: Baresip, start: str) -> str:
    found = [
        text for _, _, _, text in callee.messages() if text.startswith(start) and "m=audio" in text
    ]
    assert found, callee.output()[-3000:]
    return found[0]


@pytest.mark.baresip
async def test_baresip_srtp_mand_hears_the_prompt(tmp_path: Path, baresip_bin: str) -> None:
    source = write_prompt(tmp_path / "prompt.wav")
    with (
        MediaServer(tmp_path) as media,
        Baresip(tmp_path, mediaenc="srtp-mand") as callee,
        RingcastServer(tmp_path, env={"RINGCAST_LOG_LEVEL": "debug"}) as rc,
    ):
        body = {
            "to": callee.uri(),
            "playlist": [{"play": media.url("prompt.wav")}],
            "sip": {"srtp": "required"},
        }
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{rc.base}/voice/call/play", json=body)
            assert r.status_code == 200, r.text
            status = await rc.wait_ready_async(r.json()["request_id"], 60)
            metrics = (await client.get(f"{rc.base}/metrics")).text
        record = status["record"]
        heard, rate = callee.heard()
        server_log = rc.output()
    assert (record["result"], record["answered"], record["codec"]) == (
        "completed",
        True,
        "PCMU",
    ), record
    invite = sdp_of(callee, "INVITE ")
    answer = sdp_of(callee, "SIP/2.0 200")
    assert "m=audio " in invite and " RTP/SAVP 0 8 101" in invite, invite
    offered = INLINE.findall(invite)
    assert [suite for _, suite, _ in offered] == [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AEAD_AES_256_GCM",
    ]
    answered = INLINE.findall(answer)
    assert len(answered) == 1 and "RTP/SAVP" in answer, answer
    assert record["srtp"] == answered[0][1]
    assert rate == RATE
    assert normalized_xcorr(heard, source) >= 0.9
    # keys: in the peer's trace, never in ringcast's log, record or metrics
    keys = [key for _, _, key in offered + answered]
    exposed = server_log + str(status) + metrics
    assert all(key not in exposed for key in keys)
    assert re.search(r"^ringcast_srtp_streams_total 1\.0$", metrics, re.M), metrics
    # baresip (libre) sends its RTCP BYE in the clear as it tears the stream down: that
    # one packet may fail SRTCP authentication, correctly; nothing else may
    failures = re.findall(r"^ringcast_srtp_auth_failures_total (\d+)\.0$", metrics, re.M)
    logged = [line for line in server_log.splitlines() if "failed authentication" in line]
    assert failures in (["0"], ["1"]), metrics
    if failures == ["1"]:
        assert len(logged) == 1 and re.search(r"SRTCP .* header 8[01]cb", logged[0]), logged


@pytest.mark.sipp
async def test_required_fails_a_callee_answering_without_crypto(
    tmp_path: Path, sipp_bin: str
) -> None:
    with (
        SippUas("uas_answer.xml", tmp_path, max_calls=1) as uas,
        RingcastServer(tmp_path) as rc,
    ):
        body = {
            "to": uas.uri(),
            "playlist": [{"pause": 1}],
            "sip": {"srtp": "required"},
        }
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{rc.base}/voice/call/play", json=body)
        assert r.status_code == 200, r.text
        record = (await rc.wait_ready_async(r.json()["request_id"], 30))["record"]
        assert uas.wait(10) == 0, uas.errors()
        received = uas.received()
    assert (record["result"], record["outcome"], record["answered"]) == (
        "failed",
        "failed",
        False,
    ), record
    assert record["error"] == (
        "SDP answer has no a=crypto: the callee does not do SRTP (srtp is required)"
    )
    assert "srtp" not in record
    assert [m.split(" ", 1)[0] for m in received] == ["INVITE", "ACK", "BYE"], received
    assert " RTP/SAVP " in received[0] and received[0].count("a=crypto:") == 3


@pytest.mark.baresip
@pytest.mark.parametrize("mediaenc", [None, "srtp"])
def test_optional_is_srtp_when_the_callee_can_plain_when_not(
    tmp_path: Path, baresip_bin: str, mediaenc: str | None
) -> None:
    source = write_prompt(tmp_path / "prompt.wav")
    with MediaServer(tmp_path) as media, Baresip(tmp_path, mediaenc=mediaenc) as callee:
        record = run_call(
            callee.uri(), "--play", media.url("prompt.wav"), "--srtp", "optional", cwd=tmp_path
        )
        heard, _ = callee.heard()
    assert (record["result"], record["answered"]) == ("completed", True), record
    invite = sdp_of(callee, "INVITE ")
    assert " RTP/AVP 0 8 101" in invite and invite.count("a=crypto:") == 3, invite
    if mediaenc is None:
        assert "srtp" not in record
    else:
        assert record["srtp"] == INLINE.findall(sdp_of(callee, "SIP/2.0 200"))[0][1]
    assert normalized_xcorr(heard, source) >= 0.9


@pytest.mark.baresip
def test_dashboard_marks_an_srtp_call(
    tmp_path: Path,
    baresip_bin: str,
    chromium_path: str,  # noqa: F811 - the fixture imported from test_dashboard
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with (
        Baresip(tmp_path, mediaenc="srtp-mand") as callee,
        RingcastServer(tmp_path) as rc,
        sync_playwright() as pw,
    ):
        plain = post(rc, {"to": callee.uri(), "playlist": [{"pause": 0.3}]})
        secure = post(
            rc,
            {"to": callee.uri(), "playlist": [{"pause": 0.3}], "sip": {"srtp": "required"}},
        )
        record = rc.wait_ready(secure, timeout=40)["record"]
        refused = rc.wait_ready(plain, timeout=40)["record"]  # srtp-mand refuses plain RTP
        assert record["srtp"] == "AES_CM_128_HMAC_SHA1_80", record
        assert "srtp" not in refused
        browser = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(rc.base + "/", wait_until="domcontentloaded")
            page.locator(f'#requests tr[data-request-id="{secure}"]').click()
            marker = page.locator("#calls tbody span.srtp")
            expect(marker).to_have_attribute("data-srtp", record["srtp"], timeout=UI_TIMEOUT_MS)
            expect(marker).to_have_text(" SRTP")
            page.locator(f'#requests tr[data-request-id="{plain}"]').click()
            expect(page.locator("#calls tbody tr")).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(page.locator("#calls tbody span.srtp")).to_have_count(0)
        finally:
            browser.close()
