"""fal's per-App hooks on the ASGI app, and what fal's runner does around each request.

An App may add routes and middlewares itself: fal calls ``_add_extra_middlewares(app)`` and
``_add_extra_routes(app)`` with the FastAPI app (the default of the latter adds
``GET /health``). Here they run once the routes are in, and the middlewares an App adds are
moved inside falkit's own layers, in the order added: on fal they would sit outside fal's
(CORS, metrics), but here that would put them in front of the ``Host`` guard, and the URL
layout must have given them the route's own path, which is what they see on fal.

``RunnerHeaders`` is fal's runner, innermost of falkit's layers: it makes the App
``fal.ref.get_current_app()`` for the request or session (``falkit.ref``), and gives every
HTTP answer ``x-fal-request-id`` (fal's platform adds it) and, when the App overrides
``provide_hints()``, ``X-Fal-Runner-Hints``: the hints that can be sent as latin-1, comma
separated; a ``provide_hints()`` that raises leaves the header out and is logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..app import App
from ..ref import enter_app, leave_app
from .context import REQUEST_ID_HEADER, request_id

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("falkit.server")

HINTS_HEADER = "x-fal-runner-hints"
_REQUEST_ID = REQUEST_ID_HEADER.encode()


def add_app_hooks(app: FastAPI, instance: App) -> None:
    """Add fal's runner layer, then let ``instance`` add its middlewares (placed inside
    it) and its extra routes (``GET /health`` by default) to ``app``."""
    from starlette.middleware import Middleware

    before = list(app.user_middleware)
    instance._add_extra_middlewares(app)
    # Starlette's add_middleware puts each new one first (outermost): moved, they keep
    # their order among themselves.
    added = [m for m in app.user_middleware if not any(m is b for b in before)]
    app.user_middleware[:] = [*before, Middleware(RunnerHeaders, instance=instance), *added]
    instance._add_extra_routes(app)


def runner_hints(instance: App) -> str | None:
    """The ``X-Fal-Runner-Hints`` value of ``instance`` now, ``None`` for no header."""
    try:
        hints = list(instance.provide_hints())
    except NotImplementedError:
        return None
    except Exception:
        logger.exception("%s.provide_hints() failed; no hints sent", type(instance).__name__)
        return None
    return ",".join(hint for hint in hints if _sendable(hint, instance))


def _sendable(hint: Any, instance: App) -> bool:
    try:
        hint.encode("latin-1")
    except (UnicodeEncodeError, AttributeError):
        logger.warning("hint %r of %s is not latin-1 text; left out", hint, type(instance).__name__)
        return False
    return True


class RunnerHeaders:
    """ASGI middleware: the App is the current app of each request and session; HTTP
    answers get ``x-fal-request-id`` and (when the App provides them) runner hints."""

    def __init__(self, app: ASGIApp, instance: App) -> None:
        self.app = app
        self.instance = instance
        self.hints = type(instance).provide_hints is not App.provide_hints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = enter_app(self.instance)
        try:
            if scope["type"] == "http":
                send = self._with_headers(scope, send)
            await self.app(scope, receive, send)
        finally:
            leave_app(token)

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _REQUEST_ID for name, _ in headers):
                    headers.append((_REQUEST_ID, request_id(scope).encode("latin-1")))
                hints = runner_hints(self.instance) if self.hints else None
                if hints is not None:
                    headers.append((HINTS_HEADER.encode(), hints.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers
