"""A request's playlist, prepared once into immutable 20 ms payloads per codec.

`prepare_prompt` fetches and decodes `play` items, synthesizes `say` items,
renders `pause` as silence and `dtmf` as both RFC 4733 digits and pre-encoded
in-band tones, then encodes everything per codec and cuts it into 160-byte
payloads (20 ms at 8 kHz). The resulting `Prompt` is shared read-only by every
call of the request. Failures raise `MediaError` with a clear reason, before
anyone is called.

`PromptCache` memoizes per (playlist, the variables `say` items actually use),
so 100k recipients with a per-recipient `{name}` build each distinct text once,
and unchanged items (the same `play` URL, the same `say` text) are encoded once
across variants and share their payload objects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np

from ringcast.errors import MediaError
from ringcast.media import tts
from ringcast.media.codecs import (
    FRAME_SAMPLES,
    PTIME,
    SAMPLE_RATE,
    Samples,
    float_to_pcm16,
    get_codec,
)
from ringcast.media.decode import decode_audio_async, resample
from ringcast.media.fetch import MediaFetcher
from ringcast.media.recorder import RecordSettings, beep_samples

log = logging.getLogger(__name__)

Frames: TypeAlias = tuple[bytes, ...]

DTMF_DIGITS = "0123456789*#ABCD"
DTMF_TONE = 0.100  # seconds a digit sounds
DTMF_GAP = 0.100  # seconds of silence after each digit
DTMF_TONE_FRAMES = round(DTMF_TONE / PTIME)
DTMF_GAP_FRAMES = round(DTMF_GAP / PTIME)
DTMF_LEVEL = 0.25  # linear amplitude of each of the two sines (about -15 dBFS)
_DTMF_FREQS = {  # ITU-T Q.23 (row Hz, column Hz)
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip
MAX_LOOP = 1000  # repeats of one item; the API validates, this bounds memory
_VARIABLE = re.compile(r"\{(\w+)\}")


# --- segments ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioSegment:
    """Audio (played files, speech, pauses) as 20 ms payloads per codec name.

    Stored as `chunks`: per codec, a tuple of per-item payload tuples (a loop
    repeats a reference), so prompts that share items (variants of one
    request, loops) share their payloads instead of copying references.
    `payloads` flattens them (for inspection; streaming walks the chunks).
    """

    chunks: Mapping[str, tuple[Frames, ...]]

    @property
    def payloads(self) -> Mapping[str, Frames]:
        return {c: tuple(f for chunk in ch for f in chunk) for c, ch in self.chunks.items()}

    @property
    def frames(self) -> int:
        return sum(len(chunk) for chunk in next(iter(self.chunks.values()), ()))

    @property
    def duration(self) -> float:
        return self.frames * PTIME


@dataclass(frozen=True, slots=True)
class DtmfSegment:
    """Digits to send: RFC 4733 events when negotiated, else `inband` tone payloads.

    Each digit lasts `tone_frames` 20 ms packets of tone/event, then `gap_frames`
    packets of silence; `inband` holds all digits' tone+gap payloads per codec.
    """

    digits: str
    inband: Mapping[str, Frames]
    tone_frames: int = DTMF_TONE_FRAMES
    gap_frames: int = DTMF_GAP_FRAMES

    @property
    def duration(self) -> float:
        return len(self.digits) * (self.tone_frames + self.gap_frames) * PTIME


@dataclass(frozen=True, slots=True)
class GatherSegment:
    """Wait up to `timeout` seconds for `digits` digits (or `optout`); a digit pressed
    during the segments before it answers it unless `barge_in` is False
    (see :mod:`ringcast.media.digits`)."""

    digits: int
    timeout: float
    optout: str | None = None
    barge_in: bool = True

    @property
    def duration(self) -> float:
        return 0.0  # streamed time depends on the callee; see Prompt.max_duration


@dataclass(frozen=True, slots=True)
class RecordSegment:
    """Record what the callee says (silence is sent meanwhile) until `settings` say
    stop (:mod:`ringcast.media.recorder`); a `beep` is an AudioSegment before it."""

    settings: RecordSettings

    @property
    def duration(self) -> float:
        return 0.0  # streamed time depends on the callee; see Prompt.max_duration


Segment: TypeAlias = AudioSegment | DtmfSegment | GatherSegment | RecordSegment


@dataclass(frozen=True, slots=True)
class Prompt:
    """An immutable, prepared playlist shared by many calls.

    `duration` is the streamed audio and DTMF time in seconds; `max_duration`
    adds every gather's timeout (the longest the playlist can take).
    """

    segments: tuple[Segment, ...]
    codecs: tuple[str, ...]
    duration: float

    @property
    def max_duration(self) -> float:
        waits = sum(s.timeout for s in self.segments if isinstance(s, GatherSegment))
        records = sum(s.settings.max for s in self.segments if isinstance(s, RecordSegment))
        return self.duration + waits + records

    @property
    def has_gather(self) -> bool:
        return any(isinstance(s, GatherSegment) for s in self.segments)


# --- rendering helpers ---------------------------------------------------------------------


def referenced_variables(playlist: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Names of the `{variables}` that `say` items use (the prompt cache key part)."""
    names: set[str] = set()
    for item in playlist:
        text = item.get("say")
        if isinstance(text, str):
            names.update(_VARIABLE.findall(text))
    return frozenset(names)


def substitute(text: str, variables: Mapping[str, str] | None) -> str:
    """Replace `{name}` with the recipient's value; a missing one becomes ""."""
    values = variables or {}
    return _VARIABLE.sub(lambda m: str(values.get(m.group(1), "")), text)


def pad_to_frames(samples: Samples) -> Samples:
    """Zero-pad to a whole number of 20 ms frames."""
    rest = samples.size % FRAME_SAMPLES
    if rest == 0:
        return samples
    return np.concatenate([samples, np.zeros(FRAME_SAMPLES - rest, dtype=np.float32)])


def encode_frames(samples: Samples, codec: str) -> Frames:
    """Encode a whole buffer (padded to 20 ms) and cut it into per-packet payloads."""
    c = get_codec(codec)
    data = c.encode(float_to_pcm16(pad_to_frames(samples)))
    n = c.bytes_per_frame
    return tuple(data[i : i + n] for i in range(0, len(data), n))


def dtmf_tone(digit: str, seconds: float = DTMF_TONE) -> Samples:
    """The Q.23 dual tone for one digit at 8 kHz."""
    low, high = _DTMF_FREQS[digit]
    t = np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    wave = DTMF_LEVEL * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return wave.astype(np.float32)


def dtmf_samples(digits: str) -> Samples:
    gap = np.zeros(DTMF_GAP_FRAMES * FRAME_SAMPLES, dtype=np.float32)
    parts: list[Samples] = []
    for d in digits:
        parts += [dtmf_tone(d, DTMF_TONE_FRAMES * PTIME), gap]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _loop_count(item: Mapping[str, Any]) -> int:
    loop = item.get("loop")
    if loop is None:
        return 1
    if isinstance(loop, bool) or not isinstance(loop, int) or not 1 <= loop <= MAX_LOOP:
        raise MediaError(f"playlist item loop must be an integer from 1 to {MAX_LOOP}: {loop!r}")
    return loop


# --- building ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    kind: str  # "audio" | "dtmf" | "gather" | "record"
    frames: dict[str, Frames] | None = None
    digits: str = ""
    gather: GatherSegment | None = None
    record: RecordSegment | None = None
    beep: dict[str, Frames] | None = None  # played before the record


def _encode_all(samples: Samples, codecs: Sequence[str]) -> dict[str, Frames]:
    return {c: encode_frames(samples, c) for c in codecs}


class PromptCache:
    """Builds prompts and memoizes them (and their items) for reuse across calls.

    `get()` is `prepare_prompt` with memory: the key is the playlist, the codecs,
    max_duration and only the variables referenced by `say` items. Concurrent
    callers for the same key share one build. A prompt that plays URLs is
    reused for `prompt_ttl` seconds (default: the fetcher's `fresh_for`), then
    rebuilt, so a file changed behind its URL is picked up; items are cached by
    content hash, so a rebuild of unchanged media decodes nothing. A failure is
    remembered for `error_ttl` seconds (and the fetcher remembers failing URLs),
    so a failing request does not refetch for every call.
    """

    def __init__(
        self,
        *,
        http: MediaFetcher | None = None,
        max_prompts: int = 1024,
        max_item_frames: int = 500_000,
        error_ttl: float = 10.0,
        prompt_ttl: float | None = None,
    ) -> None:
        self.http = http or MediaFetcher()
        self.max_prompts = max_prompts  # 0: build every time (items are still shared)
        # a prompt that plays URLs is reused this long, then rebuilt (its URLs revalidated)
        self.prompt_ttl = self.http.fresh_for if prompt_ttl is None else prompt_ttl
        self.max_item_frames = max_item_frames  # ~193 bytes each: 500k ~ 97 MB, 2.8 h
        self.error_ttl = error_ttl
        self._prompts: OrderedDict[str, tuple[Prompt, float]] = OrderedDict()  # (prompt, until)
        self._items: OrderedDict[tuple[str, str], Frames] = OrderedDict()
        self._item_frames = 0
        self._errors: dict[str, tuple[float, MediaError]] = {}
        self._building: dict[str, asyncio.Future[Prompt]] = {}
        self.builds = 0  # prompts actually built (not served from memory)
        self.hits = 0  # prompts served from memory or from a build under way

    @staticmethod
    def key(
        playlist: Sequence[Mapping[str, Any]],
        variables: Mapping[str, str] | None,
        codecs: Sequence[str],
        max_duration: float,
    ) -> str:
        used = referenced_variables(playlist)
        vals = {k: str(v) for k, v in (variables or {}).items() if k in used}
        return json.dumps(
            [list(playlist), vals, [c.upper() for c in codecs], max_duration],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )

    async def get(
        self,
        playlist: Sequence[Mapping[str, Any]],
        *,
        variables: Mapping[str, str] | None = None,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        max_duration: float = 3600.0,
    ) -> Prompt:
        key = self.key(playlist, variables, codecs, max_duration)
        memo = self._prompts.get(key)
        if memo is not None:
            if time.monotonic() < memo[1]:
                self._prompts.move_to_end(key)
                self.hits += 1
                return memo[0]
            del self._prompts[key]
        failed = self._errors.get(key)
        if failed is not None:
            if time.monotonic() - failed[0] < self.error_ttl:  # 0: never
                raise MediaError(failed[1].message)
            del self._errors[key]
        pending = self._building.get(key)
        if pending is not None:
            self.hits += 1  # shares a build already under way
            return await asyncio.shield(pending)
        fut: asyncio.Future[Prompt] = asyncio.get_running_loop().create_future()
        self._building[key] = fut
        try:
            try:
                prompt = await self._build(playlist, variables, codecs, max_duration)
            except (ValueError, TypeError, KeyError, RuntimeError, OSError, MemoryError) as exc:
                log.exception("prompt preparation failed unexpectedly")
                why = f"{type(exc).__name__}: {exc}"
                raise MediaError(f"the prompt could not be prepared: {why}") from exc
        except MediaError as exc:
            if self.error_ttl > 0:
                self._errors[key] = (time.monotonic(), exc)
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
            raise
        except BaseException as exc:
            why = type(exc).__name__
            fut.set_exception(MediaError(f"prompt preparation was interrupted: {why}"))
            fut.exception()
            raise
        else:
            fut.set_result(prompt)
            if self.max_prompts > 0:
                plays = any(isinstance(i, Mapping) and i.get("play") for i in playlist)
                until = time.monotonic() + self.prompt_ttl if plays else float("inf")
                self._prompts[key] = (prompt, until)
                while len(self._prompts) > self.max_prompts:
                    self._prompts.popitem(last=False)
            return prompt
        finally:
            self._building.pop(key, None)

    # -- items --------------------------------------------------------------------------

    async def _say_samples(self, text: str, voice: str, rate: int) -> Samples:
        try:
            speech = await tts.synthesize_async(text, voice=voice, rate=rate)
        except MediaError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise MediaError(f"text-to-speech failed for {text[:40]!r}: {exc}") from exc
        return await asyncio.to_thread(resample, speech.samples, speech.sample_rate, SAMPLE_RATE)

    async def _part(
        self,
        item: Mapping[str, Any],
        variables: Mapping[str, str] | None,
        codecs: Sequence[str],
        max_duration: float,
    ) -> _Part:
        if item.get("play") is not None:
            url = item["play"]
            if not isinstance(url, str):
                raise MediaError(f"play must be a URL string: {url!r}")
            fetched = await self.http.fetch(url)  # fresh: from memory or disk, no network
            key = json.dumps(["play", fetched.sha256])  # by content: a changed file re-decodes
            cached = self._cached_item(key, codecs)
            if cached is not None:
                return _Part("audio", cached)
            samples = await decode_audio_async(
                fetched.data, max_duration=max_duration, source=f"media at {url}"
            )
            return _Part("audio", await self._encode_item(key, samples, codecs))
        if item.get("say") is not None:
            text = substitute(str(item["say"]), variables)
            voice = str(item.get("voice") or tts.DEFAULT_VOICE)
            rate = int(item.get("rate") or tts.DEFAULT_RATE)
            key = json.dumps(["say", text, voice, rate])
            cached = self._cached_item(key, codecs)
            if cached is not None:
                return _Part("audio", cached)
            samples = await self._say_samples(text, voice, rate)
            return _Part("audio", await self._encode_item(key, samples, codecs))
        if item.get("pause") is not None:
            seconds = item["pause"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise MediaError(f"pause must be a number of seconds >= 0: {seconds!r}")
            frames = round(float(seconds) / PTIME)
            key = json.dumps(["pause", frames])
            cached = self._cached_item(key, codecs)
            if cached is not None:
                return _Part("audio", cached)
            silence = {c: (get_codec(c).silence_frame(),) * frames for c in codecs}
            self._remember(key, silence)
            return _Part("audio", silence)
        if item.get("dtmf") is not None:
            digits = str(item["dtmf"]).upper()
            bad = [d for d in digits if d not in DTMF_DIGITS]
            if bad or not digits:
                raise MediaError(f"dtmf must be digits from {DTMF_DIGITS}: {item['dtmf']!r}")
            return _Part("dtmf", digits=digits)
        if item.get("gather") is not None:
            g = item["gather"]
            if not isinstance(g, Mapping):
                raise MediaError(f"gather must be an object: {g!r}")
            optout = g.get("optout")
            return _Part(
                "gather",
                gather=GatherSegment(
                    digits=int(g.get("digits", 1)),
                    timeout=float(g.get("timeout", 5)),
                    optout=str(optout) if optout not in (None, "") else None,
                    barge_in=g.get("barge_in", True) is not False,
                ),
            )
        if item.get("record") is not None:
            try:
                settings = RecordSettings.from_item(item["record"])
            except (ValueError, TypeError) as exc:
                raise MediaError(str(exc)) from exc
            beep = None
            if settings.beep:
                key = json.dumps(["beep"])
                beep = self._cached_item(key, codecs)
                if beep is None:
                    beep = await self._encode_item(key, beep_samples(), codecs)
            return _Part("record", record=RecordSegment(settings), beep=beep)
        raise MediaError(f"unknown playlist item: {sorted(item)!r}")

    def _cached_item(self, key: str, codecs: Sequence[str]) -> dict[str, Frames] | None:
        out: dict[str, Frames] = {}
        for c in codecs:
            frames = self._items.get((key, c))
            if frames is None:
                return None
            self._items.move_to_end((key, c))
            out[c] = frames
        return out

    def _remember(self, key: str, frames: Mapping[str, Frames]) -> None:
        """Keep an item's encoded frames, least recently used out past max_item_frames."""
        size = sum(len(f) for f in frames.values())
        if size > self.max_item_frames:
            return  # too big to keep: the prompt still holds it while it lives
        for c, f in frames.items():
            old = self._items.pop((key, c), None)
            if old is not None:
                self._item_frames -= len(old)
            self._items[(key, c)] = f
            self._item_frames += len(f)
        while self._item_frames > self.max_item_frames:
            _, evicted = self._items.popitem(last=False)
            self._item_frames -= len(evicted)

    async def _encode_item(
        self, key: str, samples: Samples, codecs: Sequence[str]
    ) -> dict[str, Frames]:
        frames = await asyncio.to_thread(_encode_all, samples, codecs)
        self._remember(key, frames)
        return frames

    async def _build(
        self,
        playlist: Sequence[Mapping[str, Any]],
        variables: Mapping[str, str] | None,
        codecs: Sequence[str],
        max_duration: float,
    ) -> Prompt:
        if not playlist:
            raise MediaError("the playlist is empty")
        names = tuple(dict.fromkeys(c.upper() for c in codecs))
        for name in names:
            try:
                get_codec(name)
            except ValueError as exc:
                raise MediaError(str(exc)) from exc
        started = time.perf_counter()
        parts: list[tuple[_Part, int]] = []
        total_frames = 0
        for item in playlist:
            if not isinstance(item, Mapping):
                raise MediaError(f"playlist items must be objects: {item!r}")
            loop = _loop_count(item)
            part = await self._part(item, variables, names, max_duration)
            if part.frames is not None:
                total_frames += len(part.frames[names[0]]) * loop
            elif part.kind == "dtmf":
                total_frames += len(part.digits) * (DTMF_TONE_FRAMES + DTMF_GAP_FRAMES) * loop
            if total_frames * PTIME > max_duration:
                raise MediaError(
                    f"the prompt is longer than max_duration {max_duration:g} s "
                    f"(at least {total_frames * PTIME:.1f} s)"
                )
            parts.append((part, loop))
        segments = self._assemble(parts, names)
        self.builds += 1
        prompt = Prompt(segments, names, round(total_frames * PTIME, 3))
        log.info(
            "prompt prepared: %s segments, %.2f s, codecs %s, in %.1f ms",
            len(segments),
            prompt.duration,
            ",".join(names),
            (time.perf_counter() - started) * 1000,
        )
        return prompt

    def _assemble(
        self, parts: Sequence[tuple[_Part, int]], codecs: tuple[str, ...]
    ) -> tuple[Segment, ...]:
        segments: list[Segment] = []
        pending: dict[str, list[Frames]] = {c: [] for c in codecs}

        def flush() -> None:
            if any(pending[c] for c in codecs):
                chunks = {c: tuple(ch for ch in pending[c] if ch) for c in codecs}
                segments.append(AudioSegment(MappingProxyType(chunks)))
            for c in codecs:
                pending[c] = []

        for part, loop in parts:
            if part.frames is not None:
                for c in codecs:
                    pending[c].extend([part.frames[c]] * loop)
            elif part.kind == "dtmf":
                flush()
                digits = part.digits * loop
                inband = {c: encode_frames(dtmf_samples(digits), c) for c in codecs}
                segments.append(DtmfSegment(digits, MappingProxyType(inband)))
            elif part.gather is not None:
                flush()
                segments.extend([part.gather] * loop)
            elif part.record is not None:
                for _ in range(loop):
                    if part.beep is not None:
                        for c in codecs:
                            pending[c].append(part.beep[c])
                    flush()
                    segments.append(part.record)
        flush()
        return tuple(segments)


PromptBuilder = PromptCache  # the name the design notes also use

_default_fetcher: MediaFetcher | None = None
_shared: weakref.WeakKeyDictionary[MediaFetcher, PromptCache] = weakref.WeakKeyDictionary()


def shared_cache(http: MediaFetcher | None = None) -> PromptCache:
    """The process-wide item cache for a fetcher (a default fetcher when None).

    It shares decoded/encoded items (by content hash) and synthesized speech
    across every prompt, but memoizes no whole prompt and no failure, so each
    `prepare_prompt` still revalidates its URLs through the fetcher's cache.
    """
    global _default_fetcher
    if http is None:
        if _default_fetcher is None:
            _default_fetcher = MediaFetcher()
        http = _default_fetcher
    cache = _shared.get(http)
    if cache is None:
        cache = PromptCache(http=http, max_prompts=0, error_ttl=0.0)
        _shared[http] = cache
    return cache


async def prepare_prompt(
    playlist: list[dict[str, Any]],
    *,
    variables: dict[str, str] | None = None,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    max_duration: float = 3600.0,
    cache: PromptCache | None = None,
    http: MediaFetcher | None = None,
) -> Prompt:
    """Prepare a playlist once into a shared, immutable `Prompt`.

    With `cache`, the prompt is memoized there (and `http` is ignored in favour
    of the cache's fetcher). Without it, a process-wide `shared_cache(http)`
    still shares items: variants of a prompt decode each file and synthesize
    each distinct text once. Raises `MediaError` with a clear reason: HTTP
    errors (404...), timeouts, not audio, too big, longer than `max_duration`,
    text-to-speech failure.
    """
    if cache is None:
        cache = shared_cache(http)
    return await cache.get(playlist, variables=variables, codecs=codecs, max_duration=max_duration)
