"""How soon can a silence rule call a person? A replay study on the AMD corpus.

    .venv/bin/python bench/amd_latency.py

The detector calls a person when a short greeting is followed by
`after_greeting_silence` (900 ms) of silence; the issue's target is a median
human decision within 1.5 s of the answer. This replays the detector's own
voice-activity decisions (MachineDetector's front end: level gate, WebRTC VAD
and tone test, frame by frame) through app_amd-style greeting rules, so a grid
of rules costs seconds instead of a corpus run each:

- the current rule (one silence for every greeting), checked against the real
  detector on the same clips (same answers, same times);
- a two-tier rule: a greeting no longer than `short` ms (and at most `words`
  words) needs only `silence` ms after it, a longer one the full 900 ms;
  chosen on the tuning half (fewest errors, then fastest), then checked on the
  held-out half;
- what bounds any silence rule here: when the humans' first utterance ends,
  and how long the machines pause after a short first phrase.
"""

from __future__ import annotations

import itertools
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
    short: float = 0.0  # a greeting this long or shorter is short
    silence: float = 900.0  # silence after a short greeting that makes a person
    words: int = 99


def replay(active: list[bool], rule: Rule) -> tuple[str, float]:
    """MachineDetector._structure's greeting rules over recorded activity (no beeps)."""
    p = DEFAULTS
    ms = run_voice = run_silence = start = 0.0
    words = 0
    in_word = greeting = False
    for a in active:
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
            if length <= rule.short and words <= rule.words:
                need = min(need, rule.silence)
            if run_silence >= need:
                return "human", ms
    return "unknown", ms


def score(rows: list[tuple[str, list[bool]]], rule: Rule) -> tuple[int, int, float]:
    """(machines called human, humans not called human, median human decision ms)."""
    out = [(truth, *replay(act, rule)) for truth, act in rows]
    m_as_h = sum(1 for t, a, _ in out if t == "machine" and a == "human")
    h_wrong = sum(1 for t, a, _ in out if t == "human" and a != "human")
    times = [ms for t, a, ms in out if t == a == "human"]
    return m_as_h, h_wrong, statistics.median(times)


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


def main() -> None:
    clips = [c for c in amd_corpus.build() if c.label != "fax"]
    data = {c.n: (c.label, activity(c)) for c in clips}
    tune = [data[c.n] for c in clips if c.half == "tune"]
    test = [data[c.n] for c in clips if c.half == "test"]
    now = Rule()
    print("rule: machines called human / humans missed / median human decision")
    print(f"  current (900 ms after any greeting): tuning {score(tune, now)}")
    print(f"    held-out {score(test, now)}")
    grid = [
        Rule(short, silence, words)
        for short, silence, words in itertools.product(
            range(400, 1600, 100), range(200, 900, 50), (1, 2, 3, 99)
        )
    ]
    scored = sorted(((score(tune, r), r) for r in grid), key=lambda s: (s[0][0] + s[0][1], s[0][2]))
    base_errors = sum(score(tune, now)[:2])
    print(
        f"two-tier rules on the tuning half, fastest at each error count (current: {base_errors}):"
    )
    best: dict[int, tuple[tuple[int, int, float], Rule]] = {}
    for s, r in scored:
        best.setdefault(s[0] + s[1], (s, r))
    for errors, (s, r) in sorted(best.items())[:8]:
        print(f"  {errors:>2} errors  {s[2]:5.0f} ms  {r}  held-out {score(test, r)}")
    pick = next((sr for sr in scored if sum(sr[0][:2]) <= base_errors), None)
    if pick is not None:
        print(f"chosen on the tuning half (no more errors than now): {pick[1]}")
        print(f"  held-out: {score(test, pick[1])} against {score(test, now)} now")
    for label in ("human", "machine"):
        rows = [first_utterance(act) for t, act in tune if t == label]
        ends = [e for _, e, _ in rows]
        lengths = [e - s for s, e, _ in rows]
        print(
            f"{label}s (tuning half): first utterance ends at median "
            f"{statistics.median(ends):.0f} ms after the answer, "
            f"lasts median {statistics.median(lengths):.0f} ms"
        )
    pauses = [
        p
        for t, act in tune
        if t == "machine"
        for s, e, p in [first_utterance(act)]
        if e - s <= 1000
    ]
    print(
        f"machines whose first phrase lasts <= 1 s: {len(pauses)}; the pause after it: "
        f"{sorted(round(p) for p in pauses if p != float('inf'))} ms"
    )


if __name__ == "__main__":
    main()
