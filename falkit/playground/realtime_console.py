"""The realtime console: inputs built with a form and sent as msgpack over fal's realtime
protocol, each result shown as it arrives with its latency, a latency histogram, and a
"burst N" button that measures throughput. A route whose input has an image or audio
field also gets a live source (camera, microphone, sketch pad, looped images)."""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections import deque
from typing import Any

import ipywidgets as W

from ..exceptions import FormError, RealtimeError
from ..serving import percentile
from . import charts, render, snippets
from .context import Context
from .form import SchemaForm
from .live_source import LiveSource
from .message_log import MessageLog
from .tasks import Task

_RECV_POLL_S = 0.2
_BURST_IDLE_S = 5.0  # a burst gives up after this long without a new output


class RealtimeConsole:
    """Console for a ``@fal.realtime`` route. The session stays open between sends."""

    def __init__(self, ctx: Context, spec: Any) -> None:
        self.ctx = ctx
        self.spec = spec
        schema, _, components = ctx.schemas(spec)
        self.form = SchemaForm(schema, components)
        self.session: Any = None
        self._stack = contextlib.ExitStack()
        self.reader: Task | None = None
        self.burster: Task | None = None
        self._sent_at: deque[float] = deque()
        self._last_sent = 0.0
        self._lock = threading.Lock()
        self.received = 0
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.results: list[Any] = []
        self._build_widgets()
        self.live: LiveSource | None = None
        self.adopt_live(LiveSource.for_route(ctx, spec, self.form))

    def _build_widgets(self) -> None:
        self.state = W.HTML("<i>not connected</i>")
        self.connect_button = W.Button(description="Connect", icon="plug")
        self.disconnect_button = W.Button(description="Disconnect", disabled=True)
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.burst_size = W.BoundedIntText(
            value=100, min=1, max=100_000, layout=W.Layout(width="90px")
        )
        self.burst_button = W.Button(description="burst N", icon="bolt")
        self.stats = W.HTML()
        self.burst_result = W.HTML()
        self.output = W.HTML()
        self.log = MessageLog()
        self.code = W.Textarea(layout=W.Layout(width="560px", height="110px", display="none"))
        self.copy_button = W.ToggleButton(description="copy as code", icon="clipboard")
        self.connect_button.on_click(lambda _: self.connect())
        self.disconnect_button.on_click(lambda _: self.disconnect())
        self.send_button.on_click(lambda _: self.send())
        self.burst_button.on_click(lambda _: self.burst())
        self.copy_button.observe(lambda _: self._show_code(), names="value")
        title = W.HTML(
            f"<b>realtime</b> <code>{html.escape(self.spec.path)}</code> "
            f"({self.spec.method}, msgpack)"
        )
        self.widget = W.VBox(
            [
                title,
                W.HBox([self.connect_button, self.disconnect_button, self.state]),
                self.form.widget,
                W.HBox([self.send_button, self.burst_size, self.burst_button, self.copy_button]),
                self.stats,
                self.burst_result,
                self.output,
                self.log.widget,
                self.code,
            ]
        )

    @property
    def connected(self) -> bool:
        return self.reader is not None and self.reader.alive

    def connect(self) -> bool:
        """Open the session (Send opens it too when needed); False when it failed."""
        if self.connected:
            return True
        try:
            self.session = self._stack.enter_context(self.ctx.client.realtime(self.spec.path))
        except Exception as exc:
            self.log.add("error", f"connect failed: {exc}")
            return False
        self._sent_at.clear()
        self.log.add("info", f"connected to {self.spec.path}")
        self._set_connected(True)
        self.reader = Task("realtime", self._read)
        return True

    def _set_connected(self, up: bool, why: str = "") -> None:
        self.connect_button.disabled = up
        self.disconnect_button.disabled = not up
        self.state.value = (
            "<b style='color:#1a7f37'>open</b>" if up else f"<b>{html.escape(why)}</b>"
        )

    def _read(self, task: Task) -> None:
        why = "closed"
        try:
            while not task.stopping.is_set():
                try:
                    output = self.session.recv(timeout=_RECV_POLL_S)
                except TimeoutError:
                    continue
                if output is None:  # the server ended the session (close or idle timeout)
                    why = "session ended by the server"
                    break
                self._on_output(output)
        except RealtimeError as exc:
            why = f"closed: {exc.error}"
            self.log.add("error", f"{exc.error}: {exc.reason}")
            self.output.value = render.detail_html(f"{exc.error}: {exc.reason}")
        except Exception as exc:  # a frame that would not decode: shown, session ends
            why = f"closed after an error: {exc}"
            self.log.add("error", why)
        finally:
            self.log.add("info", why)
            self._stack.close()
            self._set_connected(False, why)

    def _on_output(self, output: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            # Unary: outputs answer inputs in order. Extra outputs (server streaming) are
            # timed from the latest input.
            sent = self._sent_at.popleft() if self._sent_at else self._last_sent
            self.received += 1
            self.latencies_ms.append((now - sent) * 1000)
            self.results = [*self.results[-49:], output]
        latency = self.latencies_ms[-1]
        self.log.add("recv", f"{render.pretty(output)}  ({latency:.1f} ms)".replace("\n", " "))
        if self.burster is None or not self.burster.alive:
            self.output.value = render.result_html(output, self.ctx.rewrite)
            self._show_stats()

    def _show_stats(self) -> None:
        values = list(self.latencies_ms)
        if not values:
            return
        ordered = sorted(values)
        p50, p99 = (percentile(ordered, q) or 0.0 for q in (0.5, 0.99))
        self.stats.value = (
            f"{self.received} results · last {values[-1]:.1f} ms · "
            f"p50 {p50:.1f} ms · p99 {p99:.1f} ms " + charts.histogram(values)
        )

    def _send_one(self, body: Any) -> None:
        with self._lock:
            self._last_sent = time.perf_counter()
            self._sent_at.append(self._last_sent)
        self.session.send(body)

    def _body(self) -> Any:
        try:
            return self.form.value()
        except FormError as exc:
            self.log.add("error", f"not sent: {exc}")
            self.output.value = render.detail_html(str(exc))
            return None

    def send(self) -> None:
        """Send the form's input as one msgpack frame; its result shows when it arrives."""
        body = self._body()
        if body is None or not self.connect():
            return
        try:
            self._send_one(body)
        except Exception as exc:
            self.log.add("error", f"send failed: {exc}")
            return
        self.log.add("sent", render.pretty(body).replace("\n", " "))

    def burst(self) -> None:
        """Send the form's input ``burst_size`` times back to back and report throughput."""
        body = self._body()
        if body is None or (self.burster is not None and self.burster.alive) or not self.connect():
            return
        count = self.burst_size.value
        self.burst_result.value = f"<i>burst of {count} running...</i>"
        self.burster = Task("burst", lambda task: self._burst(task, body, count))

    def _burst(self, task: Task, body: Any, count: int) -> None:
        target = self.received + count
        began = time.perf_counter()
        for _ in range(count):
            if task.stopping.is_set() or not self.connected:
                break
            self._send_one(body)
        last, progress_at = self.received, time.perf_counter()
        while self.received < target and not task.stopping.is_set() and self.connected:
            if self.received != last:
                last, progress_at = self.received, time.perf_counter()
            elif time.perf_counter() - progress_at > _BURST_IDLE_S:
                break
            time.sleep(0.005)
        took = time.perf_counter() - began
        got = count - max(0, target - self.received)
        self.burst_result.value = (
            f"burst {count}: {got} results in {took:.2f} s → <b>{got / took:.0f} msg/s</b>"
            + ("" if got == count else f" ({count - got} missing: dropped or closed)")
        )
        self._show_stats()
        if self.results:
            self.output.value = render.result_html(self.results[-1], self.ctx.rewrite)

    def wait_results(self, count: int, timeout: float = 10.0) -> bool:
        """True once ``count`` results arrived in total (scripts and tests; bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received >= count and (self.burster is None or not self.burster.alive):
                return True
            time.sleep(0.02)
        return False

    def _show_code(self) -> None:
        self.code.layout.display = None if self.copy_button.value else "none"
        try:
            body = self.form.value()
        except FormError:
            body = {}
        self.code.value = snippets.python_realtime(self.ctx.server.url, self.spec.path, body)

    def disconnect(self) -> None:
        if self.burster is not None:
            self.burster.stop()
        # The reader notices within one poll and closes the session (code 1000) itself.
        if self.reader is not None:
            self.reader.stop()

    def adopt_live(self, live: LiveSource | None) -> None:
        """Mount ``live`` under the form (closing the one mounted before): a hot swap that
        renews the consoles hands a running stream on this way."""
        old, self.live = self.live, live
        if old is not None and old is not live:
            old.close()
        children = [c for c in self.widget.children if old is None or c is not old.widget]
        if live is not None:
            live.spec, live.form = self.spec, self.form
            children.insert(children.index(self.form.widget) + 1, live.widget)
        self.widget.children = children

    def release_live(self) -> LiveSource | None:
        """Unmount the live source and return it, still streaming, for ``adopt_live``."""
        live, self.live = self.live, None
        if live is not None:
            self.widget.children = [c for c in self.widget.children if c is not live.widget]
        return live

    def close(self) -> None:
        self.disconnect()
        if self.live is not None:
            self.live.close()
