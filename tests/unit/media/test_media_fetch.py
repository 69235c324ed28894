"""MediaFetcher and prompt preparation against a local HTTP server: caps, cache, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from media_http import MediaServer, Route, encode_audio, make_signal, media_server

from ringcast.errors import MediaError
from ringcast.media import PromptCache, prepare_prompt
from ringcast.media.fetch import MediaFetcher

WAV = encode_audio(make_signal(1.0, 16000), 16000, "WAV")


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with media_server() as srv:
        srv.routes["/hello.wav"] = Route(WAV, content_type="audio/wav", etag='"v1"')
        yield srv


@pytest.fixture
def fetcher(tmp_path: Path) -> MediaFetcher:
    return MediaFetcher(
        allow_private=True, cache_dir=tmp_path / "cache", connect_timeout=2, read_timeout=0.5
    )


async def test_second_prepare_fetches_nothing(server: MediaServer, fetcher: MediaFetcher) -> None:
    playlist = [{"play": server.url("/hello.wav")}]
    first = await prepare_prompt(playlist, http=fetcher)
    assert server.hits["/hello.wav"] == 1
    # a new PromptCache (no memory of the first): the disk cache answers
    second = await prepare_prompt(playlist, cache=PromptCache(http=fetcher))
    assert server.hits["/hello.wav"] == 1
    assert first.segments[0] == second.segments[0]
    # a fresh fetcher on the same cache directory (a restarted process) also fetches nothing
    again = MediaFetcher(allow_private=True, cache_dir=fetcher.cache_dir)
    got = await again.fetch(server.url("/hello.wav"))
    assert got.from_cache and got.data == WAV
    assert server.hits["/hello.wav"] == 1


async def test_stale_entry_revalidates_with_etag(server: MediaServer, tmp_path: Path) -> None:
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", fresh_for=0.0)
    url = server.url("/hello.wav")
    one = await fetcher.fetch(url)
    two = await fetcher.fetch(url)
    assert not one.from_cache and two.from_cache
    assert server.hits["/hello.wav"] == 2 and server.conditional["/hello.wav"] == 1
    assert two.sha256 == one.sha256


async def test_same_content_at_two_urls_is_stored_once(
    server: MediaServer, fetcher: MediaFetcher
) -> None:
    server.routes["/copy.wav"] = Route(WAV)
    a = await fetcher.fetch(server.url("/hello.wav"))
    b = await fetcher.fetch(server.url("/copy.wav"))
    assert a.sha256 == b.sha256
    assert len(list((fetcher.cache_dir / "blobs").iterdir())) == 1


async def test_no_store_is_not_cached(server: MediaServer, fetcher: MediaFetcher) -> None:
    server.routes["/live.wav"] = Route(WAV, cache_control="no-store")
    await fetcher.fetch(server.url("/live.wav"))
    await fetcher.fetch(server.url("/live.wav"))
    assert server.hits["/live.wav"] == 2


async def test_404_is_a_clear_error(server: MediaServer, fetcher: MediaFetcher) -> None:
    url = server.url("/missing.wav")
    with pytest.raises(MediaError, match=r"fetching .*/missing.wav failed: HTTP 404 Not Found"):
        await prepare_prompt([{"play": url}], http=fetcher)


async def test_not_audio(server: MediaServer, fetcher: MediaFetcher) -> None:
    server.routes["/page.html"] = Route(b"<html>" + b"x" * 4000, content_type="text/html")
    with pytest.raises(MediaError, match=r"/page.html is not audio that can be decoded"):
        await prepare_prompt([{"play": server.url("/page.html")}], http=fetcher)


async def test_too_big_by_content_length(server: MediaServer, tmp_path: Path) -> None:
    small = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", max_bytes=1000)
    with pytest.raises(MediaError, match=r"/hello.wav is too big: \d+ bytes, the limit is 1000"):
        await prepare_prompt([{"play": server.url("/hello.wav")}], http=small)


async def test_too_long(server: MediaServer, fetcher: MediaFetcher) -> None:
    with pytest.raises(MediaError, match=r"is 1.0 s long, more than max_duration 0.5 s"):
        await prepare_prompt([{"play": server.url("/hello.wav")}], http=fetcher, max_duration=0.5)
    # each item fits, the loops do not
    with pytest.raises(MediaError, match=r"prompt is longer than max_duration 2.5 s"):
        await prepare_prompt(
            [{"play": server.url("/hello.wav"), "loop": 3}], http=fetcher, max_duration=2.5
        )


async def test_read_timeout(server: MediaServer, fetcher: MediaFetcher) -> None:
    server.routes["/slow.wav"] = Route(WAV, delay=1.5)
    with pytest.raises(MediaError, match=r"/slow.wav timed out while reading \(limit 0.5 s\)"):
        await fetcher.fetch(server.url("/slow.wav"))


async def test_redirect_cap(server: MediaServer, tmp_path: Path) -> None:
    server.routes["/loop"] = Route(status=302, location="/loop")
    server.routes["/moved.wav"] = Route(status=301, location="/hello.wav")
    f = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", max_redirects=3)
    got = await f.fetch(server.url("/moved.wav"))
    assert got.data == WAV
    with pytest.raises(MediaError, match=r"/loop failed: more than 3 redirects"):
        await f.fetch(server.url("/loop"))


async def test_connection_refused(fetcher: MediaFetcher) -> None:
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port(1)}/x.wav"
    with pytest.raises(MediaError, match=r"fetching http://127.0.0.1:\d+/x.wav failed: Connect"):
        await fetcher.fetch(url)


async def test_only_http_urls(fetcher: MediaFetcher) -> None:
    with pytest.raises(MediaError, match="media URL must be http or https: file:///etc/passwd"):
        await fetcher.fetch("file:///etc/passwd")


@pytest.mark.parametrize(("fmt", "rate", "channels"), [("FLAC", 22050, 1), ("OGG", 48000, 2)])
async def test_formats_decode_to_8k(
    server: MediaServer, fetcher: MediaFetcher, fmt: str, rate: int, channels: int
) -> None:
    server.routes[f"/a.{fmt}"] = Route(encode_audio(make_signal(2.0, rate, channels), rate, fmt))
    prompt = await prepare_prompt([{"play": server.url(f"/a.{fmt}")}], http=fetcher)
    assert prompt.duration == pytest.approx(2.0, abs=0.05)
    frames = prompt.segments[0].payloads["PCMU"]  # type: ignore[union-attr]
    assert all(len(f) == 160 for f in frames)
    assert np.frombuffer(b"".join(frames), dtype=np.uint8).std() > 10  # not silence


async def test_variants_share_one_decode_through_the_shared_cache(
    server: MediaServer, fetcher: MediaFetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ringcast.media.decode import decode_audio_async as real

    decodes: list[int] = []

    async def counting(data: bytes, **kw: object) -> np.ndarray:
        decodes.append(len(data))
        return await real(data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("ringcast.media.prompt.decode_audio_async", counting)
    playlist = [{"play": server.url("/hello.wav")}, {"say": "Hi {name}"}]
    a = await prepare_prompt(playlist, variables={"name": "Ann"}, http=fetcher)
    b = await prepare_prompt(playlist, variables={"name": "Bob"}, http=fetcher)
    assert decodes == [len(WAV)] and server.hits["/hello.wav"] == 1
    chunk_a = a.segments[0].chunks["PCMU"][0]  # type: ignore[union-attr]
    chunk_b = b.segments[0].chunks["PCMU"][0]  # type: ignore[union-attr]
    assert chunk_a is chunk_b  # the played file's payloads are shared, not copied


async def test_a_changed_file_is_used_once_the_cache_entry_is_stale(
    server: MediaServer, tmp_path: Path
) -> None:
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", fresh_for=0.0)
    playlist = [{"play": server.url("/hello.wav")}]
    first = await prepare_prompt(playlist, http=fetcher)
    server.routes["/hello.wav"] = Route(
        encode_audio(make_signal(0.5, 8000), 8000, "WAV"), etag='"v2"'
    )
    second = await prepare_prompt(playlist, http=fetcher)
    assert first.duration == pytest.approx(1.0) and second.duration == pytest.approx(0.5)


async def test_fresh_bodies_are_served_from_memory(
    server: MediaServer, fetcher: MediaFetcher
) -> None:
    url = server.url("/hello.wav")
    await fetcher.fetch(url)
    for blob in (fetcher.cache_dir / "blobs").iterdir():
        blob.unlink()  # a second fetch must not need the disk
    again = await fetcher.fetch(url)
    assert again.from_cache and again.data == WAV and server.hits["/hello.wav"] == 1


async def test_failed_urls_are_remembered_briefly(server: MediaServer, tmp_path: Path) -> None:
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", negative_ttl=60)
    url = server.url("/missing.wav")
    for name in ("Ann", "Bob", "Cid"):  # three variants: three prompt keys, one request
        with pytest.raises(MediaError, match="HTTP 404"):
            await prepare_prompt([{"play": url}, {"say": name}], http=fetcher)
    assert server.hits["/missing.wav"] == 1
    fetcher.negative_ttl = 0
    fetcher._failed.clear()
    server.routes["/missing.wav"] = Route(WAV)
    assert (await fetcher.fetch(url)).data == WAV


async def test_memoized_prompts_that_play_urls_expire(server: MediaServer, tmp_path: Path) -> None:
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", fresh_for=0.0)
    cache = PromptCache(http=fetcher, prompt_ttl=0.2)
    playlist = [{"play": server.url("/hello.wav")}]
    first = await cache.get(playlist)
    assert await cache.get(playlist) is first  # memoized
    server.routes["/hello.wav"] = Route(encode_audio(make_signal(0.5, 8000), 8000, "WAV"))
    await asyncio.sleep(0.25)
    second = await cache.get(playlist)
    assert second.duration == pytest.approx(0.5) and cache.builds == 2
    # a prompt with no URL never needs revalidation
    speech = await cache.get([{"say": "constant"}])
    await asyncio.sleep(0.25)
    assert await cache.get([{"say": "constant"}]) is speech
