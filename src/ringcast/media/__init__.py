"""Audio only, no sockets: fetch, decode, text-to-speech, codecs and prepared prompts.

The media plane prepares each request's playlist once (`prepare_prompt`) into
immutable 20 ms payloads per codec; `ringcast.rtp` streams them.
"""

from __future__ import annotations

from ringcast.media.prompt import (
    AudioSegment,
    DtmfSegment,
    GatherSegment,
    Prompt,
    PromptBuilder,
    PromptCache,
    Segment,
    prepare_prompt,
)

__all__ = [
    "AudioSegment",
    "DtmfSegment",
    "GatherSegment",
    "Prompt",
    "PromptBuilder",
    "PromptCache",
    "Segment",
    "prepare_prompt",
]
