"""The WebSocket console: connect, send text or JSON, and a live log of what went each
way. A reader thread receives; a closed socket shows its close code."""

from __future__ import annotations

import contextlib
import html
import json
from typing import Any

import ipywidgets as W

from .context import Context
from .message_log import MessageLog
from .tasks import Task

_RECV_POLL_S = 0.2  # how often the reader checks whether it should stop


def describe(message: str | bytes) -> str:
    """A received frame as one log line: text as is, bytes by size and head."""
    if isinstance(message, bytes):
        return f"<{len(message)} bytes> {message[:16].hex()}{'...' if len(message) > 16 else ''}"
    return message


def close_text(ws: Any) -> str:
    code = getattr(ws, "close_code", None)
    reason = getattr(ws, "close_reason", "") or ""
    return f"closed (code {code}{', ' + reason if reason else ''})"


class WebSocketConsole:
    """Console for a raw ``is_websocket=True`` route."""

    def __init__(self, ctx: Context, spec: Any) -> None:
        self.ctx = ctx
        self.spec = spec
        self.ws: Any = None
        self._stack = contextlib.ExitStack()
        self.reader: Task | None = None
        self.state = W.HTML("<i>not connected</i>")
        self.connect_button = W.Button(description="Connect", icon="plug")
        self.disconnect_button = W.Button(description="Disconnect", disabled=True)
        self.message = W.Textarea(placeholder="message", layout=W.Layout(width="420px"))
        self.mode = W.Dropdown(
            options=["text", "json"], value="text", layout=W.Layout(width="80px")
        )
        self.send_button = W.Button(description="Send", button_style="primary", disabled=True)
        self.log = MessageLog()
        self.connect_button.on_click(lambda _: self.connect())
        self.disconnect_button.on_click(lambda _: self.disconnect())
        self.send_button.on_click(lambda _: self.send())
        title = W.HTML(f"<b>WebSocket</b> <code>{html.escape(spec.path)}</code> ({spec.method})")
        self.widget = W.VBox(
            [
                title,
                W.HBox([self.connect_button, self.disconnect_button, self.state]),
                W.HBox([self.message, self.mode, self.send_button]),
                self.log.widget,
            ]
        )

    @property
    def connected(self) -> bool:
        return self.reader is not None and self.reader.alive

    def connect(self) -> None:
        if self.connected:
            return
        try:
            self.ws = self._stack.enter_context(self.ctx.client.websocket(self.spec.path))
        except Exception as exc:
            self.log.add("error", f"connect failed: {exc}")
            return
        self.log.add("info", f"connected to {self.spec.path}")
        self._set_connected(True)
        self.reader = Task("ws", self._read)

    def _read(self, task: Task) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while not task.stopping.is_set():
                try:
                    message = self.ws.recv(timeout=_RECV_POLL_S)
                except TimeoutError:
                    continue
                self.log.add("recv", describe(message))
        except ConnectionClosed:
            pass
        finally:
            self.log.add("info", close_text(self.ws))
            self._stack.close()
            self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        self.connect_button.disabled = up
        self.disconnect_button.disabled = not up
        self.send_button.disabled = not up
        self.state.value = (
            "<b style='color:#1a7f37'>open</b>"
            if up
            else (f"<b>{html.escape(close_text(self.ws))}</b>" if self.ws is not None else "")
        )

    def send(self) -> None:
        """Send the message box as a text frame (``json`` mode checks it parses first)."""
        text = self.message.value
        if self.mode.value == "json":
            try:
                text = json.dumps(json.loads(text))
            except ValueError as exc:
                self.log.add("error", f"not sent: not valid JSON ({exc})")
                return
        if not self.connected:
            self.log.add("error", "not sent: connect first")
            return
        try:
            self.ws.send(text)
        except Exception as exc:
            self.log.add("error", f"send failed: {exc}")
            return
        self.log.add("sent", text)

    def disconnect(self) -> None:
        """Close the socket (code 1000) and wait for the reader to finish."""
        if self.ws is not None and self.connected:
            with contextlib.suppress(Exception):
                self.ws.close()
        if self.reader is not None:
            self.reader.stop()

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        """True once ``text`` appears in the log (scripts and tests; bounded)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.text():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.disconnect()
