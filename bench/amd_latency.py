"""How soon can a rule call a person? A replay study on the AMD corpus.

    .venv/bin/python bench/amd_latency.py [--pitch]

The issue's target is a median human decision within 1.5 s of the answer.
This replays the detector's own voice-activity decisions (MachineDetector's
front end: level gate, WebRTC VAD and tone test, frame by frame) through
app_amd-style greeting rules, so a grid of rules costs seconds instead of a
corpus run each:

- the detector's rule (checked against the real detector in bench/amd.py): a
  greeting begun within `start` ms of the answer, no longer than `short` ms and
  of at most `words` words needs `silence` ms of silence after it, any other
  greeting 900 ms; and the rule before it (900 ms after any greeting);
- a grid over (start, short, silence, words), `start` = any being the plain
  two-tier rule, chosen on the tuning half (fewest errors, then fastest, then
  the narrowest rule), then checked on the held-out half;
- with `--pitch`: the same with a question-intonation cue (the pitch of the
  greeting's last voiced frames above its median, by normalised
  autocorrelation) allowing a still shorter silence;
- what bounds any rule that waits for silence: when the humans' last word
  ends, and how long the machines pause after a short first phrase.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import amd_corpus  # noqa: E402

from ringcast.media.amd import FRAME_MS, Action, AmdParams, MachineDetector  # noqa: E402

SECONDS = 6.0  # the default detection timeout
DEFAULTS = AmdParams()
NEVER = AmdParams(
    initial_silence=1e9,
    greeting=1e9,
    after_greeting_silence=1e9,
    max_words=10**9,
    min_beep=1e9,
    cng=1e9,
    ced=1e9,
)


class _Recorder(MachineDetector):
    """The detector's front end only: which frames it hears as voice (or tone)."""

    def __init__(self) -> None:
        super().__init__(SECONDS, NEVER)
        self.active: list[bool] = []

    def _structure(self, active: bool) -> list[Action]:
        self.active.append(active)
        return []


def activity(clip: amd_corpus.Clip) -> list[bool]:
    rec = _Recorder()
    pcm = clip.pcm[: int(SECONDS * 8000)]
    for i in range(0, len(pcm) - 639, 640):
        rec.feed(pcm[i : i + 640])
    return rec.active


@dataclass(frozen=True)
class Rule:
    start: float = 0.0  # a greeting begun this soon after the answer ...
    short: float = 0.0  # ... and this long or shorter is short
    silence: float = 900.0  # silence after a short greeting that makes a person
    words: int = 99
    rise: float = math.inf  # with --pitch: a final pitch rise of this many semitones ...
    rise_silence: float = 900.0  # ... needs only this much silence


BEFORE = Rule()  # the detector before the prompt-answer rule: 900 ms after any greeting
NOW = Rule(
    DEFAULTS.prompt_start,
    DEFAULTS.prompt_greeting,
    DEFAULTS.prompt_silence,
    DEFAULTS.prompt_words,
)


def replay(active: list[bool], rule: Rule, rises: list[float] | None = None) -> tuple[str, float]:
    """MachineDetector._structure's greeting rules over recorded activity (no beeps)."""
    p = DEFAULTS
    ms = run_voice = run_silence = start = 0.0
    words = 0
    in_word = greeting = False
    for i, a in enumerate(active):
        ms += FRAME_MS
        if a:
            run_voice += FRAME_MS
            if run_voice >= p.min_word:
                run_silence = 0.0
                if not in_word:
                    in_word = True
                    words += 1
                if not greeting:
                    greeting, start = True, ms - run_voice
            if greeting and run_silence == 0.0:
                if ms - start >= p.greeting or words > p.max_words:
                    return "machine", ms
            continue
        run_silence += FRAME_MS
        if run_silence >= p.between_words:
            in_word, run_voice = False, 0.0
        if not greeting and run_silence >= p.initial_silence:
            return "machine", ms
        if greeting:
            length = ms - run_silence - start
            need = p.after_greeting_silence
            if start <= rule.start and length <= rule.short and words <= rule.words:
                need = min(need, rule.silence)
                if rises is not None and run_silence >= rule.rise_silence:
                    end = i + 1 - round(run_silence / FRAME_MS)  # first silent frame
                    if rises[end] >= rule.rise:
                        return "human", ms
            if run_silence >= need:
                return "human", ms
    return "unknown", ms


Row = tuple[str, list[bool], list[float] | None]  # label, activity, pitch rises


def score(rows: list[Row], rule: Rule) -> tuple[int, int, float]:
    """(machines called human, humans not called human, median human decision ms)."""
    out = [(truth, *replay(act, rule, rises)) for truth, act, rises in rows]
    m_as_h = sum(1 for t, a, _ in out if t == "machine" and a == "human")
    h_wrong = sum(1 for t, a, _ in out if t == "human" and a != "human")
    times = [ms for t, a, ms in out if t == a == "human"]
    return m_as_h, h_wrong, statistics.median(times)


def pitch(pcm: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per 20 ms frame, (f0 Hz, normalised autocorrelation at it) over the frame and
    the one before (40 ms), lags 20-114 samples (70-400 Hz)."""
    x = np.zeros((frames, 320))
    y = np.concatenate((np.zeros(160), pcm[: frames * 160].astype(np.float64)))
    for i in range(frames):
        x[i] = y[i * 160 : i * 160 + 320]
    x -= x.mean(axis=1, keepdims=True)
    head = x[:, :200]
    e0 = np.einsum("ij,ij->i", head, head) + 1e-9
    lags = range(20, 115)
    r = np.stack(
        [
            np.einsum("ij,ij->i", head, x[:, k : k + 200])
            / np.sqrt(e0 * (np.einsum("ij,ij->i", x[:, k : k + 200], x[:, k : k + 200]) + 1e-9))
            for k in lags
        ],
        axis=1,
    )
    best = r.argmax(axis=1)
    return 8000.0 / (best + 20), r[np.arange(frames), best]


def rises(pcm: np.ndarray, frames: int, look: int = 15) -> list[float]:
    """For each frame e, the semitones by which the last 3 voiced frames of the 15
    before e sit above the earlier ones (-inf when too few are voiced); voiced:
    autocorrelation > 0.7, 70-400 Hz, within 7 semitones of the median so far."""
    f0, corr = pitch(pcm, frames)
    voiced = (corr > 0.7) & (f0 >= 70) & (f0 <= 400)
    semis = 12 * np.log2(f0)
    out = [-math.inf] * (frames + 1)
    for e in range(1, frames + 1):
        k = np.flatnonzero(voiced[:e])
        if len(k) < 5:
            continue
        ref = float(np.median(semis[k]))
        k = k[np.abs(semis[k] - ref) < 7]
        recent = semis[k[k >= e - look]]
        if len(recent) >= 4:
            out[e] = float(np.median(recent[-3:]) - np.median(recent[:-3]))
    return out


def first_utterance(active: list[bool], gap_ms: float = 300.0) -> tuple[float, float, float]:
    """(start, end, the pause after it) of the first run of voice, ms."""
    frames = np.asarray(active + [False], dtype=bool)
    on = np.flatnonzero(frames)
    if not len(on):
        return 0.0, 0.0, 0.0
    gaps = np.diff(on) - 1
    cut = np.flatnonzero(gaps * FRAME_MS >= gap_ms)
    last = int(on[cut[0]]) if len(cut) else int(on[-1])
    pause = float(gaps[cut[0]] * FRAME_MS) if len(cut) else float("inf")
    return float(on[0] * FRAME_MS), float((last + 1) * FRAME_MS), pause


def _best(scored: list[tuple[tuple[int, int, float], Rule]], test: list[Row]) -> None:
    best: dict[int, tuple[tuple[int, int, float], Rule]] = {}
    for s, r in scored:
        best.setdefault(s[0] + s[1], (s, r))
    for errors, (s, r) in sorted(best.items())[:8]:
        print(f"  {errors:>2} errors  {s[2]:5.0f} ms  {r}  held-out {score(test, r)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pitch", action="store_true", help="also the pitch-rise cue")
    args = parser.parse_args()
    clips = [c for c in amd_corpus.build() if c.label != "fax"]
    data: dict[int, Row] = {}
    for c in clips:
        act = activity(c)
        data[c.n] = (c.label, act, rises(c.pcm, len(act)) if args.pitch else None)
    tune = [data[c.n] for c in clips if c.half == "tune"]
    test = [data[c.n] for c in clips if c.half == "test"]
    print("rule: machines called human / humans missed / median human decision")
    for name, rule in (("before: 900 ms after any greeting", BEFORE), (f"now: {NOW}", NOW)):
        print(f"  {name}: tuning {score(tune, rule)}, held-out {score(test, rule)}")
    anytime = 1e9
    grid = [
        Rule(start, short, silence, words)
        for start, short, silence, words in itertools.product(
            (800, 1000, 1200, 1400, anytime),
            range(600, 1500, 100),
            range(400, 900, 50),
            (1, 2, 3, 99),
        )
    ]
    # fewest errors, then fastest, then the narrowest rule (least likely to fire)
    scored = sorted(
        ((score(tune, r), r) for r in grid),
        key=lambda s: (s[0][0] + s[0][1], s[0][2], s[1].start, s[1].short, s[1].words),
    )
    base_errors = sum(score(tune, BEFORE)[:2])
    print(f"rules on the tuning half, fastest at each error count (before: {base_errors}):")
    _best(scored, test)
    pick = next(sr for sr in scored if sum(sr[0][:2]) <= base_errors)
    print(f"chosen on the tuning half (no more errors than before): {pick[1]}")
    print(f"  held-out: {score(test, pick[1])} against {score(test, BEFORE)} before")
    two_tier = [sr for sr in scored if sr[1].start == anytime]
    print("without the start cue (plain two-tier rules), fastest at each error count:")
    _best(two_tier, test)
    if args.pitch:
        grid = [
            Rule(NOW.start, NOW.short, NOW.silence, NOW.words, rise, rise_silence)
            for rise, rise_silence in itertools.product(
                (0.5, 1.0, 1.5, 2.0, 3.0, 4.0), range(140, 700, 60)
            )
        ]
        scored = sorted(
            ((score(tune, r), r) for r in grid),
            key=lambda s: (s[0][0] + s[0][1], s[0][2], -s[1].rise, -s[1].rise_silence),
        )
        print("with a final pitch rise needing less silence, on top of the rule now:")
        _best(scored, test)
    for label in ("human", "machine"):
        rows = [first_utterance(act) for t, act, _ in tune if t == label]
        ends = [e for _, e, _ in rows]
        lengths = [e - s for s, e, _ in rows]
        print(
            f"{label}s (tuning half): first utterance ends at median "
            f"{statistics.median(ends):.0f} ms after the answer, "
            f"lasts median {statistics.median(lengths):.0f} ms"
        )
    for name, rows in (("tuning", tune), ("held-out", test)):
        ends = [last_word(act) for t, act, _ in rows if t == "human"]
        bound = ", ".join(
            f"+{wait} ms: {statistics.median(e + wait for e in ends):.0f}" for wait in (0, 200, 400)
        )
        print(
            f"bound ({name}): median human decision if every human were called the "
            f"instant its last word ends plus a wait: {bound} ms"
        )
    pauses = [
        p
        for t, act, _ in tune
        if t == "machine"
        for s, e, p in [first_utterance(act)]
        if e - s <= 1000
    ]
    print(
        f"machines whose first phrase lasts <= 1 s: {len(pauses)}; the pause after it: "
        f"{sorted(round(p) for p in pauses if p != float('inf'))} ms"
    )


def last_word(active: list[bool]) -> float:
    """When the voice heard before the first 900 ms of silence ends (ms): the earliest
    a rule that waits for silence after the greeting could call a person."""
    frames = DEFAULTS.after_greeting_silence / FRAME_MS
    run = 0
    end = 0.0
    for i, a in enumerate(active):
        if a:
            run, end = 0, (i + 1) * FRAME_MS
        else:
            run += 1
            if end and run >= frames:
                return end
    return end


if __name__ == "__main__":
    main()
