"""Do-not-call list endpoints: POST/GET/DELETE /dnc.

An entry is a number or a user, not a URI (``sip:+1 (555) 010-0001@gw``,
``tel:+15550100001`` and ``+15550100001`` are one entry; see
:mod:`ringcast.store.dnc`). ``?list=tenant`` (the default) is the caller's
tenant's list; ``?list=install`` the install-wide list, which only an operator
key (``ringcast keys create --operator``) may read or change. A recipient on
either list is not called (its record: outcome ``suppressed``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ringcast.api.auth import api_key_of
from ringcast.api.common import store_of, tenant_of
from ringcast.api.errors import envelope, request_id_of
from ringcast.api.fields import no_control
from ringcast.errors import NotFound, RingcastError
from ringcast.store import dnc as store_dnc

router = APIRouter()

MAX_ENTRIES = 10_000  # per POST

ListName = Annotated[
    Literal["tenant", "install"],
    Query(alias="list", description="tenant: this key's tenant's list; install: install-wide"),
]


class Forbidden(RingcastError):
    """This API key may not do that."""

    code = 1010
    http_status = 403


class DncAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[Annotated[str, Field(min_length=1, max_length=store_dnc.MAX_ENTRY)]] = Field(
        min_length=1,
        max_length=MAX_ENTRIES,
        description="numbers or users: +15550100001, tel:+15550100001, sip:+1555...@gw, alice",
    )

    @field_validator("entries")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            no_control(entry)
            if not store_dnc.normalize(entry):
                raise ValueError("an entry must hold a number or a user name")
            out.append(entry.strip())
        return out


def _list_owner(request: Request, which: str) -> str:
    """The tenant value of the list `which` names for this caller (403 for the
    install-wide list without an operator key; an open server is its operator's)."""
    if which == "tenant":
        return tenant_of(request)
    key = api_key_of(request.state)
    if key is not None and not key.operator:
        raise Forbidden(
            "only an operator key (ringcast keys create --operator) may use the "
            "install-wide do-not-call list",
            field="list",
        )
    return store_dnc.INSTALL_WIDE


@router.post("/dnc", summary="Add numbers or users to a do-not-call list")
async def dnc_add(request: Request, body: DncAdd, which: ListName = "tenant") -> JSONResponse:
    owner = _list_owner(request, which)
    added = await store_dnc.add_entries(store_of(request), owner, body.entries)
    return JSONResponse(envelope(200, "added", request_id_of(request), added=added))


@router.get("/dnc", summary="List a do-not-call list")
async def dnc_list(
    request: Request,
    which: ListName = "tenant",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JSONResponse:
    owner = _list_owner(request, which)
    rows = await store_dnc.list_entries(store_of(request), owner, after=cursor, limit=limit)
    entries = [{"entry": e, "created_at": t} for e, t in rows]
    next_cursor = rows[-1][0] if len(rows) == limit else None
    return JSONResponse(
        envelope(200, "ok", request_id_of(request), entries=entries, next_cursor=next_cursor)
    )


@router.delete("/dnc/{entry:path}", summary="Remove a number or user from a do-not-call list")
async def dnc_remove(request: Request, entry: str, which: ListName = "tenant") -> JSONResponse:
    owner = _list_owner(request, which)
    if not await store_dnc.remove_entry(store_of(request), owner, entry):
        raise NotFound(f"{entry[:64]!r} is not on the do-not-call list", field="entry")
    return JSONResponse(envelope(200, "removed", request_id_of(request)))
