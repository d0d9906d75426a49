"""The status bar: app name, browser-reachable URL, device and memory, request count,
errors, p50 and p99 latency, running or stopped."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..serving import browser_url


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def status_html(server: Any) -> str:
    """The bar's HTML (one line)."""
    stats = server.stats()
    state = (
        "<b style='color:#1a7f37'>running</b>"
        if server.running
        else "<b style='color:#cf222e'>stopped</b>"
    )
    url = browser_url(server, "/docs")
    base = browser_url(server)
    facts = [
        f"<b>{html.escape(server.app_name)}</b>",
        state,
        f"<a href='{html.escape(base)}' target='_blank'>{html.escape(server.url)}</a>"
        f" (<a href='{html.escape(url)}' target='_blank'>docs</a>)",
        html.escape(server.device.describe()),
        f"requests {stats['requests']}",
        f"errors {stats['errors']}",
        f"p50 {_ms(stats['p50_ms'])}",
        f"p99 {_ms(stats['p99_ms'])}",
    ]
    return "<div class='falkit-status'>" + " · ".join(facts) + "</div>"


class StatusBar:
    """An HTML line, redrawn by ``refresh()`` only when its text changed."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.widget = W.HTML()
        self.refresh()

    def refresh(self) -> None:
        text = status_html(self.server)
        if text != self.widget.value:
            self.widget.value = text
