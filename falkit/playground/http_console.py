"""The HTTP console: a form from the route's input schema, Send, and the answer's status,
latency and body -- JSON (images shown as images), an image, text, or server-sent events as
they arrive -- or the server's error detail."""

from __future__ import annotations

import contextlib
import html
import socket
import time
from typing import Any

import httpx
import ipywidgets as W

from ..client import SSEParser, json_payload, raise_for_status
from ..exceptions import FormError, RemoteError
from . import render, snippets
from .context import Context
from .form import SchemaForm
from .tasks import Task

#: How many of a stream's newest events the console shows (all are counted).
MAX_EVENTS = 50


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
        self._client: httpx.Client | None = None
        self._response: Any = None  # the answer being read, so close() can cut a stream
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
        self.pending = Task("http", lambda task: self._post(task, body))

    def _post(self, task: Task, body: Any) -> None:
        since = time.time()
        began = time.perf_counter()
        try:
            with self._http().stream("POST", self.spec.path, json=json_payload(body)) as response:
                self._response = response
                if not response.is_success:
                    response.read()
                    raise_for_status(response)
                kind = response.headers.get("content-type", "").partition(";")[0].strip()
                if kind == "text/event-stream":
                    self._show_events(task, response, began)
                    return
                data = response.read()
            took = time.perf_counter() - began
            self.status.value = render.status_line(response.status_code, took)
            self.output.value = render.answer_html(data, kind, self.ctx.rewrite)
        except RemoteError as exc:
            took = time.perf_counter() - began
            hint = self.ctx.error_hint(since, exc.request_id) if exc.status >= 500 else ""
            self.status.value = render.status_line(exc.status, took)
            self.output.value = render.detail_html(exc.detail, hint)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if task.stopping.is_set():
                return  # closed while answering: nothing is left to show it in
            self.status.value = "<b style='color:#cf222e'>no answer</b>"
            self.output.value = render.detail_html(f"{type(exc).__name__}: {exc}")
        finally:
            self._response = None
            self.send_button.disabled = False

    def _show_events(self, task: Task, response: Any, began: float) -> None:
        """Server-sent events as they arrive: the count and time so far, and the newest
        ``MAX_EVENTS`` (images shown as images)."""
        parser, events = SSEParser(), list[Any]()

        def show(done: bool) -> None:
            took = time.perf_counter() - began
            state = "" if done else " · <i>streaming...</i>"
            self.status.value = (
                render.status_line(response.status_code, took) + f" · {len(events)} events{state}"
            )
            self.output.value = render.result_html(events[-MAX_EVENTS:], self.ctx.rewrite)

        for line in response.iter_lines():
            new = parser.feed(line)
            if new:
                events.extend(new)
                show(done=False)
            if task.stopping.is_set():
                return
        events.extend(parser.flush())
        show(done=True)

    def _http(self) -> httpx.Client:
        """This console's own HTTP client (the server's URL and API key): answers are read
        raw, so any content type can be shown and a stream can be cut on close."""
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.ctx.client.url,
                headers=self.ctx.client.headers,
                timeout=self.ctx.client.timeout,
            )
        return self._client

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
            self.pending.stopping.set()
            _cut(self._response)  # a stream waiting for its next event ends now
            self.pending.stop()
        if self._client is not None:
            self._client.close()


def _cut(response: httpx.Response | None) -> None:
    """End the reading of ``response`` from another thread. Closing a socket does not wake
    a thread blocked reading it; shutting it down does."""
    if response is None:
        return
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # the reader fails, and closes it itself
        return
    with contextlib.suppress(Exception):
        response.close()
