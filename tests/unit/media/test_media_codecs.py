"""G.711 lookup tables against the ITU-T reference values (no sockets)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ringcast.media.codecs import (
    FRAME_SAMPLES,
    codec_for_payload_type,
    float_to_pcm16,
    get_codec,
)

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)

# sha256 of encode(every int16 from -32768 to 32767), equal to CPython's
# (deprecated) audioop.lin2ulaw / lin2alaw output, i.e. the Sun g711.c reference.
ULAW_TABLE_SHA256 = "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
ALAW_TABLE_SHA256 = "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"


@pytest.mark.parametrize(
    ("name", "pt", "silence"), [("PCMU", 0, 0xFF), ("PCMA", 8, 0xD5), ("pcmu", 0, 0xFF)]
)
def test_registry_by_name_and_payload_type(name: str, pt: int, silence: int) -> None:
    codec = get_codec(name)
    assert codec.payload_type == pt
    assert codec_for_payload_type(pt) is codec
    assert codec.silence_frame() == bytes([silence]) * FRAME_SAMPLES
    assert codec.clock_rate == 8000


def test_unknown_codec_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="unknown codec 'OPUS'; known: PCMA, PCMU"):
        get_codec("OPUS")
    with pytest.raises(ValueError, match="no codec for static payload type 18"):
        codec_for_payload_type(18)


def test_ulaw_known_values() -> None:
    c = get_codec("PCMU")
    pcm = np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert c.encode(pcm) == bytes([0xFF, 0x7E, 0x80, 0x00, 0xCE, 0x4E])  # g711.c: -1 -> 0x7E
    assert c.decode(bytes([0x00, 0x80, 0xFF, 0x7F])).tolist() == [-32124, 32124, 0, 0]


def test_alaw_known_values() -> None:
    c = get_codec("PCMA")
    pcm = np.array([0, -1, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert c.encode(pcm) == bytes([0xD5, 0x55, 0xAA, 0x2A, 0xFA, 0x7A])
    assert c.decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


@pytest.mark.parametrize(
    ("name", "sha"), [("PCMU", ULAW_TABLE_SHA256), ("PCMA", ALAW_TABLE_SHA256)]
)
def test_whole_table_matches_reference(name: str, sha: str) -> None:
    assert hashlib.sha256(get_codec(name).encode(ALL_PCM)).hexdigest() == sha


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_code_round_trip(name: str) -> None:
    c = get_codec(name)
    codes = bytes(range(256))
    back = c.encode(c.decode(codes))
    # every code survives decode -> encode, except µ-law's negative zero (0x7F -> 0xFF)
    diff = [i for i in range(256) if back[i] != codes[i]]
    assert diff == ([0x7F] if name == "PCMU" else [])


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_signal_round_trip_is_close(name: str) -> None:
    c = get_codec(name)
    t = np.arange(8000) / 8000
    x = float_to_pcm16((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    y = c.decode(c.encode(x)).astype(np.float64)
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y) ** 2))
    assert snr > 30  # G.711 gives ~38 dB on a loud sine


def test_float_to_pcm16_clips() -> None:
    out = float_to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], dtype=np.float32))
    assert out.tolist() == [-32768, -32768, 0, 16384, 32767, 32767]
