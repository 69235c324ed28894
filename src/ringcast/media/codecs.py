"""Narrowband audio codecs behind one tiny interface, keyed by name and payload type.

G.711 (ITU-T G.711, RFC 3551 §4.5.14) is done with numpy lookup tables: the
encoder is a 65,536-entry table indexed by the 16-bit sample, so a whole prompt
is encoded in one vectorised take. Payloads are cut in `FRAME_SAMPLES` pieces.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000  # Hz, the audio rate of every codec here
PTIME = 0.020  # seconds per RTP packet
FRAME_SAMPLES = 160  # samples per 20 ms frame at 8 kHz

Samples = npt.NDArray[np.float32]
Pcm16 = npt.NDArray[np.int16]


def float_to_pcm16(samples: Samples) -> Pcm16:
    """Float samples in [-1, 1] to 16-bit PCM, clipping what is outside."""
    scaled = np.clip(np.asarray(samples, dtype=np.float32) * 32768.0, -32768.0, 32767.0)
    pcm: Pcm16 = np.rint(scaled).astype(np.int16)
    return pcm


def pcm16_to_float(pcm: Pcm16) -> Samples:
    return (np.asarray(pcm, dtype=np.float32) / 32768.0).astype(np.float32)


class Codec:
    """One audio codec: name, static payload type, clock rate and whole-buffer coding."""

    name: ClassVar[str]
    payload_type: ClassVar[int]
    clock_rate: ClassVar[int] = 8000  # Hz, the RTP timestamp clock (RFC 3551 table 4)
    sample_rate: ClassVar[int] = SAMPLE_RATE  # Hz, the audio rate encode() expects
    bytes_per_frame: ClassVar[int] = FRAME_SAMPLES  # payload bytes per 20 ms frame
    silence_byte: ClassVar[int]

    def encode(self, pcm: Pcm16) -> bytes:
        """Encode 16-bit PCM at `sample_rate` (whole prompt at once)."""
        raise NotImplementedError

    def decode(self, payload: bytes) -> Pcm16:
        """Decode a payload back to 16-bit PCM."""
        raise NotImplementedError

    def silence_frame(self) -> bytes:
        return bytes([self.silence_byte]) * self.bytes_per_frame


# --- G.711 reference conversions (ITU-T G.711; the classic Sun g711.c) ------------------

_ULAW_BIAS = 0x84


def _ulaw_decode_table() -> Pcm16:
    u = np.arange(256, dtype=np.int32)
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    out = np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS)
    return out.astype(np.int16)


_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as in g711.c
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(np.array(_ULAW_SEG_END), mag, side="left")
    uval = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _alaw_decode_table() -> Pcm16:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(np.array(_ALAW_SEG_END), mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


class _G711(Codec):
    _enc: ClassVar[npt.NDArray[np.uint8]]
    _dec: ClassVar[Pcm16]

    def encode(self, pcm: Pcm16) -> bytes:
        idx = np.asarray(pcm, dtype=np.int16).astype(np.int32) + 32768
        return self._enc.take(idx).tobytes()

    def decode(self, payload: bytes) -> Pcm16:
        return self._dec.take(np.frombuffer(payload, dtype=np.uint8))


class Pcmu(_G711):
    """G.711 µ-law, static payload type 0."""

    name = "PCMU"
    payload_type = 0
    silence_byte = 0xFF
    _enc = _ulaw_encode_table()
    _dec = _ulaw_decode_table()


class Pcma(_G711):
    """G.711 A-law, static payload type 8."""

    name = "PCMA"
    payload_type = 8
    silence_byte = 0xD5
    _enc = _alaw_encode_table()
    _dec = _alaw_decode_table()


_BY_NAME: dict[str, Codec] = {}
_BY_PT: dict[int, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make a codec findable by name (case-insensitive) and by static payload type."""
    _BY_NAME[codec.name.upper()] = codec
    _BY_PT[codec.payload_type] = codec


def get_codec(name: str) -> Codec:
    """The codec called `name` ("PCMU", "pcma"...); ValueError if unknown."""
    try:
        return _BY_NAME[name.upper()]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(sorted(_BY_NAME))}") from None


def codec_for_payload_type(payload_type: int) -> Codec:
    """The codec with this static payload type; ValueError if none."""
    try:
        return _BY_PT[payload_type]
    except KeyError:
        raise ValueError(f"no codec for static payload type {payload_type}") from None


def codec_names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


register_codec(Pcmu())
register_codec(Pcma())
