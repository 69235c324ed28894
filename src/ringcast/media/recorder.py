"""Recording what the callee says: silence by energy, stop rules, WAV, two-leg mix.

Pure audio (no sockets, no clock). The stream that plays a prompt
(:class:`ringcast.rtp.session.MediaSession`) feeds a :class:`Recorder` the
callee's decoded 16-bit PCM (8 kHz) packet by packet, and its digits; the
recorder answers whether the recording is over and why (DESIGN.md, "Listening
to the callee"):

- ``max`` seconds of audio kept,
- ``silence`` seconds of silence in a row (energy below :data:`SILENCE_DBFS`
  per 20 ms frame), counted from the start, so a callee who says nothing
  ends it too; the trailing silence is cut from the kept audio,
- a ``finish_on`` digit (RFC 4733, SIP INFO or in-band: the owner calls
  :meth:`Recorder.on_digit` for all three),
- the owner's :meth:`Recorder.close` (the call ended, the stream stopped).

:class:`Mixer` mixes two streams placed by their own sample positions, and
:class:`BridgeRecording` feeds it the two legs of a bridged call from the RTP
relay (positions from arrival and RTP timestamps), so a leg that loses packets
or sends none (silence suppression) stays aligned. :func:`wav_bytes` writes 8 kHz mono
16-bit PCM WAV.
"""

from __future__ import annotations

import enum
import io
import logging
import math
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ringcast.media.codecs import FRAME_SAMPLES, PTIME, SAMPLE_RATE, Pcm16

log = logging.getLogger(__name__)

SILENCE_DBFS = -40.0  # a 20 ms frame whose RMS is below this is silence (dB re full scale)
MAX_SECONDS = 3600.0  # the longest `max` accepted
DEFAULT_MAX = 60.0  # seconds
DEFAULT_SILENCE = 5.0  # seconds
BEEP_HZ = 1000.0  # the tone played before recording
BEEP_SECONDS = 0.3  # 15 packets
BEEP_LEVEL = 0.3  # linear amplitude (about -10 dBFS)
WAV_HEADER = 44  # bytes of a canonical PCM WAV header
_FULL_SCALE = 32768.0


class StopReason(enum.Enum):
    MAX = "max"
    SILENCE = "silence"
    DIGIT = "digit"
    HANGUP = "hangup"  # the owner closed it: the call or the stream ended


class RecorderState(enum.Enum):
    RECORDING = "recording"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """A playlist's ``{"record": {...}}`` item (validated by the API schema)."""

    max: float = DEFAULT_MAX  # seconds
    silence: float = DEFAULT_SILENCE  # seconds of silence that end it (0: never)
    finish_on: str = "#"  # digits that end it ("" for none)
    beep: bool = True

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | bool) -> RecordSettings:
        """From the item's value; `True` means every default. ValueError names the field."""
        if item is True:
            return cls()
        if not isinstance(item, Mapping):
            raise ValueError(f"record must be an object or true: {item!r}")
        out = cls(
            max=float(item.get("max", DEFAULT_MAX)),
            silence=float(item.get("silence", DEFAULT_SILENCE)),
            finish_on=str(item.get("finish_on", "#") or ""),
            beep=item.get("beep", True) is not False,
        )
        if not 0 < out.max <= MAX_SECONDS:
            raise ValueError(f"record.max must be from 0 to {MAX_SECONDS:g} seconds: {out.max}")
        if not 0 <= out.silence <= MAX_SECONDS:
            raise ValueError(f"record.silence must be >= 0 seconds: {out.silence}")
        return out


def frame_dbfs(pcm: Pcm16) -> float:
    """RMS level of `pcm` in dBFS (-inf for digital silence or an empty frame)."""
    if pcm.size == 0:
        return -math.inf
    x = pcm.astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / x.size)
    return 20.0 * math.log10(rms / _FULL_SCALE) if rms > 0 else -math.inf


def is_silent(pcm: Pcm16, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """A frame is silence when its energy is below `threshold_dbfs`."""
    return frame_dbfs(pcm) < threshold_dbfs


class Recorder:
    """One recording (see the module docstring). Feed it PCM and digits; it keeps
    the audio and says when to stop. Only :meth:`_set_state` changes its state."""

    def __init__(self, settings: RecordSettings, threshold_dbfs: float = SILENCE_DBFS) -> None:
        self.settings = settings
        self.threshold = threshold_dbfs
        self.state = RecorderState.RECORDING
        self.reason: StopReason | None = None
        self._chunks: list[Pcm16] = []
        self._samples = 0
        self._max_samples = round(settings.max * SAMPLE_RATE)
        self._silence_samples = round(settings.silence * SAMPLE_RATE)
        self._quiet = 0  # samples of silence in a row at the end
        self._pending = np.zeros(0, dtype=np.int16)  # less than a frame, not judged yet

    @property
    def done(self) -> bool:
        return self.state is RecorderState.DONE

    @property
    def duration(self) -> float:
        """Seconds of audio kept (trailing silence cut once done)."""
        return self._samples / SAMPLE_RATE

    def _set_state(self, new: RecorderState, reason: StopReason) -> None:
        log.debug("recorder: %s -> %s (%s)", self.state.value, new.value, reason.value)
        self.state = new
        self.reason = reason

    def feed(self, pcm: Pcm16) -> StopReason | None:
        """Take the callee's audio; the reason the recording just ended, else None."""
        if self.done:
            return None
        room = self._max_samples - self._samples
        if pcm.size > room:
            pcm = pcm[:room]
        self._chunks.append(pcm)
        self._samples += pcm.size
        if self._silence_samples:
            self._judge(pcm)
        if self.done:
            return self.reason
        if self._samples >= self._max_samples:
            self._set_state(RecorderState.DONE, StopReason.MAX)
            return self.reason
        return None

    def _judge(self, pcm: Pcm16) -> None:
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        whole = data.size - data.size % FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            frame = data[start : start + FRAME_SAMPLES]
            if is_silent(frame, self.threshold):
                self._quiet += FRAME_SAMPLES
                if self._quiet >= self._silence_samples:
                    rest = data.size - (start + FRAME_SAMPLES)  # fed, not judged
                    self._trim(self._samples - rest - self._quiet)
                    self._pending = data[:0]
                    self._set_state(RecorderState.DONE, StopReason.SILENCE)
                    return
            else:
                self._quiet = 0
        self._pending = data[whole:]

    def on_digit(self, digit: str, trim: float = 0.0) -> StopReason | None:
        """A digit from the callee: a `finish_on` digit ends the recording. `trim`:
        seconds cut from the end (an in-band tone, heard before it was recognised)."""
        if not self.done and digit and digit in self.settings.finish_on:
            if trim > 0:
                self._trim(self._samples - round(trim * SAMPLE_RATE))
            self._set_state(RecorderState.DONE, StopReason.DIGIT)
            return self.reason
        return None

    def close(self) -> StopReason:
        """The owner stops listening (the call or the stream ended)."""
        if not self.done:
            self._set_state(RecorderState.DONE, StopReason.HANGUP)
        assert self.reason is not None
        return self.reason

    def _trim(self, keep: int) -> None:
        """Keep the first `keep` samples (the trailing silence goes)."""
        keep = max(0, keep)
        pcm = self.pcm()[:keep]
        self._chunks = [pcm]
        self._samples = keep

    def pcm(self) -> Pcm16:
        """The audio kept so far, one array."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks).astype(np.int16, copy=False)]
        return self._chunks[0]


class Mixer:
    """Two (or more) streams into one: each `feed(track, pcm, at)` places samples at
    sample position `at` of its track (default: right after the track's last ones);
    `pcm()` sums the tracks, clipped to 16 bits. The owner derives `at` from the
    RTP timestamp (minus the track's first), so lost or suppressed packets leave
    silence rather than shifting the rest. `max_seconds` bounds memory."""

    def __init__(self, tracks: int = 2, max_seconds: float = MAX_SECONDS) -> None:
        if tracks < 1:
            raise ValueError("a mixer needs at least one track")
        self._limit = round(max_seconds * SAMPLE_RATE)
        self._tracks: list[np.ndarray[Any, np.dtype[np.int32]]] = [
            np.zeros(0, dtype=np.int32) for _ in range(tracks)
        ]
        self._ends = [0] * tracks  # samples written per track

    def feed(self, track: int, pcm: Pcm16, at: int | None = None) -> None:
        start = self._ends[track] if at is None else at
        if start < 0 or start >= self._limit:
            return
        end = min(start + pcm.size, self._limit)
        buf = self._tracks[track]
        if end > buf.size:
            grown = np.zeros(max(end, buf.size * 2), dtype=np.int32)
            grown[: buf.size] = buf
            buf = self._tracks[track] = grown
        buf[start:end] = pcm[: end - start]
        self._ends[track] = max(self._ends[track], end)

    @property
    def duration(self) -> float:
        return max(self._ends) / SAMPLE_RATE

    def pcm(self) -> Pcm16:
        n = max(self._ends)
        total = np.zeros(n, dtype=np.int32)
        for buf, end in zip(self._tracks, self._ends, strict=True):
            total[:end] += buf[:end]
        out: Pcm16 = np.clip(total, -32768, 32767).astype(np.int16)
        return out


class BridgeRecording:
    """Both legs of a bridged call (callee and agent) mixed into one recording.

    The RTP relay calls :meth:`feed` with each leg's decoded packet, its RTP
    timestamp and its arrival time (seconds on any monotonic clock): a leg's
    first packet is placed by its arrival after `started`, the following ones by
    their RTP timestamps from that first one (modulo 2**32; a packet from before
    the first is dropped), so loss, jitter and silence suppression keep the
    legs aligned. Pure: no clock is read here.
    """

    LEGS = 2
    reason: StopReason | None = StopReason.HANGUP  # a bridge ends when a leg hangs up

    def __init__(self, started: float, max_seconds: float = MAX_SECONDS) -> None:
        self.started = started
        self.mixer = Mixer(self.LEGS, max_seconds)
        self._origins: list[tuple[int, int] | None] = [None] * self.LEGS  # (rtp ts, sample)

    def feed(self, leg: int, pcm: Pcm16, rtp_timestamp: int, arrival: float) -> None:
        origin = self._origins[leg]
        if origin is None:
            at = max(0, round((arrival - self.started) * SAMPLE_RATE))
            origin = self._origins[leg] = (rtp_timestamp & 0xFFFFFFFF, at)
        offset = (rtp_timestamp - origin[0]) & 0xFFFFFFFF
        if offset >= 1 << 31:  # before the leg's first packet (reordered): dropped
            return
        self.mixer.feed(leg, pcm, origin[1] + offset)

    @property
    def duration(self) -> float:
        return self.mixer.duration

    def pcm(self) -> Pcm16:
        return self.mixer.pcm()


def mix(streams: Sequence[Pcm16]) -> Pcm16:
    """Sum streams that start together (the shorter padded with silence), clipped."""
    mixer = Mixer(max(1, len(streams)))
    for i, pcm in enumerate(streams):
        mixer.feed(i, pcm, 0)
    return mixer.pcm()


def wav_bytes(pcm: Pcm16, sample_rate: int = SAMPLE_RATE) -> bytes:
    """`pcm` as a mono 16-bit PCM WAV file (a canonical 44-byte header)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return out.getvalue()


def beep_samples(seconds: float = BEEP_SECONDS) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The tone played before a recording starts (float samples at 8 kHz)."""
    n = round(seconds / PTIME) * FRAME_SAMPLES
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    return (BEEP_LEVEL * np.sin(2 * np.pi * BEEP_HZ * t)).astype(np.float32)
