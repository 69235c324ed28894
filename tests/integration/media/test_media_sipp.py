"""Real signalling: ringcast's SIP engine calls a SIPp callee whose SDP answer points
RTP at a socket the test owns; the audio that arrives there is checked.

The media port is bound (MediaSession.open) before the INVITE, so the offer names it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from media_stream_lib import (
    MediaServer,
    Route,
    RtpSink,
    decode,
    encode_audio,
    make_signal,
    media_server,
    normalized_xcorr,
    to_8k,
)
from sipp import SippUas

from ringcast.media import prepare_prompt
from ringcast.media.fetch import MediaFetcher
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.sip import CallSpec, MediaOffer, OutboundCall, SipEndpoint

pytestmark = pytest.mark.sipp

HERE = Path(__file__).parent
SRC = make_signal(1.0, 22050)


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with media_server() as srv:
        srv.routes["/hello.wav"] = Route(encode_audio(SRC, 22050, "WAV"))
        yield srv


@pytest.fixture
async def sink() -> AsyncIterator[RtpSink]:
    s = RtpSink.open()
    yield s
    s.close()


@pytest.mark.parametrize(
    ("scenario", "codec", "pt"),
    [("uas_answer_sink.xml", "PCMU", 0), ("uas_pcma_only.xml", "PCMA", 8)],
)
async def test_sip_call_streams_the_prompt(
    endpoint: SipEndpoint,
    server: MediaServer,
    sink: RtpSink,
    tmp_path: Path,
    scenario: str,
    codec: str,
    pt: int,
) -> None:
    prompt = await prepare_prompt(
        [{"play": server.url("/hello.wav")}, {"dtmf": "1#"}],
        http=MediaFetcher(allow_private=True, cache_dir=tmp_path / "cache"),
    )
    clock = RtpClock()
    base = random.randrange(40000, 59000, 2)
    session = await MediaSession.open(clock, PortAllocator(base, base + 200), "127.0.0.1")
    # SIPp's built-in [media_port] shadows `-key media_port`: these scenarios use their own key
    uas = SippUas(HERE / scenario, tmp_path, keys={"rtp_sink_port": str(sink.port)}, max_calls=1)
    uas.start()
    try:
        spec = CallSpec(
            to=uas.uri("alice"),
            from_="me",
            media=MediaOffer(host="127.0.0.1", port=session.local_port),
        )
        call = OutboundCall(endpoint, spec)
        assert await call.setup() is True
        answer = call.answer
        assert answer is not None and answer.codec == codec and answer.payload_type == pt
        session.start(
            answer.host, answer.port, answer.payload_type, answer.codec, answer.dtmf_payload_type
        )
        result = await session.play(prompt)
        assert result.completed
        await call.hangup()
        await asyncio.sleep(0.05)
        await session.close()
        await clock.stop()
        assert f"m=audio {session.local_port} RTP/AVP" in uas.received()[0]
        assert await asyncio.to_thread(uas.wait, 5) == 0, uas.errors()
    finally:
        uas.stop()
    payloads = sink.check_stream(audio_pt=pt, dtmf_pt=101)
    assert normalized_xcorr(decode(payloads, codec)[: 50 * 160], to_8k(SRC, 22050)) >= 0.9
    digits = {(ts, d) for ts, d, _end, _dur in sink.events(101)}
    assert "".join(d for _ts, d in sorted(digits)) == "1#"
