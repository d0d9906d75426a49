"""``App.current_request``: the HTTP request a handler is answering, as fal's SDK gives it.

fal sets a ``RequestContext`` (request id, endpoint, object-lifecycle preference, headers)
around every HTTP request; outside one (``setup()``, a WebSocket or realtime session) the
property holds an empty context. Here the ``CurrentRequest`` middleware only sets a context
variable (``falkit.app.request_context``, one ``set`` per request); the context is built
when a handler reads it. A sync handler runs in a worker thread that gets a copy of the
context, so it sees its request too.

fal's platform always sends ``x-fal-request-id``; a local client may not, so an id is made
for the request on first use, and the 500 answer's ``x-fal-request-id`` is that same id.
"""

from __future__ import annotations

import json
import secrets
from functools import partial
from typing import TYPE_CHECKING

from ..app import RequestContext, request_context

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID_HEADER = "x-fal-request-id"
ENDPOINT_HEADER = "x-fal-endpoint"
LIFECYCLE_HEADER = "x-fal-object-lifecycle-preference"
_REQUEST_ID_RAW = REQUEST_ID_HEADER.encode()
_ID_KEY = "falkit.request_id"


def request_id(scope: Scope) -> str:
    """The request's id: the client's ``x-fal-request-id``, else one made for it (once)."""
    # Kept in the request's ``state`` dict, which a middleware's copy of the scope (fal's
    # URL layout) shares with the original, so the 500 handler outside sees it too.
    holder = scope.get("state")
    if not isinstance(holder, dict):
        holder = scope
    rid = holder.get(_ID_KEY)
    if rid is None:
        for name, value in scope.get("headers", ()):
            if name == _REQUEST_ID_RAW:
                rid = value.decode("latin-1")
                break
        else:
            rid = secrets.token_hex(6)
        holder[_ID_KEY] = rid
    return rid


def context_of(scope: Scope) -> RequestContext:
    """fal's ``RequestContext`` of the HTTP request ``scope``."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return RequestContext(
        request_id=request_id(scope),
        endpoint=headers.get(ENDPOINT_HEADER),
        lifecycle_preference=_lifecycle(headers.get(LIFECYCLE_HEADER)),
        headers=headers,
    )


def _lifecycle(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class CurrentRequest:
    """ASGI middleware making each HTTP request's scope the current one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = request_context.set(partial(context_of, scope))
        try:
            await self.app(scope, receive, send)
        finally:
            request_context.reset(token)
