"""Do-not-call list endpoints: POST/GET/DELETE /dnc, per tenant.

An entry is a SIP URI (`sip:alice@example.com`) or a user part / number
(`123456`); a recipient matches when its URI or its user part is listed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ringcast.api.errors import envelope, request_id_of
from ringcast.api.routes import _store, tenant_of
from ringcast.api.schemas import no_control
from ringcast.errors import NotFound
from ringcast.store import dnc as store_dnc

router = APIRouter()

MAX_ENTRIES = 10_000  # per POST


class DncAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1, max_length=MAX_ENTRIES
    )

    @field_validator("entries")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            no_control(entry)
            out.append(entry.strip())
        return out


@router.post("/dnc", summary="Add entries to the do-not-call list")
async def dnc_add(request: Request, body: DncAdd) -> JSONResponse:
    added = await store_dnc.add_entries(_store(request), tenant_of(request), body.entries)
    return JSONResponse(envelope(200, "added", request_id_of(request), added=added))


@router.get("/dnc", summary="List the do-not-call list")
async def dnc_list(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JSONResponse:
    rows = await store_dnc.list_entries(
        _store(request), tenant_of(request), after=cursor, limit=limit
    )
    entries = [{"entry": e, "created_at": t} for e, t in rows]
    next_cursor = rows[-1][0] if len(rows) == limit else None
    return JSONResponse(
        envelope(200, "ok", request_id_of(request), entries=entries, next_cursor=next_cursor)
    )


@router.delete("/dnc/{entry:path}", summary="Remove an entry from the do-not-call list")
async def dnc_remove(request: Request, entry: str) -> JSONResponse:
    if not await store_dnc.remove_entry(_store(request), tenant_of(request), entry):
        raise NotFound(f"{entry[:64]!r} is not on the do-not-call list", field="entry")
    return JSONResponse(envelope(200, "removed", request_id_of(request)))
