"""The HTTP console: a form from the route's input schema, Send, and the answer's status,
latency and JSON (images shown as images), or the server's error detail."""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W

from ..exceptions import ClientError, RemoteError
from . import render, snippets
from ._tasks import Task
from .context import Context
from .form import FormError, SchemaForm


class HttpConsole:
    """Console for one POST route. ``send()`` (the Send button) posts in a background
    thread; ``wait()`` blocks until the answer is shown."""

    def __init__(self, ctx: Context, spec: Any) -> None:
        self.ctx = ctx
        self.spec = spec
        input_schema, _, components = ctx.schemas(spec)
        self.form = SchemaForm(input_schema, components)
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.send_button.on_click(lambda _: self.send())
        self.copy_button = W.ToggleButton(description="copy as code", icon="clipboard")
        self.copy_button.observe(lambda _: self._show_code(), names="value")
        self.status = W.HTML()
        self.output = W.HTML()
        for widget, name in (
            (self.send_button, "send"),
            (self.status, "status"),
            (self.output, "output"),
        ):
            widget.add_class(f"falkit-http-{name}")
        self.code = W.Textarea(layout=W.Layout(width="560px", height="150px", display="none"))
        self.pending: Task | None = None
        self.last_body: Any = {}
        title = W.HTML(f"<b>POST</b> <code>{html.escape(spec.path)}</code> ({spec.method})")
        self.widget = W.VBox(
            [
                title,
                self.form.widget,
                W.HBox([self.send_button, self.copy_button]),
                self.status,
                self.output,
                self.code,
            ]
        )

    def send(self) -> None:
        """Validate the form and post it; the answer appears in ``status``/``output``."""
        if self.pending is not None and self.pending.alive:
            return  # one request at a time per console, as the disabled button says
        try:
            body = self.form.value()
        except FormError as exc:
            self.status.value = "<b style='color:#cf222e'>not sent</b>"
            self.output.value = render.detail_html(str(exc))
            return
        self.last_body = body
        self._show_code()
        self.send_button.disabled = True
        self.status.value = "<i>sending...</i>"
        self.pending = Task("http", lambda task: self._post(body))

    def _post(self, body: Any) -> None:
        since = time.time()
        began = time.perf_counter()
        try:
            result = self.ctx.client.call(self.spec.path, body)
            took = time.perf_counter() - began
            self.status.value = render.status_line(200, took)
            self.output.value = render.result_html(result, self.ctx.rewrite)
        except RemoteError as exc:
            took = time.perf_counter() - began
            hint = self.ctx.error_hint(since, exc.request_id) if exc.status >= 500 else ""
            self.status.value = render.status_line(exc.status, took)
            self.output.value = render.detail_html(exc.detail, hint)
        except ClientError as exc:
            self.status.value = "<b style='color:#cf222e'>no answer</b>"
            self.output.value = render.detail_html(str(exc))
        finally:
            self.send_button.disabled = False

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the last ``send()`` has shown its answer (for scripts and tests)."""
        if self.pending is not None and not self.pending.wait(timeout):
            raise TimeoutError(f"no answer from {self.spec.path} within {timeout} s")

    def shown(self) -> str:
        """What the console shows (status, then the answer or error) as plain text."""
        return render.plain(self.status.value + "<br>" + self.output.value)

    def _show_code(self) -> None:
        shown = self.copy_button.value
        self.code.layout.display = None if shown else "none"
        if not shown:
            return
        try:
            body = self.form.value()
        except FormError:
            body = self.last_body
        url = self.ctx.server.url
        self.code.value = (
            snippets.python_call(url, self.spec.path, body)
            + "\n\n# or, from a shell:\n"
            + snippets.curl_call(url, self.spec.path, body)
        )

    def close(self) -> None:
        if self.pending is not None:
            self.pending.stop()
