"""Answering-machine detection and in-band DTMF, measured on labelled synthetic sets.

    .venv/bin/python bench/amd.py            # held-out half: ringcast and app_amd, DTMF
    .venv/bin/python bench/amd.py --tune     # grid search on the tuning half only

The AMD corpus is built by tests/amd_corpus.py (synthetic: TTS voices, line
filter, noise, G.711; see its docstring) and split by clip number: even clips
tune, odd clips are reported. In the same run and on the same clips, the
baseline is a reimplementation of Asterisk's app_amd algorithm (apps/app_amd.c:
the frame loop of isAnsweringMachine with its default parameters, and the
silence test of main/dsp.c: a frame is silent when its mean absolute sample is
below 256). It has no beep or fax detection, and reports NOTSURE as `unknown`.

The DTMF set: every key, tone lengths 40-200 ms (and 20 ms ones that must be
rejected), levels -3 to -30 dBm0 per tone, twist -6 to +6 dB, noise at 12-30
dB SNR; talk-off is every speech clip of the AMD corpus (no digit in any).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import amd_corpus  # noqa: E402

from ringcast.media.amd import (  # noqa: E402
    AmdParams,
    AnsweredBy,
    Decision,
    GreetingEnd,
    GreetingEndReason,
    MachineDetector,
)
from ringcast.media.codecs import get_codec  # noqa: E402
from ringcast.media.inband_dtmf import (  # noqa: E402
    COLUMNS,
    FULL_SCALE_DBM0,
    KEYS,
    ROWS,
    DtmfParams,
    InbandDtmfDetector,
)

FRAME = 160
CHUNK = 640  # samples fed at once, as the dialer does (AMD_BATCH packets)
LABELS = ("human", "machine", "fax")
ANSWERS = ("human", "machine", "fax", "unknown")


# --- the app_amd baseline ---------------------------------------------------------------


class AppAmd:
    """Asterisk app_amd's decision loop, default amd.conf values, 20 ms frames."""

    initial_silence = 2500
    greeting = 1500
    after_greeting_silence = 800
    total_analysis_time = 5000
    min_word_length = 100
    between_words_silence = 50
    max_words = 2
    silence_threshold = 256
    max_word_length = 5000

    def __init__(self) -> None:
        self.total = 0
        self.dsp_silence = 0  # main/dsp.c totalsilence
        self.voice = 0
        self.consecutive_voice = 0
        self.silence = 0
        self.words = 0
        self.in_word = True  # STATE_IN_WORD, as app_amd starts
        self.in_initial_silence = True
        self.in_greeting = False
        self.result: tuple[str, float] | None = None

    def frame(self, pcm: npt.NDArray[np.int16]) -> tuple[str, float] | None:
        ms = len(pcm) // 8
        self.total += ms
        if self.total >= self.total_analysis_time:
            return self._done("unknown")
        silent = int(np.abs(pcm.astype(np.int32)).mean()) < self.silence_threshold
        self.dsp_silence = self.dsp_silence + ms if silent else 0
        if silent:
            self.silence = self.dsp_silence
            if self.silence >= self.between_words_silence:
                self.in_word = False
                self.consecutive_voice = 0
            if self.in_initial_silence and self.silence >= self.initial_silence:
                return self._done("machine")
            if self.silence >= self.after_greeting_silence and self.in_greeting:
                return self._done("human")
            return None
        self.consecutive_voice += ms
        self.voice += ms
        if self.consecutive_voice >= self.min_word_length and not self.in_word:
            self.words += 1
            self.in_word = True
        if self.consecutive_voice >= self.max_word_length:
            return self._done("machine")
        if self.words > self.max_words:
            return self._done("machine")
        if self.in_greeting and self.voice >= self.greeting:
            return self._done("machine")
        if self.voice >= self.min_word_length:
            self.silence = 0
        if self.consecutive_voice >= self.min_word_length and not self.in_greeting:
            self.in_initial_silence = False
            self.in_greeting = True
        return None

    def _done(self, answer: str) -> tuple[str, float]:
        self.result = (answer, float(self.total))
        return self.result


# --- running detectors over clips -------------------------------------------------------


@dataclass
class Outcome:
    truth: str
    answer: str
    at_ms: float
    end: GreetingEnd | None
    clip: amd_corpus.Clip


def run_ringcast(
    clips: Iterable[amd_corpus.Clip], params: AmdParams, timeout: float = 6.0
) -> tuple[list[Outcome], float]:
    """Every clip through MachineDetector; also the mean CPU seconds per 20 ms frame."""
    out = []
    frames = 0
    cpu = 0.0
    for clip in clips:
        det = MachineDetector(timeout, params)
        decision: Decision | None = None
        end: GreetingEnd | None = None
        t0 = time.process_time()
        for i in range(0, len(clip.pcm) - CHUNK + 1, CHUNK):
            frames += CHUNK // FRAME
            for action in det.feed(clip.pcm[i : i + CHUNK]):
                if isinstance(action, Decision):
                    decision = action
                else:
                    end = action
            if det.done:
                break
        cpu += time.process_time() - t0
        assert decision is not None
        out.append(Outcome(clip.label, str(decision.answered_by), decision.at_ms, end, clip))
    return out, cpu / max(frames, 1)


def run_app_amd(clips: Iterable[amd_corpus.Clip]) -> list[Outcome]:
    out = []
    for clip in clips:
        amd = AppAmd()
        result: tuple[str, float] | None = None
        for i in range(0, len(clip.pcm) - FRAME + 1, FRAME):
            result = amd.frame(clip.pcm[i : i + FRAME])
            if result is not None:
                break
        answer, at = result or ("unknown", float(amd.total))
        out.append(Outcome(clip.label, answer, at, None, clip))
    return out


def accuracy(outcomes: list[Outcome]) -> float:
    return sum(o.truth == o.answer for o in outcomes) / len(outcomes)


def beep_hits(outcomes: list[Outcome], within_ms: float = 100.0) -> tuple[int, int]:
    """(machine clips with a beep whose greeting end was put at the beep's end, all such)."""
    with_beep = [o for o in outcomes if o.clip.beep_end_ms is not None]
    hits = sum(
        1
        for o in with_beep
        if o.end is not None
        and o.end.reason is GreetingEndReason.BEEP
        and abs(o.end.at_ms - (o.clip.beep_end_ms or 0)) <= within_ms
    )
    return hits, len(with_beep)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return float(np.percentile(xs, q))


def report(name: str, outcomes: list[Outcome]) -> None:
    print(f"\n{name}: {len(outcomes)} held-out clips, accuracy {100 * accuracy(outcomes):.1f} %")
    counts = Counter((o.truth, o.answer) for o in outcomes)
    print("  truth \\ answer " + "".join(f"{a:>9}" for a in ANSWERS))
    for t in LABELS:
        print(f"  {t:<15}" + "".join(f"{counts[(t, a)]:>9}" for a in ANSWERS))
    for label in LABELS:
        hit = counts[(label, label)]
        called = sum(1 for o in outcomes if o.answer == label)
        actual = sum(1 for o in outcomes if o.truth == label)
        precision = f"{100 * hit / called:5.1f} %" if called else "    —"
        print(
            f"  {label:<8} precision {precision} ({hit}/{called}), "
            f"recall {100 * hit / actual:5.1f} % ({hit}/{actual})"
        )
    for t in ("human", "machine"):
        times = [o.at_ms for o in outcomes if o.truth == t and o.answer == t]
        print(
            f"  decision time, {t}s decided right: median {_pct(times, 50):.0f} ms, "
            f"p95 {_pct(times, 95):.0f} ms"
        )


def report_greeting_end(outcomes: list[Outcome]) -> None:
    hits, n = beep_hits(outcomes)
    print(f"  beep located within 100 ms: {hits}/{n} machine clips with a beep")
    errs = [
        o.end.at_ms - (o.clip.beep_end_ms or 0)
        for o in outcomes
        if o.end is not None and o.end.reason is GreetingEndReason.BEEP and o.clip.beep_end_ms
    ]
    if errs:
        print(
            f"  beep-end offset (found - true): median {_pct(errs, 50):+.0f} ms, "
            f"max |error| {max(abs(e) for e in errs):.0f} ms"
        )
    no_beep = [o for o in outcomes if o.truth == "machine" and o.clip.beep_end_ms is None]
    late = [
        o.end.at_ms - (o.clip.greeting_end_ms or 0)
        for o in no_beep
        if o.end is not None and o.end.reason is GreetingEndReason.SILENCE
    ]
    early = sum(1 for x in late if x < 0)
    print(
        f"  machines without a beep: {len(late)}/{len(no_beep)} ended by silence, "
        f"median {_pct(late, 50):.0f} ms after the last word, {early} before it"
    )
    reasons = Counter(
        str(o.end.reason) if o.end else "-" for o in outcomes if o.answer == "machine"
    )
    print(f"  greeting ends: {dict(reasons)}")


# --- tuning ------------------------------------------------------------------------------

GRID: dict[str, list[Any]] = {
    "greeting": [1300.0, 1500.0, 1700.0],
    "after_greeting_silence": [600.0, 700.0, 800.0, 900.0],
    "max_words": [4, 5, 6],
    "vad_mode": [2, 3],
}


def tune(clips: list[amd_corpus.Clip]) -> None:
    base = AmdParams()
    results = []
    keys = list(GRID)
    for values in itertools.product(*(GRID[k] for k in keys)):
        params = replace(base, **dict(zip(keys, values, strict=True)))
        outcomes, _ = run_ringcast(clips, params)
        human_ms = [o.at_ms for o in outcomes if o.truth == o.answer == "human"]
        results.append((accuracy(outcomes), -statistics.median(human_ms or [0]), values))
    results.sort(reverse=True)
    print("tuning half: best parameter sets (accuracy, human median ms)")
    for acc, neg_ms, values in results[:10]:
        print(f"  {100 * acc:.1f} %  {-neg_ms:.0f} ms  {dict(zip(keys, values, strict=True))}")


# --- DTMF ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToneClip:
    n: int
    key: str
    ms: float
    level: float  # dBm0 of the low tone
    twist: float  # dB, high tone minus low tone
    snr: float | None
    pcm: npt.NDArray[np.int16]


def _dbm0_amp(dbm0: float) -> float:
    return 32767.0 * 10 ** ((dbm0 - FULL_SCALE_DBM0) / 20)


def tone_set() -> list[ToneClip]:
    rng = np.random.default_rng(4733)
    codec = get_codec("PCMU")
    out = []
    keys = [k for row in KEYS for k in row]
    n = 0
    for ms in (20, 40, 50, 60, 80, 100, 150, 200):
        for level in (-3.0, -10.0, -20.0, -25.0, -30.0):
            for twist in (-6.0, -3.0, 0.0, 3.0):
                for snr in (None, 30.0, 20.0, 12.0):
                    key = keys[n % 16]
                    r, c = next((i, row.index(key)) for i, row in enumerate(KEYS) if key in row)
                    t = np.arange(int(ms * 8)) / 8000
                    lo = _dbm0_amp(level) * np.sin(2 * np.pi * ROWS[r] * t + rng.uniform(0, 6))
                    hi = _dbm0_amp(level + twist) * np.sin(
                        2 * np.pi * COLUMNS[c] * t + rng.uniform(0, 6)
                    )
                    pad = np.zeros(int(rng.integers(400, 1200)))
                    x = np.concatenate([pad, lo + hi, np.zeros(1600)])
                    if snr is not None:
                        sig = np.sqrt(np.mean((lo + hi) ** 2))
                        x = x + rng.standard_normal(len(x)) * sig / 10 ** (snr / 20)
                    pcm16 = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
                    pcm = codec.decode(codec.encode(pcm16))
                    out.append(ToneClip(n, key, ms, level, twist, snr, pcm))
                    n += 1
    return out


def detect_digits(pcm: npt.NDArray[np.int16], params: DtmfParams) -> str:
    det = InbandDtmfDetector(params)
    return "".join(d.digit for i in range(0, len(pcm), FRAME) for d in det.feed(pcm[i : i + FRAME]))


def dtmf_bench(corpus: list[amd_corpus.Clip], half: Callable[[int], bool]) -> None:
    params = DtmfParams()
    tones = [c for c in tone_set() if half(c.n // 3)]  # n cycles the SNRs: mix the halves
    valid = [c for c in tones if c.ms >= 40]
    short = [c for c in tones if c.ms < 40]
    got = {c.n: detect_digits(c.pcm, params) for c in tones}
    ok = sum(got[c.n] == c.key for c in valid)
    print(f"\nin-band DTMF ({len(tones)} tone clips of this half, G.711 µ-law)")
    print(
        f"  detected exactly once, 40-200 ms tones: {ok}/{len(valid)} "
        f"= {100 * ok / len(valid):.1f} %"
    )
    for ms in sorted({c.ms for c in valid}):
        sub = [c for c in valid if c.ms == ms]
        hit = sum(got[c.n] == c.key for c in sub)
        print(f"    {ms:>4.0f} ms: {hit}/{len(sub)}")
    for snr in (None, 30.0, 20.0, 12.0):
        sub = [c for c in valid if c.snr == snr]
        hit = sum(got[c.n] == c.key for c in sub)
        print(f"    SNR {snr or 'clean'}: {hit}/{len(sub)}")
    wrong = sum(1 for c in valid if got[c.n] and got[c.n] != c.key)
    print(f"  wrong or extra digits on valid tones: {wrong}")
    rejected = sum(1 for c in short if not got[c.n])
    print(f"  20 ms tones rejected (Q.24: too short): {rejected}/{len(short)}")
    speech = [c for c in corpus if c.label != "fax" and half(c.n)]
    seconds = sum(len(c.pcm) for c in speech) / 8000
    false = sum(len(detect_digits(c.pcm, params)) for c in speech)
    print(
        f"  talk-off: {false} digits in {seconds / 60:.0f} min of speech clips "
        f"({len(speech)} clips with noise)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tune", action="store_true", help="grid search on the tuning half")
    args = parser.parse_args()
    t0 = time.perf_counter()
    clips = amd_corpus.build()
    print(f"corpus: {len(clips)} synthetic clips ({time.perf_counter() - t0:.1f} s to load/build)")
    if args.tune:
        tune([c for c in clips if c.half == "tune"])
        dtmf_bench(clips, lambda n: n % 2 == 0)
        return
    test = [c for c in clips if c.half == "test"]
    print(f"held-out half: {Counter(c.label for c in test)}")
    mine, cpu = run_ringcast(test, AmdParams())
    report("ringcast MachineDetector", mine)
    report_greeting_end(mine)
    print(f"  CPU per 20 ms frame (fed 80 ms at a time, as in a call): {cpu * 1e6:.1f} µs")
    base = run_app_amd(test)
    report("app_amd baseline (default parameters)", base)
    dtmf_bench(clips, lambda n: n % 2 == 1)
    _ = AnsweredBy  # the answers printed are its values


if __name__ == "__main__":
    main()
