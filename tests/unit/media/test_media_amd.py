"""The answering-machine detector and the in-band DTMF receiver as pure machines:
PCM in, actions out, no sockets (like tests/unit/sip/test_sip_transaction.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from ringcast.media import amd, tts
from ringcast.media.amd import (
    AmdState,
    AnsweredBy,
    Decision,
    GreetingEnd,
    GreetingEndReason,
    MachineDetector,
)
from ringcast.media.codecs import float_to_pcm16
from ringcast.media.inband_dtmf import COLUMNS, FULL_SCALE_DBM0, KEYS, ROWS, InbandDtmfDetector
from ringcast.media.prompt import dtmf_tone

RATE = 8000
Pcm = npt.NDArray[np.int16]


def silence(seconds: float) -> npt.NDArray[np.float64]:
    return np.zeros(int(seconds * RATE))


def tone(hz: float, seconds: float, amp: float = 0.2) -> npt.NDArray[np.float64]:
    t = np.arange(int(seconds * RATE)) / RATE
    return amp * np.sin(2 * np.pi * hz * t)


def speech(text: str) -> npt.NDArray[np.float64]:
    s = tts.synthesize(text, voice="en-us")
    x = np.asarray(soxr.resample(s.samples, s.sample_rate, RATE), dtype=np.float64)
    nz = np.flatnonzero(np.abs(x) > 1e-3)
    return x[nz[0] : nz[-1] + 1]


def pcm(*parts: npt.NDArray[np.float64], noise: float = 0.001) -> Pcm:
    x = np.concatenate(parts)
    x = x + np.random.default_rng(7).standard_normal(len(x)) * noise
    return float_to_pcm16(x.astype(np.float32))


def run(det: MachineDetector, audio: Pcm, chunk: int = 160) -> list[Decision | GreetingEnd]:
    out: list[Decision | GreetingEnd] = []
    for i in range(0, len(audio), chunk):
        out += det.feed(audio[i : i + chunk])
    return out


GREETING = (
    "Hi, you have reached Dana. I cannot come to the phone right now. "
    "Please leave a message after the tone."
)


def test_prompt_hello_then_silence_is_a_human_after_the_shorter_silence() -> None:
    """A "Hello?" that starts 0.3 s after the answer: 700 ms of silence decide."""
    hello = speech("Hello?")
    actions = run(MachineDetector(), pcm(silence(0.3), hello, silence(3.0)))
    assert len(actions) == 1
    (d,) = actions
    assert isinstance(d, Decision)
    assert (d.answered_by, d.cause) == (AnsweredBy.HUMAN, "silence-after-prompt-answer")
    spoken_end = 1000 * (0.3 + len(hello) / RATE)
    assert spoken_end + 600 <= d.at_ms <= spoken_end + 850  # 700 ms of silence after it


def test_late_hello_then_silence_needs_the_full_silence() -> None:
    """The same "Hello?" begun 1.6 s after the answer is not prompt: 900 ms decide."""
    hello = speech("Hello?")
    actions = run(MachineDetector(), pcm(silence(1.6), hello, silence(3.0)))
    assert len(actions) == 1
    (d,) = actions
    assert isinstance(d, Decision)
    assert (d.answered_by, d.cause) == (AnsweredBy.HUMAN, "silence-after-greeting")
    spoken_end = 1000 * (1.6 + len(hello) / RATE)
    assert spoken_end + 800 <= d.at_ms <= spoken_end + 1100  # 900 ms of silence after it


def test_prompt_phrase_of_many_words_needs_the_full_silence() -> None:
    """A prompt start alone is not enough: more than `prompt_words` words wait 900 ms."""
    params = amd.AmdParams(prompt_words=0)
    hello = speech("Hello?")
    actions = run(MachineDetector(params=params), pcm(silence(0.3), hello, silence(3.0)))
    (d,) = actions
    assert isinstance(d, Decision) and d.cause == "silence-after-greeting"
    spoken_end = 1000 * (0.3 + len(hello) / RATE)
    assert spoken_end + 800 <= d.at_ms <= spoken_end + 1100


def test_greeting_and_beep_is_a_machine_whose_greeting_ends_at_the_beep() -> None:
    head = np.concatenate([silence(0.3), speech(GREETING), silence(0.5)])
    det = MachineDetector()
    actions = run(det, pcm(head, tone(1000, 0.5), silence(3.0)))
    decision, end = actions
    assert isinstance(decision, Decision) and isinstance(end, GreetingEnd)
    assert (decision.answered_by, decision.cause) == (AnsweredBy.MACHINE, "long-greeting")
    assert end.reason is GreetingEndReason.BEEP
    beep_end = 1000 * (len(head) / RATE + 0.5)
    assert abs(end.at_ms - beep_end) <= 40
    assert det.state is AmdState.DONE and det.feed(pcm(silence(1.0))) == []


def test_greeting_without_beep_ends_in_silence() -> None:
    greeting = speech(GREETING)
    actions = run(MachineDetector(), pcm(silence(0.3), greeting, silence(4.0)))
    assert [type(a) for a in actions] == [Decision, GreetingEnd]
    end = actions[1]
    assert isinstance(end, GreetingEnd) and end.reason is GreetingEndReason.SILENCE
    last_word = 1000 * (0.3 + len(greeting) / RATE)
    assert last_word < end.at_ms <= last_word + 1600


def test_a_beep_alone_is_a_machine() -> None:
    actions = run(MachineDetector(), pcm(silence(0.5), tone(850, 0.3), silence(1.0)))
    assert isinstance(actions[0], Decision)
    assert (actions[0].answered_by, actions[0].cause) == (AnsweredBy.MACHINE, "beep")
    assert isinstance(actions[1], GreetingEnd) and actions[1].reason is GreetingEndReason.BEEP


@pytest.mark.parametrize(("hz", "seconds", "cause"), [(2100, 3.0, "ced"), (1100, 0.5, "cng")])
def test_fax_tones(hz: float, seconds: float, cause: str) -> None:
    actions = run(MachineDetector(), pcm(silence(0.4), tone(hz, seconds), silence(3.0)))
    assert actions == [Decision(AnsweredBy.FAX, actions[0].at_ms, cause)]


def test_long_initial_silence_is_a_machine_and_no_audio_is_unknown() -> None:
    (d,) = run(MachineDetector(), pcm(silence(4.0)))
    assert isinstance(d, Decision)
    assert (d.answered_by, d.cause, d.at_ms) == (AnsweredBy.MACHINE, "initial-silence", 3000.0)
    det = MachineDetector(timeout=6.0)
    assert det.expire(5999.0) == []
    assert det.expire(6000.0) == [Decision(AnsweredBy.UNKNOWN, 6000.0, "timeout")]
    assert det.expire(7000.0) == []  # decided once


def test_chunking_does_not_change_the_result() -> None:
    audio = pcm(silence(0.3), speech(GREETING), silence(0.5), tone(1000, 0.4), silence(2.0))
    assert run(MachineDetector(), audio, 160) == run(MachineDetector(), audio, 237)


@pytest.mark.parametrize("hz", [350.0, 1000.0, 1800.0, 2450.0])
def test_beeps_across_the_band_in_noise(hz: float) -> None:
    """The band DFT finds a beep anywhere in 300-2,500 Hz, 12 dB above white noise."""
    audio = pcm(silence(0.5), tone(hz, 0.3, amp=0.05), silence(1.0), noise=0.05 / 4 / np.sqrt(2))
    actions = run(MachineDetector(), audio, 640)
    assert isinstance(actions[0], Decision)
    assert (actions[0].answered_by, actions[0].cause) == (AnsweredBy.MACHINE, "beep")
    assert isinstance(actions[1], GreetingEnd) and actions[1].reason is GreetingEndReason.BEEP
    assert abs(actions[1].at_ms - 800.0) <= 40


def test_band_dft_is_the_windowed_fft_of_the_band() -> None:
    """The one matrix product gives what a Hann-windowed 256-point rfft gives in the band."""
    x = np.random.default_rng(16).standard_normal((5, amd.FRAME)) * 3000
    parts = (x.astype(np.float32) @ amd._DFT).reshape(5, 2, amd._BINS)
    mine = (parts.astype(np.float64) ** 2).sum(axis=1)
    spec = np.fft.rfft(x * np.hanning(amd.FRAME), amd.NFFT, axis=1)[:, amd._BAND]
    np.testing.assert_allclose(mine, np.abs(spec) ** 2, rtol=1e-3, atol=1e-3 * mine.max())


def test_noise_floor_is_the_quietest_of_the_last_75_frames() -> None:
    rng = np.random.default_rng(75)
    # one level per 20 ms frame of white noise, rising ramps: the floor is the frame 74
    # back until a ramp restarts; fed in chunks of 1-7 frames
    amps = np.tile(np.geomspace(0.001, 0.3, 100), 3)
    audio = np.concatenate([a * rng.standard_normal(160) for a in amps])
    never = amd.AmdParams(initial_silence=1e9, greeting=1e9, max_words=10**6, end_silence=1e9)
    det = MachineDetector(timeout=30, params=never)
    levels: list[float] = []
    i = 0
    while i < len(amps):
        n = int(rng.integers(1, 8))
        chunk = float_to_pcm16(audio[i * 160 : (i + n) * 160].astype(np.float32))
        det.feed(chunk)
        x = chunk.astype(np.float64).reshape(-1, 160)
        levels += [float(10 * np.log10((f @ f) / 160 / 32768.0**2 + 1e-18)) for f in x]
        assert det._noise_db == pytest.approx(min(levels[-75:]), abs=1e-4)  # float32 sums
        i += n
    assert not det.done and len(levels) == 300


# --- in-band DTMF -------------------------------------------------------------------------


def dbm0(level: float) -> float:
    return 10 ** ((level - FULL_SCALE_DBM0) / 20)  # amplitude as a fraction of full scale


def dual(key: str, seconds: float, low_dbm0: float = -10.0, twist_db: float = 0.0) -> Pcm:
    r = next(i for i, row in enumerate(KEYS) if key in row)
    c = KEYS[r].index(key)
    t = np.arange(int(seconds * RATE)) / RATE
    lo = dbm0(low_dbm0) * np.sin(2 * np.pi * ROWS[r] * t)
    hi = dbm0(low_dbm0 + twist_db) * np.sin(2 * np.pi * COLUMNS[c] * t)
    return float_to_pcm16((lo + hi).astype(np.float32))


def digits(audio: Pcm, chunk: int = 160) -> str:
    det = InbandDtmfDetector()
    return "".join(
        d.digit for i in range(0, len(audio), chunk) for d in det.feed(audio[i : i + chunk])
    )


def gap(seconds: float) -> Pcm:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def test_every_key_at_60_ms() -> None:
    keys = "".join(KEYS)
    audio = np.concatenate([gap(0.1)] + [np.concatenate([dual(k, 0.06), gap(0.06)]) for k in keys])
    assert digits(audio) == keys
    assert digits(audio, 97) == keys


def test_prompt_tones_are_recognised() -> None:
    audio = np.concatenate([gap(0.2), float_to_pcm16(dtmf_tone("4", 0.12)), gap(0.1)])
    audio = np.concatenate([audio, float_to_pcm16(dtmf_tone("2", 0.12)), gap(0.2)])
    assert digits(audio) == "42"


def test_q24_timing_level_and_twist() -> None:
    assert digits(np.concatenate([gap(0.1), dual("5", 0.02), gap(0.1)])) == ""  # too short
    assert digits(np.concatenate([gap(0.1), dual("5", 0.04), gap(0.1)])) == "5"
    two = np.concatenate([gap(0.1), dual("5", 0.06), gap(0.05), dual("5", 0.06), gap(0.1)])
    assert digits(two) == "55"  # a 50 ms pause separates two presses
    one = np.concatenate([gap(0.1), dual("5", 0.06), gap(0.005), dual("5", 0.06), gap(0.1)])
    assert digits(one) == "5"  # a 5 ms break is bridged
    assert digits(np.concatenate([gap(0.1), dual("8", 0.1, -42.0), gap(0.1)])) == ""  # too weak
    assert digits(np.concatenate([gap(0.1), dual("8", 0.1, -20.0, 10.0), gap(0.1)])) == ""
    assert digits(np.concatenate([gap(0.1), dual("8", 0.1, -10.0, -12.0), gap(0.1)])) == ""
    assert digits(np.concatenate([gap(0.1), dual("8", 0.1, -10.0, -6.0), gap(0.1)])) == "8"


def test_speech_is_not_a_digit() -> None:
    audio = pcm(speech(GREETING), speech("Hello? Who is this? One two three four."))
    assert digits(audio) == ""
