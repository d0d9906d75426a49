"""``build_asgi``: an App instance in, a FastAPI application out. Pure: no sockets, no
threads; the server, the CLI and Ray Serve all serve what this returns."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._fastroute import install as install_fast_routes
from ._gateway import FalGateway
from ._openapi import install_fal_openapi
from ._request import REQUEST_ID_HEADER, CurrentRequest
from ._request import request_id as current_request_id
from ._timing import ServerTiming, timed
from .routes import RouteSpec

logger = logging.getLogger("falkit.server")

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .app import App


async def call_hook(fn: Callable[[], Any]) -> Any:
    """Run a lifecycle hook (``setup``/``teardown``), sync or async. Sync hooks run in a
    worker thread so that a server already serving stays responsive meanwhile."""
    if inspect.iscoroutinefunction(fn):
        return await fn()
    try:
        result = await asyncio.to_thread(fn)
    except RuntimeError as exc:
        # At interpreter exit (the atexit hook stopping servers) the executor refuses new
        # work; nothing else is served by then, so the hook runs right here.
        if "after shutdown" not in str(exc) and "interpreter shutdown" not in str(exc):
            raise
        result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class FalURLLayout:
    """Answers every route under ``/<owner>/<app-name>/...`` too, as fal's gateway does,
    so clients built for fal's URLs (``fal_client``) reach the local server."""

    def __init__(self, app: ASGIApp, app_name: str) -> None:
        self.app = app
        self.app_name = app_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            parts = scope["path"].split("/", 3)
            if len(parts) >= 3 and parts[1] and parts[2] == self.app_name:
                scope = dict(scope)
                scope["path"] = "/" + (parts[3] if len(parts) > 3 else "")
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def _add_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from ._safejson import validation_error

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Path {request.url.path} not found"
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log ring before the answer leaves, so a client
        # that reads the logs after its 500 finds it; the client gets fal's body and
        # nothing of the kernel. Starlette re-raises afterwards: the mark keeps uvicorn's
        # copy of the same traceback out of the ring.
        # The request id ties the client's 500 to its traceback in the logs (the
        # playground shows that one, not merely the newest).
        request_id = current_request_id(request.scope)
        logger.error(
            "%s %s failed (request %s)",
            request.method,
            request.url.path,
            request_id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        exc.__falkit_logged__ = True  # type: ignore[attr-defined]
        return JSONResponse(
            {"detail": "Internal Server Error"}, 500, headers={REQUEST_ID_HEADER: request_id}
        )

    app.add_exception_handler(HTTPException, not_found)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal)


def _add_route(app: FastAPI, instance: App, spec: RouteSpec) -> None:
    handler = getattr(instance, spec.method)
    if spec.kind == "http":
        app.add_api_route(spec.path, timed(handler), methods=["POST"], name=spec.method)
    elif spec.kind == "websocket":
        app.add_api_websocket_route(spec.path, handler, name=spec.method)
    else:
        from .realtime import realtime_endpoint

        app.add_api_websocket_route(spec.path, realtime_endpoint(handler, spec), name=spec.method)


def _health_route(instance: App) -> Callable[[], Any]:
    if inspect.iscoroutinefunction(instance.health):

        async def health_async() -> Any:
            return await instance.health()

        return health_async

    def health() -> Any:
        return instance.health()

    return health


def _lifespan(instance: App) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await call_hook(instance.setup)
        try:
            yield
        finally:
            await call_hook(instance.teardown)

    return lifespan


def build_asgi(instance: App, *, lifespan: bool = True) -> FastAPI:
    """The FastAPI application serving ``instance``'s routes with fal's error bodies,
    ``GET /health`` and fal's URL layout. With ``lifespan=True`` the ASGI lifespan runs
    ``setup()``/``teardown()``; falkit's own server runs them itself (``lifespan=False``)."""
    from fastapi import FastAPI

    from ._safejson import SafeJSONResponse

    cls = type(instance)
    app = FastAPI(
        title=cls.__name__,
        description=(cls.__doc__ or "").strip(),
        lifespan=_lifespan(instance) if lifespan else None,
        default_response_class=SafeJSONResponse,  # bad input is never a 500 (see _safejson)
    )
    _add_error_handlers(app)
    app.add_api_route("/health", _health_route(instance), methods=["GET"], name="health")
    for spec in cls.routes():
        _add_route(app, instance, spec)
    install_fast_routes(app)  # one JSON body in: the short path (see _fastroute)
    app.add_middleware(CurrentRequest)  # App.current_request (see _request)
    app.add_middleware(ServerTiming)  # the Server-Timing header (see _timing)
    app.add_middleware(FalURLLayout, app_name=cls.app_name)
    # Outermost: fal's queue and token endpoints (``/.fal/...``) for ``fal_client``.
    app.add_middleware(FalGateway)
    install_fal_openapi(app, instance)
    return app
