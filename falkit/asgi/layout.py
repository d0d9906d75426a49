"""fal's URL layout: every route also answers under ``/<owner>/<app-name>/...``, as fal's
gateway routes it, so clients built for fal's URLs (``fal_client``) reach a local server.
The one place that prefix is taken off: everything below sees a route's own path."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class FalURLLayout:
    """ASGI middleware mapping ``/<owner>/<app_name>/<rest>`` to ``/<rest>``."""

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
