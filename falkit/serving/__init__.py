"""Serving an App from this process: ``serve()`` and the registry of running servers,
``Server`` (uvicorn in a daemon thread with its own loop) and the generations it holds
(swap, restart, retire), the card, the log ring, request stats, and the kernel's tuning.

Public here, for the rest of falkit: what ``falkit`` exports, plus the card, the
hub-aware browser links, ``on_serve`` (to follow an app served again) and ``percentile``.
"""

from __future__ import annotations

from .card import card_html, card_rows, card_text
from .connections import ConnectionSpec
from .kernel import running_kernel
from .proxy import browser_url, proxy_root_path
from .registry import get_server, on_serve, serve, servers, stop_all
from .server import Server
from .stats import percentile

__all__ = [
    "ConnectionSpec",
    "Server",
    "browser_url",
    "card_html",
    "card_rows",
    "card_text",
    "get_server",
    "on_serve",
    "percentile",
    "proxy_root_path",
    "running_kernel",
    "serve",
    "servers",
    "stop_all",
]
