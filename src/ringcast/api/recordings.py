"""Recording endpoints: GET (with Range, RFC 9110 §14) and DELETE /recordings/{id}.

Same authentication and tenant as the call records: another tenant's
recording is answered 404, exactly like one that does not exist. GET streams
the WAV from the database in pieces of :data:`PIECE` bytes (1 MiB); one `bytes=` range
(`a-b`, `a-`, `-n`) gives 206 with Content-Range, an unsatisfiable one 416
with ``Content-Range: bytes */size``; several ranges, or a malformed header,
are ignored (the whole file, 200), as RFC 9110 §14.2 allows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ringcast.api.common import store_of, tenant_of
from ringcast.api.errors import envelope, error_response, request_id_of
from ringcast.errors import NotFound, RingcastError
from ringcast.store import recordings as store_recordings
from ringcast.store.db import Store

router = APIRouter()

# bytes read from the database per step of a response (~65 s of audio): SQLite's
# substr() loads the whole BLOB for each piece, so pieces are large; PostgreSQL
# keeps `wav` uncompressed out of line (STORAGE EXTERNAL) and reads only the piece.
PIECE = 1024 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(RingcastError):
    """The requested range is outside the recording."""

    code = 1021
    http_status = 416


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | RangeNotSatisfiable:
    """The single byte range `header` asks of a `size`-byte file, as (first, last)
    inclusive; None for the whole file (no header, several ranges, or not a byte
    range we understand); RangeNotSatisfiable when it starts past the end."""
    if not header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return RangeNotSatisfiable(f"bytes=-0 of a {size}-byte recording", field="Range")
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored (RFC 9110 §14.1.1)
    if start >= size:
        return RangeNotSatisfiable(
            f"the range starts at byte {start} of a {size}-byte recording", field="Range"
        )
    return start, min(end, size - 1)


async def _pieces(store: Store, recording_id: str, start: int, end: int) -> AsyncIterator[bytes]:
    pos = start
    while pos <= end:
        chunk = await store_recordings.read_piece(
            store, recording_id, pos, min(PIECE, end + 1 - pos)
        )
        if not chunk:  # deleted meanwhile
            return
        yield chunk
        pos += len(chunk)


@router.get(
    "/recordings/{id}",
    summary="A recording as 8 kHz mono WAV (Range requests supported)",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}, 206: {"content": {"audio/wav": {}}}},
)
async def get_recording(request: Request, id: str) -> Response:
    store = store_of(request)
    found = await store_recordings.info(store, id, tenant=tenant_of(request))
    if found is None:
        raise NotFound(f"no recording {id[:64]!r}", field="id")
    size = found.size
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="recording-{found.id}.wav"',
        "X-Recording-Duration": f"{found.duration:.2f}",
    }
    wanted = parse_range(request.headers.get("range"), size)
    if isinstance(wanted, RangeNotSatisfiable):
        return error_response(
            wanted, request_id_of(request), headers={"Content-Range": f"bytes */{size}"}
        )
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(0, end + 1 - start))
    return StreamingResponse(
        _pieces(store, found.id, start, end),
        status_code=status,
        media_type="audio/wav",
        headers=headers,
    )


@router.delete("/recordings/{id}", summary="Delete a recording")
async def delete_recording(request: Request, id: str) -> JSONResponse:
    if not await store_recordings.delete(store_of(request), id, tenant=tenant_of(request)):
        raise NotFound(f"no recording {id[:64]!r}", field="id")
    return JSONResponse(envelope(200, "deleted", request_id_of(request)))
