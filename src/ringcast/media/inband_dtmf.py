"""In-band DTMF: digits found in received audio (ITU-T Q.23 tones, Q.24 reception rules).

A pure detector, no sockets: 16-bit PCM at 8 kHz in (`feed`), digits out.
The audio is cut in blocks of `BLOCK` samples; each block gets the power at
the eight Q.23 frequencies (a Goertzel filter each, done as one small matrix
product) and passes as a digit only when

- the strongest row and the strongest column are each at least
  `min_level_dbm0` (Q.24 level, per frequency),
- each stands `relative_peak_db` above the others of its group,
- the twist (row against column level) is within `normal_twist_db` (row
  louder, the usual line tilt) or `reverse_twist_db` (column louder),
- the two tones hold at least `tone_ratio` of the block's energy (speech,
  spread over many frequencies, fails here: talk-off).

Timing (Q.24 §3): a digit counts after `HITS_TO_START` consecutive blocks agree
(a tone shorter than about 25 ms never does), ends after `MISSES_TO_END`
blocks without it (a break under ~13 ms is bridged), and the same digit
counts again only after it ended. Where Q.24 leaves values to administrations
the defaults follow the AT&T/Bellcore column (8 dB normal, 4 dB reverse twist).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000  # Hz
BLOCK = 102  # samples per analysis block (12.75 ms at 8 kHz; as spandsp and Asterisk)
HITS_TO_START = 2  # consecutive blocks with the same digit before it counts
MISSES_TO_END = 2  # consecutive blocks without it before it has ended
ROWS = (697.0, 770.0, 852.0, 941.0)  # Hz, ITU-T Q.23 low group
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)  # Hz, high group
KEYS = ("123A", "456B", "789C", "*0#D")  # KEYS[row][column]
FULL_SCALE_DBM0 = 3.17  # dBm0 of a full-scale 16-bit sine in G.711 (G.711 table 5)

_t = np.arange(BLOCK, dtype=np.float64) / SAMPLE_RATE
_freqs = np.array(ROWS + COLUMNS)
# cos and sin at the eight frequencies: x @ _BASIS gives the real and imaginary parts
_BASIS = np.concatenate(
    [np.cos(2 * np.pi * np.outer(_t, _freqs)), np.sin(2 * np.pi * np.outer(_t, _freqs))], axis=1
)


@dataclass(frozen=True, slots=True)
class DtmfParams:
    """Acceptance rules; the defaults were tuned on the tuning half of bench/amd.py's set."""

    min_level_dbm0: float = -36.0  # per frequency
    relative_peak_db: float = 8.0  # over the second strongest of the same group
    normal_twist_db: float = 8.0  # row (low group) louder by at most
    reverse_twist_db: float = 6.0  # column (high group) louder by at most
    tone_ratio: float = 0.75  # share of the block's energy in the two tones


@dataclass(frozen=True, slots=True)
class Digit:
    """One detected digit and when it was recognised (ms of audio fed)."""

    digit: str
    at_ms: float


def _power_threshold(dbm0: float) -> float:
    """Mean tone power (per sample, 16-bit units) of a sine at `dbm0`."""
    amplitude = 32767.0 * 10 ** ((dbm0 - FULL_SCALE_DBM0) / 20)
    return amplitude * amplitude / 2


class InbandDtmfDetector:
    """Q.24 DTMF receiver over a stream of PCM (see the module docstring)."""

    def __init__(self, params: DtmfParams | None = None) -> None:
        self.params = params or DtmfParams()
        p = self.params
        self._min_power = _power_threshold(p.min_level_dbm0)
        self._peak = 10 ** (p.relative_peak_db / 10)
        self._normal = 10 ** (p.normal_twist_db / 10)
        self._reverse = 10 ** (p.reverse_twist_db / 10)
        self._buf = np.zeros(0, dtype=np.float64)
        self._samples = 0  # samples analysed so far
        self._candidate: str | None = None  # the digit of the last block(s)
        self._hits = 0
        self._current: str | None = None  # the digit sounding now (already reported)
        self._misses = 0

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[Digit]:
        """Analyse more audio; the digits that began in it."""
        buf = np.concatenate((self._buf, pcm.astype(np.float64))) if len(self._buf) else pcm
        n = len(buf) // BLOCK
        out: list[Digit] = []
        if n:
            blocks = np.asarray(buf[: n * BLOCK], dtype=np.float64).reshape(n, BLOCK)
            for key in self._classify(blocks):
                self._samples += BLOCK
                digit = self._step(key)
                if digit is not None:
                    out.append(Digit(digit, self._samples * 1000 / SAMPLE_RATE))
        self._buf = np.asarray(buf[n * BLOCK :], dtype=np.float64)
        return out

    def _classify(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        """The digit each block shows, or None (level, peak, twist and ratio rules)."""
        n = len(blocks)
        proj = blocks @ _BASIS  # (n, 16)
        proj *= proj
        power = (proj[:, :8] + proj[:, 8:]) * (2.0 / BLOCK**2)  # mean power per tone
        rows, cols = power[:, :4], power[:, 4:]
        pr, pc = rows.max(axis=1), cols.max(axis=1)
        energy = np.einsum("ij,ij->i", blocks, blocks) / BLOCK  # mean power of the block
        # the cheap tests first: most audio (speech, silence) fails them and stops here
        ok = (pr + pc >= energy * self.params.tone_ratio) & (np.minimum(pr, pc) >= self._min_power)
        if not ok.any():
            return [None] * n
        r = rows.argmax(axis=1)
        c = cols.argmax(axis=1)
        rows2 = np.sort(rows, axis=1)[:, -2]
        cols2 = np.sort(cols, axis=1)[:, -2]
        ok &= (
            (pr >= rows2 * self._peak)
            & (pc >= cols2 * self._peak)
            & (pr <= pc * self._normal)
            & (pc <= pr * self._reverse)
        )
        return [KEYS[r[i]][c[i]] if ok[i] else None for i in range(n)]

    def _step(self, key: str | None) -> str | None:
        """Q.24 timing over block verdicts: returns a digit when one begins."""
        if key is not None and key == self._current:
            self._misses = 0
            return None
        if self._current is not None:
            self._misses += 1
            if self._misses < MISSES_TO_END:
                return None
            self._current = None
        if key is None:
            self._candidate, self._hits = None, 0
            return None
        if key == self._candidate:
            self._hits += 1
        else:
            self._candidate, self._hits = key, 1
        if self._hits >= HITS_TO_START:
            self._current, self._misses = key, 0
            self._candidate, self._hits = None, 0
            return key
        return None
