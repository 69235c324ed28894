"""Prompt assembly without sockets: pauses, loops, DTMF, gather, variants, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from media_http import encode_audio, make_signal

from ringcast.errors import MediaError
from ringcast.media import (
    AudioSegment,
    DtmfSegment,
    GatherSegment,
    PromptCache,
    prepare_prompt,
)
from ringcast.media.codecs import get_codec
from ringcast.media.fetch import MediaFetcher
from ringcast.media.prompt import dtmf_tone, referenced_variables, substitute

WAV_8K_HALF_SECOND = encode_audio(make_signal(0.5, 8000), 8000, "WAV")


def mock_fetcher(tmp_path: Path, hits: list[str]) -> MediaFetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(str(request.url))
        if request.url.path == "/a.wav":
            return httpx.Response(200, content=WAV_8K_HALF_SECOND)
        return httpx.Response(404)

    return MediaFetcher(cache_dir=tmp_path, transport=httpx.MockTransport(handler))


async def test_pause_lengths_are_silence_frames() -> None:
    prompt = await prepare_prompt([{"pause": 1.5}, {"pause": 0.01}, {"pause": 0}])
    (seg,) = prompt.segments
    assert isinstance(seg, AudioSegment)
    assert seg.frames == 75 + 0 + 0  # 0.01 s rounds to no 20 ms frame
    assert set(seg.payloads["PCMU"]) == {b"\xff" * 160}
    assert set(seg.payloads["PCMA"]) == {b"\xd5" * 160}
    assert prompt.duration == 1.5


async def test_loop_counts_repeat_items(tmp_path: Path) -> None:
    hits: list[str] = []
    prompt = await prepare_prompt(
        [{"play": "http://media.test/a.wav", "loop": 3}, {"pause": 0.2, "loop": 2}],
        http=mock_fetcher(tmp_path, hits),
    )
    (seg,) = prompt.segments
    assert isinstance(seg, AudioSegment)
    assert seg.frames == 3 * 25 + 2 * 10
    frames = seg.payloads["PCMU"]
    assert frames[0:25] == frames[25:50] == frames[50:75]
    assert frames[0] is frames[25]  # loops share payload objects, no copies
    assert hits == ["http://media.test/a.wav"]
    assert prompt.duration == pytest.approx(1.9)


async def test_playlist_segments_in_order() -> None:
    prompt = await prepare_prompt(
        [
            {"say": "Hello"},
            {"pause": 0.5},
            {"dtmf": "1#", "loop": 2},
            {"gather": {"digits": 2, "timeout": 5, "optout": "9"}},
            {"pause": 0.1},
        ],
        codecs=["PCMA"],
    )
    kinds = [type(s) for s in prompt.segments]
    assert kinds == [AudioSegment, DtmfSegment, GatherSegment, AudioSegment]
    audio, dtmf, gather, tail = prompt.segments
    assert isinstance(audio, AudioSegment) and isinstance(dtmf, DtmfSegment)
    assert prompt.codecs == ("PCMA",) and set(audio.payloads) == {"PCMA"}
    assert dtmf.digits == "1#1#"
    assert len(dtmf.inband["PCMA"]) == 4 * (dtmf.tone_frames + dtmf.gap_frames)
    assert gather == GatherSegment(digits=2, timeout=5.0, optout="9")
    assert isinstance(tail, AudioSegment) and tail.frames == 5
    assert prompt.duration == pytest.approx(audio.duration + dtmf.duration + 0.1)
    assert prompt.max_duration == pytest.approx(prompt.duration + 5)


async def test_inband_dtmf_is_the_q23_tone() -> None:
    prompt = await prepare_prompt([{"dtmf": "5"}], codecs=["PCMU"])
    (seg,) = prompt.segments
    assert isinstance(seg, DtmfSegment)
    pcm = get_codec("PCMU").decode(b"".join(seg.inband["PCMU"][: seg.tone_frames]))
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / 8000)
    top = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top == pytest.approx([770, 1336], abs=10)  # digit 5: row 770 Hz, column 1336 Hz
    gap = get_codec("PCMU").decode(b"".join(seg.inband["PCMU"][seg.tone_frames :]))
    assert np.abs(gap).max() == 0
    assert dtmf_tone("5").size == 800


async def test_variants_are_built_once_per_referenced_variable() -> None:
    cache = PromptCache()
    playlist: list[dict[str, Any]] = [{"say": "Hello {name}"}, {"pause": 0.2}, {"say": "Goodbye"}]
    a1 = await cache.get(playlist, variables={"name": "Alice", "id": "1"})
    a2 = await cache.get(playlist, variables={"name": "Alice", "id": "2"})  # id unused
    b = await cache.get(playlist, variables={"name": "Bob"})
    assert a1 is a2
    assert b is not a1
    assert cache.builds == 2
    # "Goodbye" is the same item in both variants: encoded once, payloads shared
    tail_a = a1.segments[0].payloads["PCMU"][-5:]  # type: ignore[union-attr]
    tail_b = b.segments[0].payloads["PCMU"][-5:]  # type: ignore[union-attr]
    assert all(x is y for x, y in zip(tail_a, tail_b, strict=True))
    # and a variant costs one reference per item, not one per 20 ms frame
    chunks_a = a1.segments[0].chunks["PCMU"]  # type: ignore[union-attr]
    chunks_b = b.segments[0].chunks["PCMU"]  # type: ignore[union-attr]
    assert len(chunks_a) == 3 and chunks_a[1] is chunks_b[1] and chunks_a[2] is chunks_b[2]


async def test_concurrent_requests_share_one_build() -> None:
    import asyncio

    cache = PromptCache()
    playlist = [{"say": "One build only"}]
    got = await asyncio.gather(*(cache.get(playlist) for _ in range(10)))
    assert cache.builds == 1 and all(p is got[0] for p in got)


def test_variable_helpers() -> None:
    playlist = [{"say": "Hi {name}, code {code}. {name}!"}, {"play": "http://x/{nope}.wav"}]
    assert referenced_variables(playlist) == {"name", "code"}
    assert substitute("Hi {name}, {missing}{", {"name": "Al"}) == "Hi Al, {"


@pytest.mark.parametrize(
    ("playlist", "message"),
    [
        ([], "the playlist is empty"),
        ([{"dtmf": "12x"}], "dtmf must be digits from 0123456789"),
        ([{"pause": -1}], "pause must be a number of seconds >= 0"),
        ([{"pause": 1, "loop": 0}], "loop must be an integer from 1 to 1000"),
        ([{"beep": 1}], "unknown playlist item: \\['beep'\\]"),
        ([{"say": "hi", "voice": "xx-nope"}], "voice 'xx-nope' is not known to eSpeak NG"),
    ],
)
async def test_bad_items_are_media_errors(playlist: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(MediaError, match=message):
        await prepare_prompt(playlist)


async def test_unknown_codec() -> None:
    with pytest.raises(MediaError, match="unknown codec 'G729'"):
        await prepare_prompt([{"pause": 1}], codecs=["G729"])


async def test_failure_is_remembered_briefly(tmp_path: Path) -> None:
    hits: list[str] = []
    cache = PromptCache(http=mock_fetcher(tmp_path, hits))
    playlist = [{"play": "http://media.test/missing.wav"}]
    for _ in range(3):
        with pytest.raises(MediaError, match="HTTP 404"):
            await cache.get(playlist)
    assert len(hits) == 1  # 100k calls of a failing request do not refetch 100k times


async def test_items_with_null_fields_as_a_validated_model_dumps_them() -> None:
    nulls = {"play": None, "say": None, "pause": None, "dtmf": None, "gather": None}
    playlist: list[dict[str, Any]] = [
        {**nulls, "say": "Hi", "voice": None, "rate": None, "loop": None},
        {**nulls, "pause": 0.2, "loop": 2},
        {**nulls, "dtmf": "1"},
    ]
    prompt = await prepare_prompt(playlist)
    audio, dtmf = prompt.segments
    assert isinstance(audio, AudioSegment) and isinstance(dtmf, DtmfSegment)
    assert dtmf.digits == "1"


async def test_unexpected_failures_become_media_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from ringcast.media import tts

    async def broken(text: str, **kw: Any) -> tts.Speech:
        raise RuntimeError("synthesizer exploded")

    monkeypatch.setattr(tts, "synthesize_async", broken)
    with pytest.raises(MediaError, match="synthesizer exploded"):
        await prepare_prompt([{"say": "x"}])


async def test_item_cache_stays_within_its_frame_budget() -> None:
    cache = PromptCache(max_item_frames=120)
    for seconds in (1.0, 1.2, 1.4):  # 50, 60, 70 frames per codec
        await cache.get([{"pause": seconds}], codecs=["PCMU"])
    assert cache._item_frames <= 120
    assert len(cache._items) == 1  # only the newest item fits with the others evicted


async def test_without_a_cache_prompts_are_built_each_time_but_items_are_shared() -> None:
    from ringcast.media.prompt import shared_cache

    cache = shared_cache()
    before = cache.builds
    a = await prepare_prompt([{"say": "Shared item"}])
    b = await prepare_prompt([{"say": "Shared item"}])
    assert cache.builds == before + 2 and a is not b
    assert a.segments[0].chunks["PCMU"][0] is b.segments[0].chunks["PCMU"][0]  # type: ignore[union-attr]


async def test_record_items_become_a_beep_and_a_record_segment() -> None:
    from ringcast.media.prompt import RecordSegment
    from ringcast.media.recorder import BEEP_SECONDS, RecordSettings

    prompt = await prepare_prompt(
        [
            {"pause": 0.2},
            {"record": {"max": 30, "silence": 3, "finish_on": "#", "beep": True}},
            {"record": True},
            {"record": {"max": 5, "beep": False}},
        ],
        codecs=["PCMU"],
    )
    kinds = [type(s) for s in prompt.segments]
    assert kinds == [AudioSegment, RecordSegment, AudioSegment, RecordSegment, RecordSegment]
    first, rec1, beep2, rec2, rec3 = prompt.segments
    assert isinstance(first, AudioSegment) and first.frames == 10 + BEEP_SECONDS / 0.02
    assert isinstance(beep2, AudioSegment) and beep2.frames == BEEP_SECONDS / 0.02
    assert rec1 == RecordSegment(RecordSettings(30, 3, "#", True))
    assert rec2 == RecordSegment(RecordSettings())
    assert rec3 == RecordSegment(RecordSettings(max=5, beep=False))
    assert prompt.max_duration == pytest.approx(prompt.duration + 30 + 60 + 5)


async def test_bad_record_items_fail_the_prompt() -> None:
    with pytest.raises(MediaError, match="record.max"):
        await prepare_prompt([{"record": {"max": 0}}], codecs=["PCMU"])
