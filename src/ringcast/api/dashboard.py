"""The dashboard: a static page at `/` and the JSON it reads.

The page (``api/static/``: plain HTML, CSS and JavaScript, no build step) polls
the public API with the user's key (`Authorization: Bearer`, kept in the
browser's localStorage):

- ``GET /requests`` — the caller's requests, newest first, paged, each with its
  counts by state (queued, in-progress, then each outcome), calls per minute
  and estimated time left;
- ``GET /requests/{request_id}`` — the same for one request;
- ``GET /requests/{request_id}/calls?state=`` — its call records, filtered by
  state, paged in recipient order;
- ``GET /requests/{request_id}/timeline`` — finished calls per time bucket and
  outcome, for the chart;
- ``DELETE /voice/call/{request_id}`` (in :mod:`ringcast.api.routes`) cancels.

Every query is scoped to the caller's tenant; another tenant's request is 404.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from ringcast.api.common import store_of, tenant_of
from ringcast.api.errors import ID_MAX, envelope, request_id_of
from ringcast.domain import utcnow
from ringcast.errors import NotFound, ValidationFailed
from ringcast.store import dashboard as dash
from ringcast.store.records import record_dict

logger = logging.getLogger(__name__)

router = APIRouter()

STATIC_DIR = Path(__file__).parent / "static"
_ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
MAX_REQUESTS_PAGE = 100
MAX_CALLS_PAGE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """A file of the dashboard (only names found directly in api/static/)."""
    path = STATIC_DIR / name
    kind = _ASSET_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no file {name[:64]!r}", field="name")
    return FileResponse(path, media_type=kind, headers=_NO_CACHE)


def _encode_cursor(at: datetime, request_id: str) -> str:
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{request_id}"


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    micros, _, rid = cursor.partition(".")
    if not micros.isdigit() or len(micros) > 20 or not rid or len(rid) > ID_MAX:
        raise ValidationFailed(
            "cursor must be a next_cursor value from an earlier page", field="cursor"
        )
    return _EPOCH + timedelta(microseconds=int(micros)), rid


@router.get("/requests", summary="Your requests, newest first, with their progress")
async def requests_list(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_REQUESTS_PAGE)] = 20,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """Each request carries `counts` by state (`queued`, `in-progress`, then each
    outcome), `done`, `status` (queued, running, canceling, done, canceled),
    `calls_per_minute` and `eta_seconds` (null while unknown)."""
    page, after = await dash.list_requests(
        store_of(request), tenant_of(request), limit=limit, before=_decode_cursor(cursor)
    )
    now = utcnow()
    return JSONResponse(
        envelope(
            200,
            "ok",
            request_id_of(request),
            requests=[p.as_dict(now) for p in page],
            next_cursor=None if after is None else _encode_cursor(*after),
        )
    )


async def _progress(request: Request, request_id: str) -> dash.Progress:
    found = None
    if len(request_id) <= ID_MAX:
        found = await dash.request_progress(store_of(request), tenant_of(request), request_id)
    if found is None:
        raise NotFound(f"no request {request_id[:ID_MAX]!r}", field="request_id")
    return found


@router.get("/requests/{request_id}", summary="One request's progress")
async def request_detail(request: Request, request_id: str) -> JSONResponse:
    progress = await _progress(request, request_id)
    return JSONResponse(envelope(200, "ok", request_id, request=progress.as_dict(utcnow())))


@router.get("/requests/{request_id}/calls", summary="One request's call records, by state")
async def request_calls(
    request: Request,
    request_id: str,
    state: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CALLS_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=12)] = None,
) -> JSONResponse:
    """Records in recipient order; `state` keeps only calls in that state (queued,
    in-progress, answered, busy, no-answer, declined, rejected, failed, canceled,
    suppressed). Page with `cursor` = the previous answer's `next_cursor`."""
    if state is not None and state not in dash.STATES:
        raise ValidationFailed(f"state must be one of {', '.join(dash.STATES)}", field="state")
    if cursor is not None and cursor != "" and (not cursor.isdigit() or len(cursor) > 12):
        raise ValidationFailed(
            "cursor must be a next_cursor value from an earlier page", field="cursor"
        )
    await _progress(request, request_id)
    after = int(cursor) if cursor else -1
    rows = await dash.calls_page(
        store_of(request), request_id, state=state, after_seq=after, limit=limit + 1
    )
    next_cursor = str(rows[limit - 1].seq) if len(rows) > limit else None
    records = [
        {**record_dict(r), "state": dash.state_of(r.result, r.outcome)} for r in rows[:limit]
    ]
    return JSONResponse(envelope(200, "ok", request_id, records=records, next_cursor=next_cursor))


@router.get("/requests/{request_id}/timeline", summary="Outcomes over time, for a chart")
async def request_timeline(request: Request, request_id: str) -> JSONResponse:
    """Finished calls per `width`-second bucket (by disconnect time) and state;
    `t` is the bucket's start in Unix seconds (UTC)."""
    progress = await _progress(request, request_id)
    final = progress.total > 0 and progress.done >= progress.total
    tl = await dash.timeline(store_of(request), request_id, final=final)
    return JSONResponse(
        envelope(200, "ok", request_id, width=tl.width, start=tl.start, buckets=tl.buckets)
    )
