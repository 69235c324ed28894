"""What a callee of `ringcast serve` hears: the article's request with a playlist of
an MP3 (44.1 kHz stereo), a pause, text-to-speech and DTMF, placed by the real
dialer to SIPp, whose SDP answer points RTP at a socket this test owns. The test
decodes the G.711 it receives and compares each part with its source.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from media_stream_lib import RtpSink, decode, encode_audio, make_signal, normalized_xcorr, to_8k
from sipp import SippUas

from e2e.server import MediaServer, RingcastServer


def fresh_synthesis(tmp_path: Path) -> tuple[np.ndarray, int]:
    """SAY spoken by eSpeak NG in a new process, as the server's is: eSpeak keeps
    state across syntheses in one process (earlier tests of this one use it), and
    its output then differs enough to fail the correlation."""
    out = tmp_path / "reference.npy"
    code = (
        "import asyncio, sys, numpy as np\n"
        "from ringcast.media import tts\n"
        f"s = asyncio.run(tts.synthesize_async({SAY['say']!r}, voice={SAY['voice']!r}, "
        f"rate={SAY['rate']!r}))\n"
        f"np.save({str(out)!r}, s.samples)\n"
        "print(s.sample_rate)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    return np.load(out), int(done.stdout.split()[-1])


SCENARIO = Path(__file__).parents[1] / "integration" / "media" / "uas_answer_sink.xml"
MP3 = make_signal(1.5, 44100, channels=2)
SAY = {"say": "Press one to confirm", "voice": "en-us", "rate": 175}
PAUSE = 0.5


@pytest.mark.sipp
async def test_callee_hears_mp3_pause_tts_and_dtmf(sipp_bin: str, tmp_path: Path) -> None:
    (tmp_path / "stereo.mp3").write_bytes(encode_audio(MP3, 44100, "MP3"))
    sink = RtpSink.open()
    uas = SippUas(SCENARIO, tmp_path, keys={"rtp_sink_port": str(sink.port)}, max_calls=1)
    try:
        with uas, MediaServer(tmp_path) as media, RingcastServer(tmp_path) as rc:
            body = {
                "to": uas.uri("alice"),
                "from": "me",
                "playlist": [
                    {"play": media.url("stereo.mp3")},
                    {"pause": PAUSE},
                    SAY,
                    {"dtmf": "1#"},
                ],
            }
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.post(f"{rc.base}/voice/call/play", json=body)
            assert r.status_code == 200, r.text
            status = await rc.wait_ready_async(r.json()["request_id"], 30)
            await asyncio.sleep(0.1)  # the last datagrams cross loopback
        record = status["record"]
        assert record["result"] == "completed" and record["codec"] == "PCMU", record
        payloads = sink.check_stream(audio_pt=0, dtmf_pt=101)
        events = sink.events(101)
    finally:
        sink.close()

    received = decode(payloads, "PCMU")
    mp3_len = int(1.5 * 8000)
    assert normalized_xcorr(received[:mp3_len], to_8k(MP3, 44100)) >= 0.9
    margin = 800  # 0.1 s: the MP3 encoder's delay shifts what follows by ~25 ms
    pause = received[mp3_len + margin : mp3_len + int(PAUSE * 8000) - margin]
    assert pause.size > 0 and np.abs(pause).max() == 0
    samples, rate = fresh_synthesis(tmp_path)
    spoken = received[mp3_len + int(PAUSE * 8000) :]
    assert normalized_xcorr(spoken, to_8k(samples, rate)) >= 0.9
    digits = "".join(
        d for i, (ts, d, _end, _dur) in enumerate(events) if i == 0 or ts != events[i - 1][0]
    )
    assert digits == "1#"
