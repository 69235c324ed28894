"""The FastAPI application factory and its lifespan.

``create_app(settings, store=None, *, lifespan_hooks=())``:

- with ``store=None`` the lifespan opens ``settings.db``, migrates it, and
  closes it at shutdown; a store passed in is used as is and left open (its
  owner closes it).
- ``lifespan_hooks`` are factories ``hook(app.state) -> AsyncContextManager``,
  entered in order once the store is open (``app.state.store`` and
  ``app.state.settings`` are set) and exited in reverse order at shutdown.
  ``ringcast serve`` passes the dialer here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import ringcast
from ringcast import metrics
from ringcast.api import dashboard, dnc, errors, play, recordings, routes, voices
from ringcast.api.auth import AuthMiddleware
from ringcast.api.schemas import PlayRequest, ReplayRequest
from ringcast.config import Settings
from ringcast.store.db import Store, store_for

logger = logging.getLogger(__name__)

LifespanHook = Callable[[State], AbstractAsyncContextManager[Any]]


class BodyLimit:
    """Refuse request bodies above `limit` bytes with 413, by Content-Length and by
    counting the bytes actually received (chunked uploads have no Content-Length).

    The body is buffered here, up to the limit, and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        disconnected: Message | None = None
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks  # held while the app runs otherwise: a second copy of a big body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, body
            if not replayed:
                replayed = True
                if disconnected is not None:
                    return disconnected
                message: Message = {"type": "http.request", "body": body, "more_body": False}
                body = b""  # the app holds it from here, and can let it go
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        exc = errors.BodyTooLarge(f"the request body is larger than {self.limit} bytes")
        body = errors.error_body(exc.code, exc.http_status, exc.message, None, str(uuid.uuid4()))
        response = JSONResponse(body, status_code=exc.http_status, headers={"connection": "close"})
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


BEARER = {"bearer": {"type": "http", "scheme": "bearer", "description": "ringcast keys create"}}


def _document_play_body(app: FastAPI) -> None:
    """Put PlayRequest and ReplayRequest (parsed by hand in the routes) into the
    OpenAPI components, and declare the bearer scheme every operation but /health
    needs (the "Authorize" button of /docs)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PlayRequest, ReplayRequest):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            schema["components"]["securitySchemes"] = BEARER
            # a key once any exists; none on a loopback server without keys (the {})
            schema["security"] = [{"bearer": []}, {}]
            for path, operations in schema.get("paths", {}).items():
                if path == "/health":
                    for operation in operations.values():
                        operation["security"] = []  # open: no key needed
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings,
    store: Store | None = None,
    *,
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> FastAPI:
    """The ringcast HTTP API (see the module docstring for the lifespan contract)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if store is None:
                own = store_for(settings)
                stack.push_async_callback(own.close)
                await own.migrate()
                app.state.store = own
            for hook in lifespan_hooks:
                await stack.enter_async_context(hook(app.state))
            logger.info("API ready on %s", settings.http_bind)
            yield
        logger.info("API stopped")

    app = FastAPI(
        title="ringcast",
        version=ringcast.__version__,
        description="Voice broadcast over SIP: queue calls, play prompts, read call records.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    _document_play_body(app)
    if settings.piper_voices:  # the voices requests may name (media loads only then)
        from ringcast.media import tts

        tts.configure_piper_voices(settings.piper_voices)
    app.state.settings = settings
    app.state.store = store
    errors.install(app)
    app.include_router(play.router)
    app.include_router(routes.router)
    app.include_router(dnc.router)
    app.include_router(recordings.router)
    app.include_router(voices.router)
    app.include_router(dashboard.router)
    app.include_router(metrics.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, settings=settings)  # outermost: before any body is read
    return app
