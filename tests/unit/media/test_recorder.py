"""The recorder's pure parts: energy silence, stop rules, trimming, WAV, two-leg mix."""

from __future__ import annotations

import io
import math
import wave

import numpy as np
import pytest

from ringcast.media.codecs import FRAME_SAMPLES, SAMPLE_RATE, Pcm16
from ringcast.media.recorder import (
    Mixer,
    Recorder,
    RecordSettings,
    StopReason,
    beep_samples,
    frame_dbfs,
    is_silent,
    mix,
    wav_bytes,
)


def tone(seconds: float, level: float = 0.3, hz: float = 440.0) -> Pcm16:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.rint(level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def quiet(seconds: float, level: int = 0) -> Pcm16:
    rng = np.random.default_rng(1)
    n = round(seconds * SAMPLE_RATE)
    return rng.integers(-level, level + 1, n).astype(np.int16) if level else np.zeros(n, np.int16)


def packets(pcm: Pcm16) -> list[Pcm16]:
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, pcm.size, FRAME_SAMPLES)]


@pytest.mark.parametrize(
    ("frame", "silent"),
    [
        (np.zeros(160, np.int16), True),  # digital silence
        (np.full(160, 100, np.int16), True),  # ~ -50 dBFS: line noise
        (np.full(160, 400, np.int16), False),  # 400/32768: -38.3 dBFS, above -40
        (tone(0.02, 0.3), False),  # speech-like level
        (tone(0.02, 0.02), False),  # -37 dBFS sine (RMS 0.014 -> -37 dBFS)
        (np.zeros(0, np.int16), True),
    ],
)
def test_is_silent_by_energy(frame: Pcm16, silent: bool) -> None:
    assert is_silent(frame) is silent


def test_frame_dbfs_of_full_scale_square_is_zero() -> None:
    assert frame_dbfs(np.full(160, -32768, np.int16)) == pytest.approx(0.0)
    assert frame_dbfs(np.zeros(160, np.int16)) == -math.inf


def test_stops_on_silence_and_cuts_it() -> None:
    rec = Recorder(RecordSettings(max=30, silence=1.0))
    speech = tone(2.0)
    reasons = [rec.feed(p) for p in packets(np.concatenate([speech, quiet(3.0, 50)]))]
    stops = [r for r in reasons if r is not None]
    assert stops == [StopReason.SILENCE]
    assert reasons.index(StopReason.SILENCE) == (2.0 + 1.0) / 0.02 - 1  # the 1 s of silence
    assert rec.done and rec.reason is StopReason.SILENCE
    assert rec.duration == pytest.approx(2.0)
    assert np.array_equal(rec.pcm(), speech)


def test_silence_counts_from_the_start() -> None:
    rec = Recorder(RecordSettings(max=30, silence=0.5))
    for p in packets(quiet(0.6)):
        rec.feed(p)
    assert rec.reason is StopReason.SILENCE
    assert rec.duration == 0.0


def test_a_pause_shorter_than_silence_does_not_stop() -> None:
    rec = Recorder(RecordSettings(max=30, silence=1.0))
    audio = np.concatenate([tone(0.5), quiet(0.8), tone(0.5)])
    for p in packets(audio):
        assert rec.feed(p) is None
    assert not rec.done
    assert rec.close() is StopReason.HANGUP
    assert rec.duration == pytest.approx(1.8)


def test_stops_at_max_and_keeps_max() -> None:
    rec = Recorder(RecordSettings(max=1.0, silence=0))
    reasons = [rec.feed(p) for p in packets(tone(1.5))]
    assert reasons.count(StopReason.MAX) == 1
    assert reasons.index(StopReason.MAX) == 49
    assert rec.duration == pytest.approx(1.0)
    assert rec.feed(tone(0.02)) is None  # done: nothing more kept
    assert rec.duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("finish_on", "digit", "stops"),
    [("#", "#", True), ("#", "5", False), ("*#", "*", True), ("", "#", False)],
)
def test_finish_on_digit(finish_on: str, digit: str, stops: bool) -> None:
    rec = Recorder(RecordSettings(finish_on=finish_on))
    rec.feed(tone(0.1))
    assert (rec.on_digit(digit) is StopReason.DIGIT) is stops
    assert rec.done is stops


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"max": 0}, "record.max"),
        ({"max": 4000}, "record.max"),
        ({"silence": -1}, "record.silence"),
        ("yes", "record must be"),
    ],
)
def test_settings_refuse_bad_values(item: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RecordSettings.from_item(item)  # type: ignore[arg-type]


def test_settings_defaults() -> None:
    assert RecordSettings.from_item(True) == RecordSettings()
    s = RecordSettings.from_item({"max": 30, "silence": 3, "finish_on": "#", "beep": False})
    assert (s.max, s.silence, s.finish_on, s.beep) == (30.0, 3.0, "#", False)


def test_wav_bytes_round_trip() -> None:
    pcm = tone(0.5)
    data = wav_bytes(pcm)
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert len(data) == 44 + 2 * pcm.size
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        back = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(back, pcm)


def test_mix_sums_and_clips() -> None:
    a = np.array([1000, 20000, -20000], np.int16)
    b = np.array([1000, 20000], np.int16)
    assert mix([a, b]).tolist() == [2000, 32767, -20000]


def test_mixer_places_by_position_so_a_gap_stays_silent() -> None:
    m = Mixer(2)
    m.feed(0, np.full(160, 10, np.int16))  # leg A: packet 0
    m.feed(0, np.full(160, 10, np.int16), at=480)  # packets 1, 2 lost
    m.feed(1, np.full(320, 5, np.int16), at=160)  # leg B starts 20 ms late
    out = m.pcm()
    assert out.size == 640
    assert out[:160].tolist() == [10] * 160
    assert out[160:480].tolist() == [5] * 320
    assert out[480:].tolist() == [10] * 160
    assert m.duration == pytest.approx(0.08)


def test_mixer_bounds_memory() -> None:
    m = Mixer(2, max_seconds=0.05)
    m.feed(0, np.ones(1000, np.int16))
    m.feed(1, np.ones(10, np.int16), at=10_000)  # past the limit: dropped
    assert m.pcm().size == 400


def test_mixed_legs_correlate_with_each_leg() -> None:
    a, b = tone(1.0, 0.3, 300.0), tone(1.0, 0.3, 700.0)
    out = mix([a, b]).astype(np.float64)
    for leg in (a, b):
        r = np.corrcoef(out, leg.astype(np.float64))[0, 1]
        assert r > 0.6  # two equal-energy uncorrelated legs: 1/sqrt(2) each


def test_beep_is_whole_frames_and_audible() -> None:
    beep = beep_samples()
    assert beep.size % FRAME_SAMPLES == 0 and beep.size == 2400
    assert float(np.max(np.abs(beep))) == pytest.approx(0.3, abs=1e-3)


def test_bridge_recording_aligns_legs_by_arrival_then_timestamps() -> None:
    from ringcast.media.recorder import BridgeRecording

    rec = BridgeRecording(started=100.0)
    a = np.full(160, 1000, np.int16)
    b = np.full(160, 10, np.int16)
    rec.feed(0, a, rtp_timestamp=0xFFFFFF60, arrival=100.0)  # callee: wraps next packet
    rec.feed(1, b, rtp_timestamp=5000, arrival=100.04)  # agent: joins 40 ms later
    rec.feed(0, a, rtp_timestamp=0x00000000 + 160, arrival=100.07)  # one lost, wrapped
    rec.feed(1, b, rtp_timestamp=5160, arrival=100.09)  # late arrival: placed by timestamp
    rec.feed(1, b, rtp_timestamp=4840, arrival=100.1)  # before the leg's first: dropped
    out = rec.pcm()
    assert rec.duration == pytest.approx(0.08)
    assert out[:160].tolist() == [1000] * 160  # callee packet 0
    assert out[160:320].tolist() == [0] * 160  # callee packet 1 lost, agent not yet there
    assert out[320:480].tolist() == [1010] * 160  # callee packet 2 (ts 160 after wrap) + agent
    assert out[480:640].tolist() == [10] * 160  # agent's second packet
    assert wav_bytes(out)[:4] == b"RIFF"


def test_a_finish_on_digit_heard_in_band_is_cut() -> None:
    rec = Recorder(RecordSettings(silence=0))
    rec.feed(np.concatenate([tone(1.0), tone(0.1, hz=941.0)]))
    assert rec.on_digit("#", trim=0.1) is StopReason.DIGIT
    assert rec.duration == pytest.approx(1.0)
    assert np.array_equal(rec.pcm(), tone(1.0))


def test_a_bridge_recording_is_stored_like_a_record_item() -> None:
    from ringcast.dialer.recordings import stored
    from ringcast.media.recorder import BridgeRecording

    bridge = BridgeRecording(started=0.0)
    bridge.feed(0, tone(0.5), rtp_timestamp=7, arrival=0.0)
    bridge.feed(1, tone(0.5, hz=700.0), rtp_timestamp=9, arrival=0.25)
    rec = Recorder(RecordSettings())
    rec.feed(tone(0.2))
    rec.close()
    rows = stored([rec, bridge])
    assert [(r.reason, len(r.wav), r.duration) for r in rows] == [
        ("hangup", 44 + 2 * 1600, pytest.approx(0.2)),
        ("hangup", 44 + 2 * 6000, pytest.approx(0.75)),
    ]
    assert rows[0].id != rows[1].id
