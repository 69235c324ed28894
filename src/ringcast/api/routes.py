"""HTTP routes: status, report, cancel, pause/resume and health (the requests
themselves are made in :mod:`ringcast.api.play`)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ringcast import sealing
from ringcast.api.common import json_response, store_of, tenant_of
from ringcast.api.errors import ID_MAX, envelope, error_body, request_id_of
from ringcast.errors import NotFound, StoreError, ValidationFailed
from ringcast.store import registrations as registration_rows
from ringcast.store import requests as q
from ringcast.store.db import Store
from ringcast.store.records import RECORD_FIELDS, record_dict

logger = logging.getLogger(__name__)

router = APIRouter()

MAX_PAGE = 10_000  # records per page with ?limit=


# --- POST /voice/call/{request_id}/pause and /resume ---------------------------------------


async def _pause(request: Request, request_id: str, paused: bool) -> JSONResponse:
    queued = None
    if len(request_id) <= ID_MAX:
        queued = await q.set_paused(
            store_of(request), request_id, paused, tenant=tenant_of(request)
        )
    if queued is None:
        raise NotFound(f"no request {request_id[:ID_MAX]!r}", field="request_id")
    return json_response(
        envelope(200, "paused" if paused else "resumed", request_id, queued=queued)
    )


@router.post("/voice/call/{request_id}/pause", summary="Stop claiming a request's queued calls")
async def pause(request: Request, request_id: str) -> JSONResponse:
    """Queued calls stay queued and are not dialed until `resume`; live calls finish;
    `DELETE /voice/call/{request_id}` still cancels."""
    return await _pause(request, request_id, True)


@router.post("/voice/call/{request_id}/resume", summary="Claim a paused request's calls again")
async def resume(request: Request, request_id: str) -> JSONResponse:
    return await _pause(request, request_id, False)


# --- GET /voice/call/status/{id} ---------------------------------------------------------


def _report_ref(info: q.ReportInfo) -> dict[str, Any]:
    return {
        "id": info.report_id,
        "location": f"/report/{info.report_id}",
        "status": info.status,
        "total": info.total,
        "done": info.done,
    }


@router.get("/voice/call/status/{id}", summary="Status of a request or of one call")
async def status(
    request: Request,
    id: str,
    attempts: Annotated[Literal["all"] | None, Query()] = None,
) -> JSONResponse:
    """A call id, or a request with one recipient, gives `record`; a request with
    several recipients gives a `report` reference."""
    store = store_of(request)
    tenant = tenant_of(request)
    if len(id) > ID_MAX:
        raise NotFound(f"no request or call {id[:ID_MAX]!r}", field="id")
    call = await q.get_call(store, id, tenant=tenant)
    if call is None:
        info = await q.report_info(store, request_id=id, tenant=tenant)
        if info is None:
            raise NotFound(f"no request or call {id!r}", field="id")
        if info.total != 1:
            return json_response(envelope(200, "accepted", id, report=_report_ref(info)))
        call = await q.first_call(store, id)
        if call is None:
            raise NotFound(f"request {id!r} has no calls", field="id")
    extra: dict[str, Any] = {"record": record_dict(call)}
    if attempts == "all":
        earlier = await q.call_attempts(store, call.id)
        extra["attempts"] = [*earlier, record_dict(call)]
    return json_response(envelope(200, "accepted", id, **extra))


# --- GET /report/{report_id} -------------------------------------------------------------


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)
    return buf.getvalue()


async def _next_cursor(store: Store, request_id: str, after: int, limit: int) -> str | None:
    end = await q.next_cursor(store, request_id, after_seq=after, limit=limit)
    return None if end is None else str(end)


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return -1
    if not cursor.isdigit() or len(cursor) > 12:
        raise ValidationFailed(
            "cursor must be a next_cursor value from an earlier page", field="cursor"
        )
    return int(cursor)


@router.get("/report/{report_id}", summary="The call records of a request")
async def report(
    request: Request,
    report_id: str,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
    cursor: Annotated[str | None, Query(max_length=12)] = None,
    format: Annotated[Literal["json", "ndjson", "csv"], Query()] = "json",
) -> Any:
    """Records in recipient order. `report_status` is `pending` or `ready` (the
    envelope's `status` is the HTTP status). Page with `limit` and `cursor`
    (`next_cursor`; for ndjson/csv the `X-Next-Cursor` header); without `limit`
    every record is streamed."""
    store = store_of(request)
    after = _parse_cursor(cursor)
    info = None
    if len(report_id) <= ID_MAX:
        info = await q.report_info(store, report_id=report_id, tenant=tenant_of(request))
    if info is None:
        raise NotFound(f"no report {report_id[:ID_MAX]!r}", field="report_id")
    headers = {"X-Report-Status": info.status, "X-Report-Total": str(info.total)}
    next_cursor = None
    if limit is not None:
        next_cursor = await _next_cursor(store, info.request_id, after, limit)
        if next_cursor is not None:
            headers["X-Next-Cursor"] = next_cursor
    if format == "ndjson":

        async def ndjson() -> AsyncIterator[str]:
            # the database writes each record's JSON (store.records.record_json_sql)
            async for chunk in q.iter_report_lines(
                store, info.request_id, fmt="json", sep="\n", after_seq=after, limit=limit
            ):
                yield chunk + "\n"

        return StreamingResponse(ndjson(), media_type="application/x-ndjson", headers=headers)

    if format == "csv":

        async def csv_rows() -> AsyncIterator[str]:
            yield _csv_line(list(RECORD_FIELDS))
            # the database writes each CSV row (store.records.record_csv_sql)
            async for chunk in q.iter_report_lines(
                store, info.request_id, fmt="csv", sep="\r\n", after_seq=after, limit=limit
            ):
                yield chunk + "\r\n"

        headers["Content-Disposition"] = f'attachment; filename="report-{report_id}.csv"'
        return StreamingResponse(csv_rows(), media_type="text/csv; charset=utf-8", headers=headers)

    head = envelope(200, "accepted", report_id, report_status=info.status, total=info.total)

    async def document() -> AsyncIterator[str]:
        yield json.dumps(head)[:-1] + ', "records": ['
        first = True
        async for chunk in q.iter_report_lines(
            store, info.request_id, fmt="json", sep=",", after_seq=after, limit=limit
        ):
            yield chunk if first else "," + chunk
            first = False
        yield '], "next_cursor": ' + json.dumps(next_cursor) + "}"

    return StreamingResponse(document(), media_type="application/json", headers=headers)


# --- DELETE /voice/call/{request_id} -----------------------------------------------------


@router.delete("/voice/call/{request_id}", summary="Cancel the calls of a request")
async def cancel(request: Request, request_id: str) -> JSONResponse:
    """Queued calls become `canceled` now; live calls are hung up by the dialer."""
    counts = None
    if len(request_id) <= ID_MAX:
        counts = await q.cancel_request(store_of(request), request_id, tenant=tenant_of(request))
    if counts is None:
        raise NotFound(f"no request {request_id[:ID_MAX]!r}", field="request_id")
    canceled, in_progress = counts
    if not in_progress:  # final now: its sealed SIP password goes (else at its last call)
        async with store_of(request).session() as s, s.begin():
            await sealing.erase_if_final(s, request_id)
    return json_response(
        envelope(200, "canceled", request_id, canceled=canceled, in_progress=in_progress)
    )


# --- GET /health -------------------------------------------------------------------------


@router.get("/health", summary="Liveness and database check")
async def health(request: Request) -> JSONResponse:
    rid = request_id_of(request)
    try:
        await store_of(request).ping()
    except StoreError as exc:
        body = error_body(exc.code, 503, exc.message, None, rid, db="error")
        return json_response(body, 503)
    trunks = await _trunk_registrations(request)
    if trunks is None:
        return json_response(envelope(200, "ok", rid, db="ok"))
    return json_response(envelope(200, "ok", rid, db="ok", trunks=trunks))


async def _trunk_registrations(request: Request) -> dict[str, Any] | None:
    """The REGISTER bindings of the fleet's live dialers, by trunk (issue 15), as
    each dialer wrote them to the database; None when no dialer registers a trunk
    or they cannot be read. No secrets in them."""
    settings = request.app.state.settings
    try:
        trunks = await registration_rows.fleet(store_of(request), settings.node_timeout)
    except StoreError as exc:
        logger.warning("health: cannot read the trunk registrations: %s", exc.message)
        return None
    return trunks or None
