"""What the callee receives: real UDP on 127.0.0.1, decoded and compared with the source.

The test owns the receiving socket (as SIPp's SDP answer would name it) and
aims MediaSession.start() at it. Checks: normalized cross-correlation with the
source at 8 kHz >= 0.9, contiguous sequence numbers, timestamps +160, median
gap 20 ms, DTMF as RFC 4733 events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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

from ringcast.media import PromptCache, prepare_prompt, tts
from ringcast.media.fetch import MediaFetcher
from ringcast.rtp import MediaSession, PortAllocator, RtpClock
from ringcast.rtp.packet import RTCP_BYE, RTCP_SDES, RTCP_SR, parse_rtcp, parse_rtp

SRC_RATE = 16000
SRC = make_signal(1.5, SRC_RATE)  # (n, 1)
SRC_STEREO_44K = make_signal(1.5, 44100, channels=2)


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with media_server() as srv:
        srv.routes["/hello.wav"] = Route(encode_audio(SRC, SRC_RATE, "WAV"))
        srv.routes["/stereo.mp3"] = Route(encode_audio(SRC_STEREO_44K, 44100, "MP3"))
        yield srv


@pytest.fixture
def fetcher(tmp_path: Path) -> MediaFetcher:
    return MediaFetcher(allow_private=True, cache_dir=tmp_path / "media-cache")


async def play_to_sink(
    clock: RtpClock,
    allocator: PortAllocator,
    sink: RtpSink,
    prompt: Any,
    *,
    pt: int = 0,
    codec: str = "PCMU",
    dtmf_pt: int | None = 101,
) -> MediaSession:
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.start("127.0.0.1", sink.port, pt, codec, dtmf_pt)
    result = await session.play(prompt)
    assert result.completed
    await asyncio.sleep(0.05)  # the last datagrams cross loopback
    await session.close()
    await asyncio.sleep(0.05)
    return session


async def test_pcmu_wav(
    server: MediaServer, fetcher: MediaFetcher, clock: RtpClock, allocator: PortAllocator,
    sink: RtpSink,
) -> None:  # fmt: skip
    prompt = await prepare_prompt([{"play": server.url("/hello.wav")}], http=fetcher)
    session = await play_to_sink(clock, allocator, sink, prompt)
    payloads = sink.check_stream(audio_pt=0)
    assert len(payloads) == session.packets_sent == 75
    score = normalized_xcorr(decode(payloads, "PCMU"), to_8k(SRC, SRC_RATE))
    assert score >= 0.9, score
    assert {p.addr[1] for p in sink.packets} == {session.local_port}  # from the SDP port
    # RTCP: the close sent a compound SR + SDES + BYE to port+1
    kinds = [[p.packet_type for p in parse_rtcp(d)] for d in sink.rtcp_packets]
    assert [RTCP_SR, RTCP_SDES, RTCP_BYE] in kinds


async def test_pcma_only_answer(
    server: MediaServer, fetcher: MediaFetcher, clock: RtpClock, allocator: PortAllocator,
    sink: RtpSink,
) -> None:  # fmt: skip
    prompt = await prepare_prompt([{"play": server.url("/hello.wav")}], http=fetcher)
    await play_to_sink(clock, allocator, sink, prompt, pt=8, codec="PCMA", dtmf_pt=None)
    payloads = sink.check_stream(audio_pt=8)
    assert normalized_xcorr(decode(payloads, "PCMA"), to_8k(SRC, SRC_RATE)) >= 0.9


async def test_mp3_44k_stereo(
    server: MediaServer, fetcher: MediaFetcher, clock: RtpClock, allocator: PortAllocator,
    sink: RtpSink,
) -> None:  # fmt: skip
    prompt = await prepare_prompt([{"play": server.url("/stereo.mp3")}], http=fetcher)
    await play_to_sink(clock, allocator, sink, prompt)
    payloads = sink.check_stream(audio_pt=0)
    score = normalized_xcorr(decode(payloads, "PCMU"), to_8k(SRC_STEREO_44K, 44100))
    assert score >= 0.9, score


async def test_tts(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoken: list[tts.Speech] = []
    real = tts.synthesize_async

    async def spy(text: str, **kw: Any) -> tts.Speech:
        speech = await real(text, **kw)
        spoken.append(speech)
        return speech

    monkeypatch.setattr(tts, "synthesize_async", spy)
    prompt = await prepare_prompt(
        [{"say": "Hello {name}, your appointment is at nine.", "voice": "en-us", "rate": 180}],
        variables={"name": "Alice"},
    )
    await play_to_sink(clock, allocator, sink, prompt)
    payloads = sink.check_stream(audio_pt=0)
    (speech,) = spoken
    reference = to_8k(speech.samples, speech.sample_rate)
    assert normalized_xcorr(decode(payloads, "PCMU"), reference) >= 0.9


async def test_playlist_play_pause_say_dtmf(
    server: MediaServer, fetcher: MediaFetcher, clock: RtpClock, allocator: PortAllocator,
    sink: RtpSink,
) -> None:  # fmt: skip
    prompt = await prepare_prompt(
        [
            {"play": server.url("/hello.wav")},
            {"pause": 0.5},
            {"say": "Press one", "voice": "en-us"},
            {"dtmf": "1#"},
        ],
        http=fetcher,
    )
    await play_to_sink(clock, allocator, sink, prompt, dtmf_pt=101)
    payloads = sink.check_stream(audio_pt=0, dtmf_pt=101)
    received = decode(payloads, "PCMU")
    assert normalized_xcorr(received[: 75 * 160], to_8k(SRC, SRC_RATE)) >= 0.9
    assert np.abs(received[75 * 160 : 100 * 160]).max() == 0  # the 0.5 s pause
    events = sink.events(101)
    digits = "".join(
        d for i, (ts, d, end, dur) in enumerate(events) if i == 0 or ts != events[i - 1][0]
    )
    assert digits == "1#"
    ends = [e for e in events if e[2]]
    assert len(ends) == 6 and {e[3] for e in ends} == {800}  # end sent 3 times, 100 ms
    markers = [parse_rtp(p.data).marker for p in sink.packets]
    assert markers.count(True) == 3  # stream start + one per event


async def test_inband_dtmf_without_telephone_event(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt([{"dtmf": "5"}])
    await play_to_sink(clock, allocator, sink, prompt, dtmf_pt=None)
    payloads = sink.check_stream(audio_pt=0)
    tone = decode(payloads[:5], "PCMU")
    spectrum = np.abs(np.fft.rfft(tone))
    freqs = np.fft.rfftfreq(tone.size, 1 / 8000)
    assert sorted(freqs[np.argsort(spectrum)[-2:]]) == pytest.approx([770, 1336], abs=10)


async def test_gather_collects_rfc4733_digits_and_latches(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt(
        [{"pause": 0.1}, {"gather": {"digits": 2, "timeout": 5, "optout": "9"}}, {"pause": 0.1}]
    )
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    # the SDP answer names a port nobody listens on; the callee's RTP comes from the sink
    session.start("127.0.0.1", sink.port + 2, 0, "PCMU", 101)
    play = asyncio.create_task(session.play(prompt), name="test-play")
    await asyncio.sleep(0.3)
    seq = sink.send_event(session.local_port, 4, ts=1000, seq=1)
    await asyncio.sleep(0.1)
    sink.send_event(session.local_port, 2, ts=2000, seq=seq)
    result = await asyncio.wait_for(play, 2)  # far sooner than the 5 s timeout
    assert result.dtmf == "42" and not result.optout and result.completed
    assert session.dtmf_received == "42"
    # symmetric RTP: after the callee's first packet, our RTP went to its source
    assert sink.packets, "no RTP reached the latched address"
    await session.close()


async def test_gather_optout_and_cancel_keep_digits(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    prompt = await prepare_prompt([{"gather": {"digits": 3, "timeout": 5, "optout": "9"}}])
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    play = asyncio.create_task(session.play(prompt), name="test-play-optout")
    await asyncio.sleep(0.1)
    sink.send_event(session.local_port, 9, ts=77, seq=10)
    result = await asyncio.wait_for(play, 2)
    assert result.optout and result.dtmf == "9"

    long = await prepare_prompt([{"pause": 10}])
    play = asyncio.create_task(session.play(long), name="test-play-cancel")
    await asyncio.sleep(0.1)
    sink.send_event(session.local_port, 7, ts=99, seq=20)
    await asyncio.sleep(0.1)
    play.cancel()
    with pytest.raises(asyncio.CancelledError):
        await play
    assert session.dtmf_received == "97"
    await session.close()


async def test_stop_ends_play_not_completed(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    play = asyncio.create_task(session.play(await prepare_prompt([{"pause": 10}])), name="p")
    await asyncio.sleep(0.2)
    session.stop()
    result = await asyncio.wait_for(play, 1)
    assert not result.completed
    await session.close()
    assert allocator.in_use == 0


async def test_many_calls_one_clock_one_prompt(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    cache = PromptCache()
    prompt = await cache.get([{"say": "Shared prompt"}])
    sessions = [await MediaSession.open(clock, allocator, bind_host="127.0.0.1") for _ in range(50)]
    try:
        for s in sessions:
            s.start("127.0.0.1", sink.port, 0, "PCMU", 101)
        results = await asyncio.gather(*(s.play(prompt) for s in sessions))
        assert all(r.completed for r in results)
        await asyncio.sleep(0.05)
        per_ssrc: dict[int, list[int]] = {}
        for p in sink.packets:
            pkt = parse_rtp(p.data)
            per_ssrc.setdefault(pkt.ssrc, []).append(pkt.seq)
        assert len(per_ssrc) == 50
        n = sessions[0].packets_sent
        for seqs in per_ssrc.values():
            assert len(seqs) == n
            assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    finally:
        for s in sessions:
            await s.close()
    assert allocator.in_use == 0


async def test_callee_audio_is_dropped_in_the_kernel_after_latching(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    from ringcast.rtp.packet import build_rtp

    session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
    session.start("127.0.0.1", sink.port, 0, "PCMU", 101)
    play = asyncio.create_task(session.play(await prepare_prompt([{"pause": 1}])), name="p")
    audio = build_rtp(b"\xff" * 160, payload_type=0, seq=1, timestamp=0, ssrc=0x5EED)
    sink.rtp.sendto(audio, ("127.0.0.1", session.local_port))  # first packet: latches
    await asyncio.sleep(0.1)
    assert session._connected and session.packets_received == 1
    for _ in range(20):
        sink.rtp.sendto(audio, ("127.0.0.1", session.local_port))
    sink.send_event(session.local_port, 5, ts=500, seq=2)
    await asyncio.sleep(0.1)
    assert session.packets_received == 1 + 6  # the 20 audio packets never reached Python
    assert session.dtmf_received == "5"
    assert (await play).completed
    await session.close()


async def test_start_again_reaims_the_stream(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink
) -> None:
    other = RtpSink.open()
    try:
        session = await MediaSession.open(clock, allocator, bind_host="127.0.0.1")
        session.start("127.0.0.1", sink.port, 0, "PCMU", None)
        session._latch(None)  # as after the latch window
        prompt = await prepare_prompt([{"pause": 0.2}])
        await session.play(prompt)
        session.start("127.0.0.1", other.port, 8, "PCMA", None)  # a re-INVITE moved it
        await session.play(prompt)
        await asyncio.sleep(0.05)
        await session.close()
        assert len(sink.packets) == 10 and len(other.packets) == 10
        assert {parse_rtp(p.data).payload_type for p in other.packets} == {8}
        seqs = [parse_rtp(p.data).seq for p in sink.packets + other.packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    finally:
        other.close()


async def test_rtcp_sender_reports_while_sending(
    clock: RtpClock, allocator: PortAllocator, sink: RtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import struct

    from ringcast.rtp import sender as sender_module

    monkeypatch.setattr(sender_module, "RTCP_INTERVAL", 0.2)  # due at every 1 s checkpoint
    await play_to_sink(clock, allocator, sink, await prepare_prompt([{"pause": 2.1}]))
    reports = []
    for data in sink.rtcp_packets:
        first = parse_rtcp(data)[0]
        assert first.packet_type == RTCP_SR
        ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = struct.unpack("!IIIIII", first.body[:24])
        reports.append((ntp_hi + ntp_lo / 2**32, rtp_ts, packets, octets))
    assert [r[2] for r in reports] == [50, 100, 105]  # two periodic SRs, then SR+BYE at close
    assert all(r[3] == 160 * r[2] for r in reports)
    (t1, ts1, _, _), (t2, ts2, _, _) = reports[:2]
    assert (ts2 - ts1) & 0xFFFFFFFF == 50 * 160  # RTP clock advanced 1 s of 8 kHz
    assert t2 - t1 == pytest.approx(1.0, abs=0.1)  # ...in 1 s of wall clock (NTP)
