"""The logs panel: the server's log ring (handler prints, logs, tracebacks), refreshed
when the ring's version changes."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

_LEVEL_COLORS = {"ERROR": "#cf222e", "CRITICAL": "#cf222e", "WARNING": "#9a6700"}


class LogsPanel:
    """Shows the newest ``limit`` entries of ``server.ring``, optionally filtered."""

    def __init__(self, server: Any, limit: int = 200) -> None:
        self.server = server
        self.limit = limit
        self._seen = -1
        self.filter = W.Text(placeholder="filter", layout=W.Layout(width="240px"))
        self.filter.observe(lambda _: self.refresh(force=True), names="value")
        self.view = W.HTML(layout=W.Layout(max_height="300px", overflow="auto"))
        self.widget = W.VBox([self.filter, self.view])
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> bool:
        """Redraw if the ring changed (cheap to call often); True when it redrew."""
        ring = self.server.ring
        if ring.version == self._seen and not force:
            return False
        self._seen = ring.version
        needle = self.filter.value.lower()
        entries = [e for e in ring.entries() if needle in e.format().lower()][-self.limit :]
        lines = [
            f"<span style='color:{_LEVEL_COLORS.get(e.level, 'inherit')}'>"
            f"{html.escape(e.format())}</span>"
            for e in entries
        ]
        body = "\n".join(lines) or "<span style='color:#999'>(no logs yet)</span>"
        self.view.value = f"<pre class='falkit-logs' style='margin:0;font-size:85%'>{body}</pre>"
        return True

    def text(self) -> str:
        """The entries shown, as plain text."""
        return "\n".join(e.format() for e in self.server.ring.entries()[-self.limit :])
