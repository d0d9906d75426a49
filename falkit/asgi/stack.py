"""``build_asgi``: an App instance in, the whole per-request stack out. Pure: no sockets, no
threads; the server, the CLI and Ray Serve all serve what this returns.

A request takes the layers below in this order, outermost first (``build_asgi`` lists them
in the same order, layer 9 through ``hooks.add_app_hooks``, and nothing else adds one):

1. ``Guard`` (``guard``): the ``Host`` allow-list, API key, foreign browser origins, body
   size.
2. ``FalProxy`` (``falproxy``): fal-js's proxy protocol (``/.fal/proxy`` with
   ``x-fal-target-url``) turned into the local request it stands for.
3. ``FalStorage`` (``storage``): fal's file storage (uploads, files served back).
4. ``FalGateway`` (``gateway``): fal's ``/.fal/`` queue and token endpoints. A queued request
   runs later through the layers from 5 on, as if it had come directly.
5. ``FalURLLayout`` (``layout``): ``/<owner>/<app-name>/<route>`` becomes ``/<route>``.
6. ``RequestLimiter`` (``limits``): ``max_concurrency`` x ``max_multiplexing`` slots and
   ``request_timeout``, for every route request however it came (direct, fal's URL layout,
   the queue) since it sees the route's own path.
7. ``ServerTiming`` (``timing``): the ``Server-Timing`` header.
8. ``CurrentRequest`` (``context``): ``App.current_request``.
9. ``RunnerHeaders`` (``hooks``): fal's runner: the App is ``fal.ref``'s current app;
   ``x-fal-request-id`` and ``X-Fal-Runner-Hints`` on every answer. After it, the App's own
   middlewares (``_add_extra_middlewares``), in the order it added them.
10. FastAPI: fal's error answers (``errors``), then the routes: HTTP endpoints (a JSON body
    takes ``fastroute``'s short path), raw WebSockets, realtime (``realtime``), the App's
    ``_add_extra_routes`` (``GET /health`` by default), ``/openapi.json`` with fal's
    extensions (``openapi``) and ``/docs``.

Starlette's own ``ServerErrorMiddleware`` wraps all of them: an exception a handler raises
becomes fal's 500 there.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..routes import RouteSpec
from .context import CurrentRequest
from .falproxy import FalProxy
from .fastroute import install as install_fast_routes
from .gateway import FalGateway, QueuedRequests
from .guard import Guard, SecuritySpec
from .hooks import add_app_hooks
from .layout import FalURLLayout
from .limits import LimitSpec, RequestLimiter
from .openapi import install_fal_openapi
from .realtime import DEFAULT_MAX_MESSAGE_SIZE, realtime_endpoint
from .storage import FalStorage, FileStore
from .timing import ServerTiming, timed

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..app import App


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


def _add_route(app: FastAPI, instance: App, spec: RouteSpec) -> None:
    handler = getattr(instance, spec.method)
    if spec.kind == "http":
        app.add_api_route(spec.path, timed(handler), methods=["POST"], name=spec.method)
    elif spec.kind == "websocket":
        app.add_api_websocket_route(spec.path, handler, name=spec.method)
    else:
        app.add_api_websocket_route(spec.path, realtime_endpoint(handler, spec), name=spec.method)


def _lifespan(instance: App) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await call_hook(instance.setup)
        try:
            yield
        finally:
            try:
                instance.handle_exit()  # fal's order: told to stop, then torn down
            finally:
                await call_hook(instance.teardown)  # a failing handle_exit skips nothing

    return lifespan


def build_asgi(
    instance: App,
    *,
    lifespan: bool = True,
    security: SecuritySpec | None = None,
    limits: LimitSpec | None = None,
    queue: QueuedRequests | None = None,
    files: FileStore | None = None,
    ws_max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    root_path: str = "",
) -> FastAPI:
    """The FastAPI application serving ``instance``: its routes behind every layer of the
    module docstring, in that order.

    With ``lifespan=True`` the ASGI lifespan runs ``setup()``/``teardown()``; falkit's own
    server runs them itself (``lifespan=False``). ``security`` adds the guard (none by
    default: the server passes its own); ``limits`` defaults to the class's fal options;
    ``queue`` keeps queued requests and ``files`` uploaded files (a server passes ones that
    outlive hot swaps);
    ``ws_max_size`` is the largest realtime message; ``root_path`` is where a proxy serves
    the app (``/docs`` loads ``openapi.json`` from there).

    Example::

        from starlette.testclient import TestClient
        with TestClient(build_asgi(MyApp())) as client:
            client.post("/", json={"prompt": "hi"})
    """
    # FastAPI loads on the first build, not on ``import falkit`` (benchmarks/startup.py).
    from fastapi import FastAPI
    from starlette.middleware import Middleware

    from .errors import SafeJSONResponse, add_error_handlers

    cls = type(instance)
    limits = limits if limits is not None else LimitSpec.of(cls)
    routes = {spec.path for spec in cls.routes()}
    stack = [
        *(
            [Middleware(Guard, spec=security, proxy_root=root_path)]
            if security is not None and security.active
            else []
        ),
        Middleware(FalProxy),
        Middleware(FalStorage, store=files),
        Middleware(FalGateway, requests=queue),
        Middleware(FalURLLayout, app_name=cls.app_name),
        *([Middleware(RequestLimiter, spec=limits, route_paths=routes)] if limits.active else []),
        Middleware(ServerTiming),
        Middleware(CurrentRequest),
    ]
    app = FastAPI(
        title=cls.__name__,
        description=(cls.__doc__ or "").strip(),
        lifespan=_lifespan(instance) if lifespan else None,
        default_response_class=SafeJSONResponse,  # bad input is never a 500 (see errors)
        middleware=stack,
    )
    # An attribute, not the deprecated keyword (Binder/JupyterHub: see falkit.serving).
    app.root_path = root_path
    app.state.ws_max_size = ws_max_size
    app.state.limits = limits
    add_error_handlers(app)
    for spec in cls.routes():
        _add_route(app, instance, spec)
    add_app_hooks(app, instance)  # layer 9, the App's middlewares, its extra routes
    install_fast_routes(app)  # one JSON body in: the short path (see fastroute)
    install_fal_openapi(app, instance)
    return app
