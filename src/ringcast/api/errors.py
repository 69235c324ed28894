"""The one mapping from errors to the response envelope.

Every response, success or error, is ``{"code", "status", "data", "request_id", ...}``;
errors add ``"data": "error"`` and ``"error": {"message", "field"}``. Codes are
stable: they come from the RingcastError classes (see :mod:`ringcast.errors`)
and the table below for plain HTTP errors.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ringcast.errors import RingcastError

logger = logging.getLogger(__name__)


class BadRequest(RingcastError):
    """The request body is not valid JSON."""

    code = 1002
    http_status = 400


class BodyTooLarge(RingcastError):
    """The request body is too large."""

    code = 1003
    http_status = 413


class MethodNotAllowed(RingcastError):
    """Method not allowed."""

    code = 1005
    http_status = 405


HTTP_CODES = {400: BadRequest.code, 404: 1004, 405: MethodNotAllowed.code, 413: BodyTooLarge.code}

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "status", "data", "request_id", "error"],
    "properties": {
        "code": {"type": "integer", "minimum": 1},
        "status": {"type": "integer"},
        "data": {"type": "string", "enum": ["error"]},
        "request_id": {"type": "string"},
        "error": {
            "type": "object",
            "required": ["message", "field"],
            "properties": {
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "field": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        },
    },
}
_ERROR_STATUSES = {
    400: "The body is not valid JSON, or is empty",
    401: "A valid API key is required (Authorization: Bearer KEY)",
    403: "This API key may not do that (the install-wide do-not-call list: operator keys)",
    404: "No such request, call, report or entry (or another tenant's)",
    413: "The body is too large",
    422: "The request is not valid",
    429: "Too many POST requests for this API key (see Retry-After)",
    503: "The database is unavailable",
}
# Every operation may answer these with the error envelope (documented in OpenAPI).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, text in _ERROR_STATUSES.items()
}
_PATH_IDS = ("id", "request_id", "report_id")


def envelope(status: int, data: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """The response envelope; `code` is 0 for any 2xx status."""
    return {"code": 0, "status": status, "data": data, "request_id": request_id, **extra}


ID_MAX = 64  # characters of a request, call or report id; a longer one names nothing


def request_id_of(request: Request) -> str:
    """The id an answer refers to: the id in the path (cut to ID_MAX characters: an
    answer never echoes an arbitrarily long path), else a fresh one for the logs."""
    for name in _PATH_IDS:
        value = request.path_params.get(name)
        if isinstance(value, str) and value:
            return value[:ID_MAX]
    return str(uuid.uuid4())


def error_body(
    code: int, status: int, message: str, field: str | None, request_id: str, **extra: Any
) -> dict[str, Any]:
    return {
        "code": code,
        "status": status,
        "data": "error",
        "request_id": request_id,
        "error": {"message": message, "field": field},
        **extra,
    }


def error_response(
    exc: RingcastError, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.http_status, exc.message, exc.field, request_id),
        status_code=exc.http_status,
        headers=headers,
    )


def field_path(loc: Sequence[int | str]) -> str | None:
    """("body", "recipients", 3, "to") -> "recipients[3].to"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-after", "function-plain")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or None


def _message(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    field = field_path(error.get("loc", ()))
    return f"{field}: {msg}" if field else msg


async def _ringcast_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RingcastError):  # pragma: no cover - registration guarantees it
        raise exc
    if exc.http_status >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc, request_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            BadRequest("the request body is not valid JSON"), request_id_of(request)
        )
    if (
        errors
        and errors[0].get("type") == "missing"
        and tuple(errors[0].get("loc", ())) == ("body",)
    ):
        return error_response(BadRequest("the request body is empty"), request_id_of(request))
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    details = [{"message": _message(e), "field": field_path(e.get("loc", ()))} for e in errors[:20]]
    body = error_body(
        1001, 422, _message(first), field_path(first.get("loc", ())), request_id_of(request)
    )
    body["error"]["errors"] = details  # never the input values: they may hold secrets
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    status = exc.status_code
    code = HTTP_CODES.get(status, 2000 + status)  # 2xxx: plain HTTP errors
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    headers = getattr(exc, "headers", None)
    if status == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse(
        error_body(code, status, message, None, request_id_of(request)),
        status_code=status,
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path, as the OpenAPI document lists them.

    The most specific path template wins, as in routing: /voice/call/play is POST
    only, though DELETE /voice/call/{request_id} would take "play" as an id.
    Routes outside the document fall back to asking each route whether it would
    match under each method (only the public `matches()` contract, so routers
    FastAPI wraps answer too)."""
    path = request.url.path
    best: tuple[int, list[str]] | None = None
    for pattern, params, methods in _resources(request.app):
        if pattern.fullmatch(path) and (best is None or params < best[0]):
            best = (params, methods)
    if best is not None:
        return best[1]
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _resources(app: FastAPI) -> list[tuple[re.Pattern[str], int, list[str]]]:
    """(path regex, number of parameters, methods) of every path in the OpenAPI
    document, built once per app."""
    cached: list[tuple[re.Pattern[str], int, list[str]]] | None = getattr(
        app.state, "resources", None
    )
    if cached is None:
        cached = []
        for template, operations in app.openapi().get("paths", {}).items():
            parts = re.split(r"(\{[^}]+\})", template)
            regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
            methods = [m for m in _METHODS if m.lower() in operations]
            cached.append((re.compile(regex), len(parts) // 2, methods))
        app.state.resources = cached
    return cached


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body(RingcastError.code, 500, "internal error", None, request_id_of(request)),
        status_code=500,
    )


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(RingcastError, _ringcast_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
