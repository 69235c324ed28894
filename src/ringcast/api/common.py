"""What every route module asks of a request: the open store, the settings, the
install's sealer, the caller's tenant, a JSON response."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ringcast import sealing
from ringcast.config import Settings
from ringcast.errors import StoreError
from ringcast.sealing import Sealer
from ringcast.store.db import Store


def store_of(request: Request) -> Store:
    """The app's open Store (StoreError, mapped to 503, before the lifespan opened it)."""
    store: Store | None = request.app.state.store
    if store is None:
        raise StoreError("the database is not open")
    return store


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def sealer_of(request: Request) -> Sealer | None:
    """The install's key for inline credentials (ringcast.sealing), made once."""
    state = request.app.state
    if not hasattr(state, "sealer"):
        state.sealer = sealing.sealer_for(store_of(request).url, settings_of(request).secret_key)
    sealer: Sealer | None = state.sealer
    return sealer


def tenant_of(request: Request) -> str:
    """The caller's tenant; authentication middleware sets `request.state.tenant`."""
    return str(getattr(request.state, "tenant", "default"))


def json_response(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)
