"""The routes view: one row per route with its kind, path and input/output schema;
clicking the path opens that route's console."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from .schema import summary

KIND_LABEL = {"http": "HTTP", "websocket": "WebSocket", "realtime": "realtime"}
_KIND_COLOR = {"http": "#0969da", "websocket": "#8250df", "realtime": "#bf3989"}


def route_row_text(spec: Any, schemas: Callable[[Any], Any]) -> tuple[str, str]:
    """The (input, output) schema summaries of a route."""
    inp, out, components = schemas(spec)
    if spec.kind == "websocket" and inp is None:
        return "raw messages", "raw messages"
    return summary(inp, components), summary(out, components)


class RoutesView:
    """Rows of routes; ``buttons[path].click()`` opens a console through ``on_select``."""

    def __init__(self, on_select: Callable[[Any], None]) -> None:
        self.on_select = on_select
        self.buttons: dict[str, W.Button] = {}
        self.widget = W.VBox()

    def show(self, routes: tuple[Any, ...], schemas: Callable[[Any], Any]) -> None:
        """Redraw for ``routes`` (called again after a hot swap)."""
        self.buttons = {}
        rows = []
        for spec in routes:
            button = W.Button(
                description=spec.path,
                tooltip=f"open the console of {spec.path}",
                layout=W.Layout(width="160px"),
            )
            button.on_click(lambda _, spec=spec: self.on_select(spec))
            self.buttons[spec.path] = button
            inp, out = route_row_text(spec, schemas)
            kind = (
                f"<b style='color:{_KIND_COLOR[spec.kind]}'>{KIND_LABEL[spec.kind]}</b>"
                f" <span style='color:#777'>{html.escape(spec.method)}</span>"
            )
            rows.append(
                W.HBox(
                    [
                        button,
                        W.HTML(kind, layout=W.Layout(width="190px")),
                        W.HTML(
                            f"in: <code>{html.escape(inp)}</code><br>"
                            f"out: <code>{html.escape(out)}</code>"
                        ),
                    ]
                )
            )
        self.widget.children = rows or [W.HTML("<i>this app serves no routes</i>")]
