"""The prompt cache counts its hits and builds (read by /metrics)."""

from __future__ import annotations

import asyncio

from ringcast.media.prompt import PromptCache


async def test_hits_and_builds_are_counted() -> None:
    cache = PromptCache()
    playlist = [{"pause": 0.1}, {"dtmf": "1"}]
    first, second, third = await asyncio.gather(
        cache.get(playlist), cache.get(playlist), cache.get(playlist)
    )
    assert first is second is third
    again = await cache.get(playlist)
    assert again is first
    assert cache.builds == 1
    assert cache.hits == 3
