"""fal-js's proxy protocol, answered by the app itself, so a web front end built with
``@fal-ai/client`` talks to the local app with ``proxyUrl`` as its only setting::

    fal.config({ proxyUrl: "http://127.0.0.1:8000/.fal/proxy" });

``@fal-ai/client`` sends every request it would send to fal to ``proxyUrl`` instead, with
the URL it meant in the ``x-fal-target-url`` header, as ``@fal-ai/server-proxy`` expects.
Here the target is mapped onto this server's own paths and the request goes on down the
stack (guard already passed, limits, queue and storage all apply):

==================================  ===========================================
target                              local path
==================================  ===========================================
``https://fal.run/<owner>/<app>/p``  ``/<owner>/<app>/p`` (fal's URL layout)
``https://queue.fal.run/...``        ``/.fal/queue/...``
``https://rest.fal.ai/...``          ``/.fal/rest/...`` (tokens, storage)
``https://v3.fal.media/...``         ``/.fal/cdn/...``
==================================  ===========================================

A target off fal's domains is refused (403), as ``@fal-ai/server-proxy`` refuses one: the
proxy never becomes a way to reach anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .messages import header, send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

PROXY_PATH = "/.fal/proxy"
TARGET_HEADER = b"x-fal-target-url"


def local_path(target: str) -> str | None:
    """The local path (with its query) of a fal URL, ``None`` for a URL off fal."""
    parts = urlsplit(target)
    host = (parts.hostname or "").lower()
    query = f"?{parts.query}" if parts.query else ""
    if host.startswith("queue.") and host.endswith(".fal.run"):
        return f"/.fal/queue{parts.path}{query}"
    if host == "fal.run" or host.endswith(".fal.run"):
        return f"{parts.path}{query}"
    if host.endswith(".fal.media"):
        return f"/.fal/cdn{parts.path}{query}"
    if host == "fal.ai" or host.endswith(".fal.ai"):
        return f"/.fal/rest{parts.path}{query}"
    return None


class FalProxy:
    """ASGI middleware: a request to ``/.fal/proxy`` with ``x-fal-target-url`` becomes the
    request to the local path of that URL; everything else goes to ``app`` unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != PROXY_PATH:
            await self.app(scope, receive, send)
            return
        target = header(scope, TARGET_HEADER)
        if target is None:
            await send_json(send, 400, {"detail": "missing the x-fal-target-url header"})
            return
        path = local_path(target.decode("latin-1"))
        if path is None:
            detail = f"x-fal-target-url {target.decode('latin-1')!r} is not a fal URL"
            await send_json(send, 403, {"detail": detail})
            return
        path, _, query = path.partition("?")
        headers = [(k, v) for k, v in scope["headers"] if k != TARGET_HEADER]
        scope = dict(
            scope,
            path=path,
            raw_path=path.encode(),
            query_string=query.encode(),
            headers=headers,
        )
        await self.app(scope, receive, send)
