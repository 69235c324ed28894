"""Decode audio files (WAV, MP3, OGG, FLAC; any rate and channel count) to 8 kHz mono.

libsndfile (through `soundfile`) decodes, channels are averaged to mono, and
`soxr` resamples to the codec rate. These calls block: callers run them off the
event loop (`decode_audio_async`).
"""

from __future__ import annotations

import asyncio
import io
import logging

import numpy as np
import soundfile
import soxr

from ringcast.errors import MediaError
from ringcast.media.codecs import SAMPLE_RATE, Samples

log = logging.getLogger(__name__)


def _reason(exc: Exception) -> str:
    """libsndfile's own words ("Format not recognised."), not soundfile's message,
    which names the in-memory file by its Python repr."""
    reason = getattr(exc, "error_string", None)
    return str(reason) if reason else str(exc)


def to_mono(frames: np.ndarray) -> Samples:
    """(n, channels) or (n,) float samples -> (n,) float32 mono (mean of the channels)."""
    if frames.ndim == 2:
        frames = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    return np.ascontiguousarray(frames, dtype=np.float32)


def resample(samples: Samples, rate_in: int, rate_out: int = SAMPLE_RATE) -> Samples:
    """Resample mono float32 with soxr (high quality); no-op when the rates match."""
    if rate_in == rate_out or samples.size == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    out = soxr.resample(samples, rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def decode_audio(
    data: bytes,
    *,
    rate: int = SAMPLE_RATE,
    max_duration: float | None = None,
    source: str = "audio",
) -> Samples:
    """Decode a whole audio file held in memory to mono float32 at `rate`.

    Raises MediaError naming `source` when the bytes are not a supported audio
    file, or when the file is longer than `max_duration` seconds (checked from
    the header before the full decode where the format states its length).
    """
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise MediaError(
            f"{source} is not audio that can be decoded (WAV, MP3, OGG, FLAC): {_reason(exc)}"
        ) from exc
    if info.samplerate <= 0 or info.channels <= 0:
        raise MediaError(f"{source} has no audio (rate {info.samplerate}, {info.channels} ch)")
    if max_duration is not None and info.frames > 0 and info.duration > max_duration:
        raise MediaError(
            f"{source} is {info.duration:.1f} s long, more than max_duration {max_duration:g} s"
        )
    try:
        frames, file_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise MediaError(f"{source} could not be decoded: {_reason(exc)}") from exc
    mono = to_mono(frames)
    if max_duration is not None and mono.size / file_rate > max_duration:
        raise MediaError(
            f"{source} is {mono.size / file_rate:.1f} s long, "
            f"more than max_duration {max_duration:g} s"
        )
    if mono.size == 0:
        raise MediaError(f"{source} contains no audio samples")
    log.debug(
        "decoded %s: %s Hz, %s ch, %.2f s", source, file_rate, info.channels, mono.size / file_rate
    )
    return resample(mono, int(file_rate), rate)


async def decode_audio_async(
    data: bytes,
    *,
    rate: int = SAMPLE_RATE,
    max_duration: float | None = None,
    source: str = "audio",
) -> Samples:
    """`decode_audio` in a worker thread, so the event loop keeps its 20 ms pace."""
    return await asyncio.to_thread(
        decode_audio, data, rate=rate, max_duration=max_duration, source=source
    )
