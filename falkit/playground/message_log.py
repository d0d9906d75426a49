"""A bounded, timestamped log of sent and received messages, shown as HTML."""

from __future__ import annotations

import html
import threading
import time
from collections import deque

import ipywidgets as W

_ARROWS = {"sent": "→", "recv": "←", "info": "·", "error": "!"}
_COLORS = {"sent": "#0969da", "recv": "#1a7f37", "info": "#777", "error": "#cf222e"}


class MessageLog:
    """Lines like ``12:00:01.250 → {"prompt": "hi"}``; the newest ``limit`` are kept."""

    def __init__(self, limit: int = 200) -> None:
        self.lines: deque[tuple[str, str, str]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self.widget = W.HTML(layout=W.Layout(max_height="260px", overflow="auto"))

    def add(self, kind: str, text: str) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with self._lock:
            self.lines.append((stamp, kind, text))
            rows = list(self.lines)
        self.widget.value = (
            "<pre style='margin:0;font-size:90%'>"
            + "\n".join(
                f"<span style='color:#999'>{s}</span> <span style='color:{_COLORS[k]}'>"
                f"{_ARROWS[k]} {html.escape(t)}</span>"
                for s, k, t in rows
            )
            + "</pre>"
        )

    def text(self) -> str:
        """The log as plain text (what the HTML shows, without markup)."""
        with self._lock:
            return "\n".join(f"{s} {_ARROWS[k]} {t}" for s, k, t in self.lines)

    def clear(self) -> None:
        with self._lock:
            self.lines.clear()
        self.widget.value = ""
