"""GET /voices: the text-to-speech voices a `say` item may name."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ringcast.api.errors import envelope, request_id_of

router = APIRouter()


@router.get("/voices", summary="Text-to-speech voices installed on this server")
async def voices(request: Request) -> JSONResponse:
    """Every voice `"voice"` may name: `engine` (espeak, piper), `name` (the value
    to give), `language`. Piper voices are the operator's (the config file's
    `[piper_voices]`, and `"piper"`, the default model, when one is installed)."""
    from ringcast.media import tts  # the audio stack loads when first needed, not at start-up

    found = await asyncio.to_thread(tts.list_voices)  # loads eSpeak NG once: off the loop
    listed = [
        {"engine": v.engine, "name": v.name, "language": v.language, "description": v.description}
        for v in found
    ]
    return JSONResponse(envelope(200, "ok", request_id_of(request), voices=listed))
