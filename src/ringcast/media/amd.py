"""Answering-machine detection on the callee's first seconds of audio.

A pure state machine, no sockets (like ``ringcast.sip.transaction``): 16-bit
PCM at 8 kHz goes in (`feed`, any length; cut into 20 ms frames), a list of
actions comes out, the owner applies them:

- `Decision(answered_by, at_ms, cause)` once: `human`, `machine`, `fax` or
  `unknown` (nothing decided within `timeout`);
- for a machine, later, `GreetingEnd(reason, at_ms)`: the greeting ended
  with a `beep` (at the beep's end), in `silence`, or `timeout`.

Each frame gets three measurements: voice activity (WebRTC's VAD, gated by
the frame's level above a running noise floor, so line noise does not count
as voice), a tone test (the telephone band of a 256-point DFT: one peak
holding most of the frame's energy, its frequency stable from frame to frame)
and the level. The greeting's
structure is read as Asterisk's app_amd names it (initial silence, greeting
length, words, silence after the greeting) with values tuned on the tuning
half of a labelled corpus (bench/amd.py, bench/RESULTS.md):

- a short greeting followed by silence is a person ("Hello?"); one that also
  started soon after the answer (people speak at once, machines often later)
  and has few words needs less of that silence;
- a long one, or many words, is a machine;
- a stable tone of 300-2,500 Hz lasting `min_beep_ms` is a machine's beep;
- 1,100 Hz (CNG, T.30) or 2,100 Hz (CED, V.25) held long enough is a fax.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Hz
FRAME = 160  # samples per analysed frame (20 ms)
FRAME_MS = 20.0
NFFT = 256  # FFT size (the 160-sample frame zero-padded): 31.25 Hz bins
CNG_HZ = 1100.0  # T.30 calling tone: 0.5 s on, 3 s off
CED_HZ = 2100.0  # V.25 answer tone: 2.6-4 s
FAX_TOLERANCE_HZ = 40.0

_BIN_HZ = SAMPLE_RATE / NFFT
_BAND = slice(int(250 / _BIN_HZ), int(3500 / _BIN_HZ))  # FFT bins of the telephone band


def _band_dft() -> npt.NDArray[np.float32]:
    """The Hann-windowed NFFT-point DFT of a frame, telephone-band bins only, as one
    real matrix (cosines then sines): a frame times it gives the band's spectrum in
    one matrix product, cheaper for a few frames than a windowed rfft and a slice."""
    t = np.arange(FRAME)[:, None]
    k = np.arange(_BAND.start, _BAND.stop)[None, :]
    phase = 2 * np.pi * t * k / NFFT
    window = np.hanning(FRAME)[:, None]
    dft = np.concatenate((np.cos(phase), np.sin(phase)), axis=1) * window
    return np.ascontiguousarray(dft, dtype=np.float32)


_DFT = _band_dft()
_BINS = _BAND.stop - _BAND.start
NOISE_WINDOW = 75  # frames (1.5 s) over which the noise floor is the quietest frame
_LEVEL_SCALE = 1.0 / (FRAME * 32768.0**2)  # sum of squares -> mean power re full scale
_LEVEL_FLOOR = 1e-9 / 32768.0**2  # keeps log10 finite on digital silence


class AnsweredBy(enum.StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"
    UNKNOWN = "unknown"


class GreetingEndReason(enum.StrEnum):
    BEEP = "beep"
    SILENCE = "silence"
    TIMEOUT = "timeout"


class AmdState(enum.Enum):
    INITIAL_SILENCE = "initial-silence"  # nothing heard yet
    GREETING = "greeting"  # someone or something is speaking: not decided
    MACHINE_GREETING = "machine-greeting"  # a machine: waiting for its greeting's end
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Decision:
    answered_by: AnsweredBy
    at_ms: float  # audio time of the decision
    cause: str  # why, app_amd style: "long-greeting", "silence-after-greeting", ...


@dataclass(frozen=True, slots=True)
class GreetingEnd:
    reason: GreetingEndReason
    at_ms: float  # audio time at which the voicemail may start


Action = Decision | GreetingEnd


@dataclass(frozen=True, slots=True)
class AmdParams:
    """Thresholds (ms unless named otherwise); tuned on the corpus's tuning half."""

    initial_silence: float = 3000.0  # no voice for this long: a machine (app_amd: 2500)
    greeting: float = 1500.0  # a greeting this long before a pause: a machine (app_amd: 1500)
    after_greeting_silence: float = 900.0  # silence after a short greeting: a person (800)
    # a prompt, short answer ("Hello?" within ~1 s of the answer) needs less silence
    prompt_start: float = 1200.0  # the greeting's first word began this soon after answer
    prompt_greeting: float = 1100.0  # ... it lasted at most this long
    prompt_words: int = 2  # ... in at most this many words
    prompt_silence: float = 700.0  # ... then this much silence: a person
    min_word: float = 100.0  # voice run that counts as a word (app_amd: 100)
    between_words: float = 100.0  # silence that ends a word (app_amd: 50)
    max_words: int = 5  # more words than this in the greeting: a machine (app_amd: 2)
    end_silence: float = 1500.0  # silence that ends a machine's greeting
    greeting_timeout: float = 30000.0  # the longest greeting waited for
    vad_mode: int = 2  # WebRTC VAD aggressiveness, 0-3
    noise_margin_db: float = 9.0  # voice must be this far above the noise floor
    min_level_db: float = -50.0  # dBFS under which a frame is silence
    tone_purity: float = 0.85  # share of a frame's in-band energy in its peak for a tone
    tone_steady_db: float = 4.0  # how much a tone's level may vary
    tone_gap: float = 20.0  # a break this short does not end a tone
    tone_drift_hz: float = 40.0  # how far a tone's frequency may wander
    min_beep: float = 120.0  # a tone this long (300-2,500 Hz) is a beep
    beep_low_hz: float = 300.0
    beep_high_hz: float = 2500.0
    cng: float = 400.0  # a 1,100 Hz tone this long: fax (CNG sounds 500 ms)
    ced: float = 600.0  # a 2,100 Hz tone this long: fax


class MachineDetector:
    """One call's detector: `feed()` PCM, apply the actions it returns."""

    def __init__(self, timeout: float = 6.0, params: AmdParams | None = None) -> None:
        self.params = params or AmdParams()
        self.timeout_ms = timeout * 1000.0
        self.state = AmdState.INITIAL_SILENCE
        self.decision: Decision | None = None
        self.greeting_end: GreetingEnd | None = None
        self._vad = webrtcvad.Vad(self.params.vad_mode)
        self._buf = np.zeros(0, dtype=np.int16)
        self._ms = 0.0  # audio time at the end of the last frame
        self._n = 0  # frames analysed
        # noise floor: the quietest of the last NOISE_WINDOW frames (minimum statistics),
        # kept as a monotonic queue of (frame number, level): O(1) per frame
        self._floor: deque[tuple[int, float]] = deque()
        self._noise_db = -60.0
        # greeting structure
        self._run_voice = 0.0  # current run of voice
        self._run_silence = 0.0  # current run of silence
        self._words = 0
        self._in_word = False
        # tone tracking
        self._tone_hz = 0.0
        self._tone_ms = 0.0
        self._tone_start = 0.0
        self._tone_gap = 0.0  # non-tone time inside the current tone
        self._tone_lo = self._tone_hi = 0.0  # the current tone's level range, dBFS
        self._greeting_start = 0.0  # audio time the greeting's first word began

    def _set_state(self, new: AmdState) -> None:
        log.debug("amd: %s -> %s", self.state.value, new.value)
        self.state = new

    @property
    def done(self) -> bool:
        return self.state is AmdState.DONE

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[Action]:
        """Analyse more of the callee's audio; the actions it led to.

        The frames' levels and spectra are computed for the whole chunk at once, in
        a fixed, small number of numpy calls (feeding 80 ms at a time costs much
        less per frame than 20 ms at a time); only the state machine runs per frame."""
        if self.done:
            return []
        buf = np.concatenate((self._buf, pcm)) if len(self._buf) else np.asarray(pcm, np.int16)
        n = len(buf) // FRAME
        self._buf = buf[n * FRAME :]
        if not n:
            return []
        frames = buf[: n * FRAME]
        x = frames.reshape(n, FRAME).astype(np.float32)
        power: list[float] = np.einsum("ij,ij->i", x, x).tolist()
        levels = [10.0 * math.log10(e * _LEVEL_SCALE + _LEVEL_FLOOR) for e in power]
        tones = self._tones(x, levels)
        raw = frames.tobytes()  # the VAD reads bytes: one copy, sliced per frame
        out: list[Action] = []
        for i in range(n):
            out += self._frame(raw, i, levels[i], tones[i])
            if self.state is AmdState.DONE:
                break
        return out

    def expire(self, elapsed_ms: float) -> list[Action]:
        """The owner's clock: no audio arrived (or too little) by `elapsed_ms`."""
        out: list[Action] = []
        if self.decision is None and elapsed_ms >= self.timeout_ms:
            out.append(self._decide(AnsweredBy.UNKNOWN, "timeout", elapsed_ms))
        if self.state is AmdState.MACHINE_GREETING and elapsed_ms >= self.params.greeting_timeout:
            out.append(self._end(GreetingEndReason.TIMEOUT, elapsed_ms))
        return out

    # -- one frame -------------------------------------------------------------------

    def _frame(self, raw: bytes, i: int, level_db: float, tone: float | None) -> list[Action]:
        p = self.params
        self._ms += FRAME_MS
        self._n += 1
        floor = self._floor
        while floor and floor[-1][1] >= level_db:
            floor.pop()
        floor.append((self._n, level_db))
        if floor[0][0] <= self._n - NOISE_WINDOW:
            floor.popleft()
        self._noise_db = floor[0][1]
        out: list[Action] = []
        if tone is not None or self._tone_ms:
            out += self._track_tone(tone, level_db)
            if self.state is AmdState.DONE:
                return out
        if tone is not None:
            active = True
        else:
            active = (
                level_db > p.min_level_db
                and level_db > self._noise_db + p.noise_margin_db
                and self._vad.is_speech(raw[i * 2 * FRAME : (i + 1) * 2 * FRAME], SAMPLE_RATE)
            )
        out += self._structure(active)
        if self.decision is None and self._ms >= self.timeout_ms:
            out.append(self._decide(AnsweredBy.UNKNOWN, "timeout", self._ms))
        if self.state is AmdState.MACHINE_GREETING and self._ms >= p.greeting_timeout:
            out.append(self._end(GreetingEndReason.TIMEOUT, self._ms))
        return out

    def _tones(self, x: npt.NDArray[np.float32], levels: list[float]) -> list[float | None]:
        """Per frame, the frequency of a pure tone filling its telephone band, else None.

        A chunk without a loud frame costs nothing here; otherwise one matrix product
        gives every frame's band spectrum. A frame is a tone when the 5 bins around
        its peak hold `tone_purity` of its band's energy, so its loudest bin must hold
        at least a fifth of that: frames failing this cheap test (about nine in ten
        loud speech frames) skip the rest."""
        out: list[float | None] = [None] * len(levels)
        floor = self.params.min_level_db + 10
        if max(levels) < floor:
            return out
        parts = (x @ _DFT).reshape(len(levels), 2, _BINS)  # real and imaginary parts
        band = np.einsum("ikj,ikj->ij", parts, parts)  # |X|^2 per bin
        purity = self.params.tone_purity
        total: list[float] = band.sum(axis=1).tolist()
        peak: list[float] = band.max(axis=1).tolist()
        width = band.shape[1]
        for j, lv in enumerate(levels):
            if lv < floor or peak[j] < purity / 5 * total[j]:
                continue
            row = band[j]
            i = int(row.argmax())
            if i < 2 or i > width - 3 or row[i - 2 : i + 3].sum() < purity * total[j]:
                continue
            a, b, c = np.log(row[i - 1 : i + 2] + 1e-12)  # parabolic interpolation
            den = a - 2 * b + c
            shift = 0.5 * (a - c) / den if den != 0 else 0.0
            out[j] = float((i + _BAND.start + shift) * _BIN_HZ)
        return out

    def _track_tone(self, hz: float | None, level_db: float) -> list[Action]:
        """Follow a tone across frames; a beep or fax tone once it lasts long enough."""
        p = self.params
        out: list[Action] = []
        if (
            self._tone_ms
            and hz is not None
            and abs(hz - self._tone_hz) <= p.tone_drift_hz
            and max(self._tone_hi, level_db) - min(self._tone_lo, level_db) <= p.tone_steady_db
        ):
            self._tone_ms += FRAME_MS + self._tone_gap
            self._tone_gap = 0.0
            self._tone_lo = min(self._tone_lo, level_db)
            self._tone_hi = max(self._tone_hi, level_db)
        elif self._tone_ms and hz is None and self._tone_gap < p.tone_gap:
            self._tone_gap += FRAME_MS
            return out
        else:
            out += self._tone_ended()
            self._tone_hz = hz or 0.0
            self._tone_ms = FRAME_MS if hz is not None else 0.0
            self._tone_gap = 0.0
            self._tone_lo = self._tone_hi = level_db
            self._tone_start = self._ms - FRAME_MS
        if not self._tone_ms or self.decision is not None:
            return out
        f = self._tone_hz
        if abs(f - CNG_HZ) <= FAX_TOLERANCE_HZ and self._tone_ms >= p.cng:
            out.append(self._fax("cng"))
        elif abs(f - CED_HZ) <= FAX_TOLERANCE_HZ and self._tone_ms >= p.ced:
            out.append(self._fax("ced"))
        elif self._is_beep(f, self._tone_ms) and not self._fax_pitch(f):
            out.append(self._decide(AnsweredBy.MACHINE, "beep", self._ms))
        return out

    def _is_beep(self, hz: float, ms: float) -> bool:
        p = self.params
        return ms >= p.min_beep and p.beep_low_hz <= hz <= p.beep_high_hz

    @staticmethod
    def _fax_pitch(hz: float) -> bool:
        return abs(hz - CNG_HZ) <= FAX_TOLERANCE_HZ or abs(hz - CED_HZ) <= FAX_TOLERANCE_HZ

    def _tone_ended(self) -> list[Action]:
        """The tone tracked so far stopped: was it a beep?"""
        if not self._is_beep(self._tone_hz, self._tone_ms):
            return []
        end = self._tone_start + self._tone_ms
        out: list[Action] = []
        if self.decision is None:
            out.append(self._decide(AnsweredBy.MACHINE, "beep", end))
        if self.decision is not None and self.decision.answered_by is AnsweredBy.MACHINE:
            out.append(self._end(GreetingEndReason.BEEP, end))
        return out

    def _fax(self, cause: str) -> Decision:
        d = self._decide(AnsweredBy.FAX, cause, self._ms)
        self._set_state(AmdState.DONE)
        return d

    def _structure(self, active: bool) -> list[Action]:
        """Greeting structure, app_amd style: words, greeting length, silences."""
        p = self.params
        out: list[Action] = []
        if active:
            self._run_voice += FRAME_MS
            if self._run_voice >= p.min_word:
                self._run_silence = 0.0
                if not self._in_word:
                    self._in_word = True
                    self._words += 1
            if self.state is AmdState.INITIAL_SILENCE and self._run_voice >= p.min_word:
                self._greeting_start = self._ms - self._run_voice
                self._set_state(AmdState.GREETING)
            if self.state is AmdState.GREETING and self._run_silence == 0.0:
                if self._ms - self._greeting_start >= p.greeting:
                    out.append(self._decide(AnsweredBy.MACHINE, "long-greeting", self._ms))
                elif self._words > p.max_words:
                    out.append(self._decide(AnsweredBy.MACHINE, "max-words", self._ms))
            return out
        self._run_silence += FRAME_MS
        if self._run_silence >= p.between_words:
            self._in_word = False
            self._run_voice = 0.0
        if self.state is AmdState.INITIAL_SILENCE and self._run_silence >= p.initial_silence:
            out.append(self._decide(AnsweredBy.MACHINE, "initial-silence", self._ms))
        elif self.state is AmdState.GREETING and self._run_silence >= min(
            p.prompt_silence, p.after_greeting_silence
        ):
            if self._run_silence >= p.after_greeting_silence:
                out.append(self._decide(AnsweredBy.HUMAN, "silence-after-greeting", self._ms))
            elif self._prompt_answer():
                out.append(self._decide(AnsweredBy.HUMAN, "silence-after-prompt-answer", self._ms))
        elif self.state is AmdState.MACHINE_GREETING and self._run_silence >= p.end_silence:
            out.append(self._end(GreetingEndReason.SILENCE, self._ms))
        return out

    def _prompt_answer(self) -> bool:
        """The greeting so far is a prompt, short answer: begun soon after the answer,
        short and of few words (the silence after it is counted by the caller)."""
        p = self.params
        length = self._ms - self._run_silence - self._greeting_start
        return (
            self._greeting_start <= p.prompt_start
            and length <= p.prompt_greeting
            and self._words <= p.prompt_words
        )

    # -- outcomes --------------------------------------------------------------------

    def _decide(self, who: AnsweredBy, cause: str, at_ms: float) -> Decision:
        d = Decision(who, at_ms, cause)
        self.decision = d
        log.debug("amd: %s (%s) at %.0f ms", who, cause, at_ms)
        if who is AnsweredBy.MACHINE:
            self._set_state(AmdState.MACHINE_GREETING)
            self._run_silence = 0.0
        else:
            self._set_state(AmdState.DONE)
        return d

    def _end(self, reason: GreetingEndReason, at_ms: float) -> GreetingEnd:
        g = GreetingEnd(reason, at_ms)
        self.greeting_end = g
        self._set_state(AmdState.DONE)
        return g
