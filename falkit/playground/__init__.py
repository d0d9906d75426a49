"""The ipywidgets playground: see every route of a served App and send HTTP, WebSocket
and realtime requests to it live, with the server's logs and latency alongside, and
live media (camera, microphone, sketch pad, looped images) into realtime routes.

Everything here talks to the server through its public surface (``falkit.Client``,
``server.routes``, ``server.stats()``, ``server.ring``, ``/openapi.json``)."""

from __future__ import annotations

import sys
import types
from typing import Any

from ..exceptions import FormError
from ..serving import browser_url
from .card import ServeCard, serve_card
from .form import SchemaForm
from .http_console import HttpConsole
from .live_source import LiveSource
from .live_view import LiveView
from .realtime_console import RealtimeConsole
from .widget import Playground, playground
from .ws_console import WebSocketConsole

__all__ = [
    "FormError",
    "HttpConsole",
    "LiveSource",
    "LiveView",
    "Playground",
    "RealtimeConsole",
    "SchemaForm",
    "ServeCard",
    "WebSocketConsole",
    "browser_url",
    "playground",
    "serve_card",
]


class _PlaygroundModule(types.ModuleType):
    # ``falkit.playground`` is this package once it is imported (the import system sets
    # the attribute), so the package itself answers ``falkit.playground(server)``.
    def __call__(self, server: Any) -> Playground:
        return playground(server)


sys.modules[__name__].__class__ = _PlaygroundModule
