"""The playground driven the way a person drives it: set widget values, click buttons,
read what is displayed. Every test runs against a real server on loopback."""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import json
import random
import shlex
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Literal

import nbformat
import pytest
from _support import poller, threads_named
from fastapi import WebSocket
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from nbclient import NotebookClient
from pydantic import BaseModel, Field

import falkit as fal
from falkit.playground import Playground, playground, serve_card


def make_png(size: int = 24) -> bytes:
    """A real PNG of random pixels (random, so its data URI is long, as real ones are)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + random.Random(i).randbytes(size * 3) for i in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


class Inner(BaseModel):
    a: int = 1


class Input(BaseModel):
    prompt: str = Field(min_length=1, description="what to echo")
    n: int = Field(default=2, ge=1, le=10, description="repeats")
    temperature: float = 0.5
    loud: bool = False
    color: Literal["red", "green"] = "red"
    note: str | None = None
    tags: list[str] = []
    inner: Inner = Inner()


class Output(BaseModel):
    output: str
    echo: dict


class RtInput(BaseModel):
    prompt: str
    image: bool = False


class PlayApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        print(f"generating {input.prompt!r}")
        if input.prompt == "boom":
            raise ValueError("kaboom from the handler")
        text = input.prompt.upper() if input.loud else input.prompt
        return Output(output=text * input.n, echo=input.model_dump())

    @fal.endpoint("/image")
    def image(self, input: RtInput) -> dict:
        return {
            "inline": PNG_URI,
            "fal_style": {"url": PNG_URI, "content_type": "image/png"},
            "remote": "https://example.com/cat.png?size=1",
            "not_an_image": "https://example.com/page.html",
        }

    @fal.endpoint("/ws", is_websocket=True)
    async def chat(self, websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4001, reason="asked to leave")
                return
            await websocket.send_text(f"echo: {text}")

    @fal.realtime("/realtime")
    def live(self, input: RtInput) -> dict:
        if input.prompt == "crash":
            raise RuntimeError("realtime handler crashed")
        if input.image:
            return {"frame": PNG}
        return {"output": input.prompt[::-1]}


until = poller(10.0)
playground_threads = functools.partial(threads_named, "falkit-playground")


@pytest.fixture
def open_playground(serve) -> Iterator[Callable[..., Playground]]:
    """``open_playground(App)`` serves the app and opens its playground; both are closed
    after the test, and no playground thread may outlive them."""
    opened: list[Playground] = []

    def _open(app_cls: type[fal.App] = PlayApp) -> Playground:
        widget = playground(serve(app_cls))
        opened.append(widget)
        return widget

    yield _open
    for widget in opened:
        widget.close()
    assert until(lambda: not playground_threads(), 5), playground_threads()


def send(console, **values) -> None:
    for name, value in values.items():
        console.form.fields[name].set(value)
    console.send_button.click()
    console.wait(10)


# -- routes view ----------------------------------------------------------------------


def test_routes_view_lists_every_route_with_kind_and_schemas(open_playground):
    pg = open_playground()
    rows = {row.children[0].description: row.children for row in pg.routes.widget.children}
    assert sorted(rows) == ["/", "/image", "/realtime", "/ws"]
    kinds = {path: row[1].value for path, row in rows.items()}
    assert "HTTP" in kinds["/"] and "WebSocket" in kinds["/ws"]
    assert "realtime" in kinds["/realtime"]
    schemas = {path: html.unescape(row[2].value) for path, row in rows.items()}
    assert "prompt: string" in schemas["/"] and "n: integer = 2" in schemas["/"]
    assert "color: red | green = 'red'" in schemas["/"] and "output: string" in schemas["/"]
    assert "raw messages" in schemas["/ws"]
    assert "prompt: string, image: boolean = False" in schemas["/realtime"]  # from the class

    text = pg._repr_mimebundle_()["text/plain"]  # what a front end without widgets shows
    assert text.startswith("falkit playground: play-app (") and "websocket /ws" in text

    pg.routes.buttons["/ws"].click()
    assert type(pg.console).__name__ == "WebSocketConsole"
    pg.routes.buttons["/realtime"].click()
    assert type(pg.console).__name__ == "RealtimeConsole"
    pg.routes.buttons["/"].click()
    assert type(pg.console).__name__ == "HttpConsole"
    assert pg.console_box.children == (pg.console.widget,)


# -- HTTP console ---------------------------------------------------------------------


def test_form_is_built_from_the_schema(open_playground):
    form = open_playground().open_route("/").form
    fields = form.fields
    assert type(fields["prompt"].input).__name__ == "Text" and fields["prompt"].required
    n = fields["n"].input
    assert type(n).__name__ == "BoundedIntText" and (n.min, n.max, n.value) == (1, 10, 2)
    assert type(fields["temperature"].input).__name__ == "FloatText"
    assert fields["temperature"].input.value == 0.5
    assert type(fields["loud"].input).__name__ == "Checkbox"
    assert [label for label, _ in fields["color"].input.options] == ["red", "green"]
    assert fields["note"].enabled is not None and fields["note"].enabled.value is False
    assert fields["tags"].is_json and fields["tags"].input.value == "[]"
    assert fields["inner"].is_json and fields["inner"].input.value == '{"a": 1}'
    assert "what to echo" in fields["prompt"].widget.children[1].value
    # Optional fields left unset are left out; the defaults are sent as shown.
    fields["prompt"].set("x")
    assert form.value() == {
        "prompt": "x",
        "n": 2,
        "temperature": 0.5,
        "loud": False,
        "color": "red",
        "tags": [],
        "inner": {"a": 1},
    }


def test_send_shows_status_latency_and_pretty_json(open_playground):
    pg = open_playground()
    console = pg.open_route("/")
    console.form.fields["prompt"].input.value = "hi"
    console.form.fields["n"].input.value = 3
    console.form.fields["loud"].input.value = True
    console.form.fields["color"].input.value = "green"
    console.form.fields["note"].enabled.value = True
    console.form.fields["note"].input.value = "a note"
    console.form.fields["tags"].input.value = '["x", "y"]'
    console.send_button.click()
    console.wait(10)
    assert "200 OK" in console.status.value and " ms" in console.status.value
    shown = html.unescape(console.output.value)
    assert '"output": "HIHIHI"' in shown
    assert '"color": "green"' in shown and '"note": "a note"' in shown
    assert '"tags": [\n' in shown  # pretty-printed, indented
    # The playground's GET /openapi.json and the send; the server counts a request just
    # after its answer leaves, so the count is awaited.
    assert until(lambda: "requests 2" in pg.status.widget.value)


def test_validation_error_is_shown_readably_and_the_next_send_works(open_playground):
    console = open_playground().open_route("/")
    send(console, prompt="")
    assert "422 Unprocessable Entity" in console.status.value
    shown = html.unescape(console.output.value)
    assert "<code>prompt</code>: String should have at least 1 character" in shown
    assert "Traceback" not in shown and "body" not in shown
    assert console.shown().splitlines()[1:] == [
        '- prompt: String should have at least 1 character (got "")'
    ]
    send(console, prompt="ok")
    assert "200 OK" in console.status.value and '"output": "okok"' in console.output.value.replace(
        "&quot;", '"'
    )


def test_handler_exception_shows_500_detail_and_the_log_line(open_playground):
    pg = open_playground()
    console = pg.open_route("/")
    send(console, prompt="boom")
    assert "500 Internal Server Error" in console.status.value
    shown = html.unescape(console.output.value)
    assert "Internal Server Error" in shown
    assert "server log: ValueError: kaboom from the handler (full traceback in Logs)" in shown
    assert "Traceback" not in shown  # the traceback is in the logs panel, not here
    assert until(lambda: "Traceback" in pg.logs.view.value and "kaboom" in pg.logs.view.value)
    assert until(lambda: "errors 1" in pg.status.widget.value)
    send(console, prompt="fine")
    assert "200 OK" in console.status.value


def test_bad_json_in_an_editor_is_caught_before_sending(open_playground):
    pg = open_playground()
    console = pg.open_route("/")
    send(console, prompt="x")
    assert until(lambda: pg.server.stats()["requests"] == 2)  # GET /openapi.json, the send
    console.form.fields["tags"].input.value = '["unclosed"'
    console.send_button.click()
    console.wait(10)
    assert "not sent" in console.status.value
    assert "tags: not valid JSON" in html.unescape(console.output.value)
    time.sleep(0.2)
    assert pg.server.stats()["requests"] == 2  # nothing reached the server


def test_raw_json_mode_sends_what_the_form_cannot(open_playground):
    console = open_playground().open_route("/")
    console.form.fields["prompt"].set("hello")
    console.form.raw_mode.value = True  # the "edit as JSON" toggle
    assert '"prompt": "hello"' in console.form.raw.value  # prefilled from the fields
    console.form.raw.value = '{"prompt": 5, "n": 11}'
    console.send_button.click()
    console.wait(10)
    assert "422" in console.status.value
    shown = html.unescape(console.output.value)
    assert "<code>prompt</code>: Input should be a valid string (got <code>5</code>)" in shown
    assert "<code>n</code>: Input should be less than or equal to 10" in shown


def test_images_in_the_answer_are_rendered_as_images(open_playground):
    console = open_playground().open_route("/image")
    send(console, prompt="img")
    shown = console.output.value
    assert shown.count(f"<img src='{PNG_URI}'") == 2  # data URI and fal's {url, content_type}
    assert "<img src='https://example.com/cat.png?size=1'" in shown
    assert "page.html'" not in shown  # not an image URL: stays text
    assert "... (" in html.unescape(shown)  # the long data URI is shortened in the JSON
    assert console.shown().count("[image]") == 3


def test_copy_as_code_gives_a_working_client_call_and_curl(open_playground):
    pg = open_playground()
    console = pg.open_route("/")
    send(console, prompt="copied", n=1)
    console.copy_button.value = True
    assert console.code.layout.display is None
    python_part, curl_part = console.code.value.split("# or, from a shell:\n")
    namespace: dict = {}
    exec(
        compile(python_part.replace("client.call(", "result = client.call(", 1), "<c>", "exec"),
        namespace,
    )
    namespace["client"].close()
    assert namespace["result"]["output"] == "copied"
    words = shlex.split(curl_part.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"] and words[3] == pg.server.url + "/"
    assert '"prompt": "copied"' in words[-1]


# -- WebSocket console ----------------------------------------------------------------


def test_websocket_console_logs_both_ways_and_shows_the_close_code(open_playground):
    console = open_playground().open_route("/ws")
    console.connect_button.click()
    assert "open" in console.state.value
    console.message.value = "hello"
    console.send_button.click()
    assert console.wait_for("← echo: hello")
    console.mode.value = "json"
    console.message.value = '{"a": [1, 2]}'
    console.send_button.click()
    assert console.wait_for('← echo: {"a": [1, 2]}')
    console.message.value = "{not json"
    console.send_button.click()
    assert console.wait_for("not sent: not valid JSON")
    console.mode.value = "text"
    console.message.value = "bye"
    console.send_button.click()
    assert console.wait_for("closed (code 4001, asked to leave)")
    assert until(lambda: "code 4001" in console.state.value)
    assert console.connect_button.disabled is False and console.send_button.disabled
    log = console.log.text()
    assert "→ hello" in log and log.index("→ hello") < log.index("← echo: hello")

    console.connect_button.click()  # reconnect, then hang up from our side
    assert "open" in console.state.value
    console.disconnect_button.click()
    assert console.wait_for("closed (code 1000")


# -- realtime console -----------------------------------------------------------------


def test_realtime_console_streams_results_with_latency_and_bursts(open_playground):
    console = open_playground().open_route("/realtime")
    console.form.fields["prompt"].input.value = "abc"
    console.send_button.click()  # connects on first send
    assert console.wait_results(1)
    assert '"output": "cba"' in html.unescape(console.output.value)
    assert "1 results" in console.stats.value and "p50" in console.stats.value
    assert console.wait_results(1) and "ms)" in console.log.text()

    console.burst_size.value = 50
    console.burst_button.click()
    assert console.wait_results(51, timeout=20)
    assert until(lambda: "burst 50: 50 results" in console.burst_result.value)
    assert "msg/s" in console.burst_result.value
    assert "<svg" in console.stats.value  # the running sparkline

    console.form.fields["image"].input.value = True
    console.send_button.click()
    assert console.wait_results(52)
    assert until(lambda: f"<img src='{PNG_URI}'" in console.output.value)  # msgpack bytes


def test_realtime_error_frame_is_shown_and_a_new_session_works(open_playground):
    pg = open_playground()
    console = pg.open_route("/realtime")
    console.form.fields["prompt"].input.value = "crash"
    console.send_button.click()
    assert until(lambda: "INTERNAL_ERROR" in console.log.text())
    assert until(lambda: not console.connected)
    assert "INTERNAL_ERROR" in console.state.value
    assert "realtime handler crashed" in html.unescape(console.output.value)
    console.form.fields["prompt"].input.value = "again"
    console.send_button.click()
    assert console.wait_results(1)
    assert '"output": "niaga"' in html.unescape(console.output.value)


# -- live updates, lifecycle ----------------------------------------------------------


def test_status_bar_and_logs_update_live(open_playground):
    pg = open_playground()
    assert "play-app" in pg.status.widget.value and "running" in pg.status.widget.value
    assert pg.server.url in pg.status.widget.value and "cpu" in pg.status.widget.value
    assert until(lambda: "requests 1" in pg.status.widget.value)  # GET /openapi.json
    with pg.server.client as client:  # not through the widget
        client.call("/", {"prompt": "from elsewhere"})
    assert until(lambda: "generating &#x27;from elsewhere&#x27;" in pg.logs.view.value)
    assert until(lambda: "requests 2" in pg.status.widget.value)
    assert "p50 " in pg.status.widget.value and "p50 -" not in pg.status.widget.value
    pg.logs.filter.value = "nothing matches this"
    assert "(no logs yet)" in pg.logs.view.value


def test_server_stop_ends_background_work(open_playground):
    pg = open_playground()
    ws = pg.open_route("/ws")
    ws.connect_button.click()
    assert len(playground_threads()) == 2  # the poller and the socket reader
    pg.server.stop()
    assert until(lambda: not playground_threads(), 10), playground_threads()
    assert "server stopped" in pg.notice.value
    assert "stopped" in pg.status.widget.value
    assert ws.wait_for("closed")


class AnswersApp(fal.App):
    """Answers that are not JSON: server-sent events, an image, text."""

    @fal.endpoint("/events")
    async def events(self, input: RtInput) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            for step in range(3):
                yield f"data: {json.dumps({'step': step, 'prompt': input.prompt})}\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @fal.endpoint("/endless")
    async def endless(self, input: RtInput) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            yield "data: first\n\n"
            await asyncio.sleep(3600)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @fal.endpoint("/png")
    def png(self, input: RtInput) -> Response:
        return Response(PNG, media_type="image/png")

    @fal.endpoint("/text")
    def text(self, input: RtInput) -> PlainTextResponse:
        return PlainTextResponse(f"plain words: {input.prompt}")


def test_http_console_shows_events_images_and_text(open_playground):
    pg = open_playground(AnswersApp)
    events = pg.open_route("/events")
    send(events, prompt="go")
    assert "200 OK" in events.status.value and "3 events" in events.status.value
    assert "streaming" not in events.status.value
    shown = html.unescape(events.output.value)
    assert '"step": 0' in shown and '"step": 2' in shown and '"prompt": "go"' in shown

    image = pg.open_route("/png")
    send(image, prompt="x")
    assert "200 OK" in image.status.value
    assert "<img src='data:image/png;base64," in image.output.value

    text = pg.open_route("/text")
    send(text, prompt="hello")
    assert "plain words: hello" in html.unescape(text.output.value)


def test_closing_the_playground_cuts_an_endless_stream(open_playground):
    pg = open_playground(AnswersApp)
    console = pg.open_route("/endless")
    console.form.fields["prompt"].input.value = "x"
    console.send_button.click()
    assert until(lambda: "1 events" in console.status.value and "streaming" in console.status.value)
    assert "first" in console.output.value
    pg.close()  # the reader thread, blocked waiting for a second event, ends
    assert until(lambda: not playground_threads(), 10), playground_threads()


def test_a_playground_follows_its_app_served_again(open_playground, serve):
    pg = open_playground()
    first = pg.server
    first.stop()
    assert until(lambda: "server stopped" in pg.notice.value)
    assert until(lambda: not playground_threads(), 10), playground_threads()

    def answers(expected_server) -> bool:
        console = pg.open_route("/")
        console.form.fields["prompt"].input.value = "hi"
        console.send_button.click()
        console.wait(10)
        return pg.ctx.server is expected_server and "200 OK" in console.status.value

    # served again after a stop: a new server object, and the playground follows it
    second = serve(PlayApp)
    assert second is not first
    assert until(lambda: pg.server is second and "running" in pg.status.widget.value)
    assert "server stopped" not in pg.notice.value
    assert answers(second)

    # served on another port: the new server starts, the old one stops, it follows again
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    third = serve(PlayApp, port=port)
    assert third is not second and third.port == port
    assert until(lambda: pg.server is third and str(port) in pg.status.widget.value)
    assert answers(third)
    assert len(playground_threads()) == 1  # one poller, the old one gone


def test_close_stops_every_thread(serve):
    server = serve(PlayApp)
    pg = playground(server)
    pg.open_route("/ws").connect_button.click()
    rt = pg.open_route("/realtime")
    rt.form.fields["prompt"].input.value = "x"
    rt.send_button.click()
    assert rt.wait_results(1)
    assert len(playground_threads()) == 3
    pg.close()
    assert not playground_threads()
    with server.client as client:
        assert client.call("/", {"prompt": "still serving"})["output"]


def test_a_new_playground_replaces_the_old_one(open_playground, serve):
    first = open_playground()
    second = playground(first.server)
    try:
        assert until(lambda: len(playground_threads()) == 1)
        assert first.poller is None and second.poller is not None
    finally:
        second.close()


def test_hot_swap_refreshes_the_route_list_in_place(open_playground, serve):
    class SwapApp(fal.App):
        @fal.endpoint("/")
        def one(self, input: RtInput) -> dict:
            return {"v": 1}

    pg = open_playground(SwapApp)
    assert list(pg.routes.buttons) == ["/"]

    class SwapApp(fal.App):  # re-running the cell, as in a notebook
        @fal.endpoint("/")
        def one(self, input: RtInput) -> dict:
            return {"v": 2}

        @fal.endpoint("/two")
        def two(self, input: Input) -> dict:
            return {"v": "two"}

    assert serve(SwapApp) is pg.server  # swapped in place, same server
    assert until(lambda: list(pg.routes.buttons) == ["/", "/two"])
    console = pg.open_route("/two")
    assert "prompt" in console.form.fields
    send(console, prompt="p")
    assert '"v": "two"' in html.unescape(console.output.value)


def test_links_go_through_the_hub_proxy(open_playground, monkeypatch):
    pg = open_playground()
    port = pg.server.port
    assert fal.playground.browser_url(pg.server, "/docs") == f"{pg.server.url}/docs"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert fal.playground.browser_url(pg.server, "/docs") == f"/user/ada/proxy/{port}/docs"
    assert fal.playground.browser_url(pg.server) == f"/user/ada/proxy/{port}/"
    pg.status.refresh()
    assert f"href='/user/ada/proxy/{port}/docs'" in pg.status.widget.value


# -- entry points ---------------------------------------------------------------------


def test_falkit_playground_is_lazy_and_callable(serve):
    code = "import sys, falkit; print('ipywidgets' in sys.modules, 'playground' in falkit.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr
    widget = fal.playground(serve(PlayApp))
    try:
        assert isinstance(widget, Playground)
    finally:
        widget.close()


def test_serve_card_keeps_the_text_and_html_card_and_opens_the_playground(serve):
    from falkit.serving import card_html, card_text

    server = serve(PlayApp)
    card = serve_card(server)
    try:
        bundle = card._repr_mimebundle_()
        assert bundle["text/plain"] == card_text(server)
        assert bundle["text/html"] == card_html(server)
        assert "application/vnd.jupyter.widget-view+json" in bundle
        card.button.value = True  # the "playground" button
        assert isinstance(card.children[-1], Playground)
        assert len(playground_threads()) == 1
        card.button.value = False
        assert len(card.children) == 1 and not playground_threads()
    finally:
        card.close()


def test_magic_shows_card_and_playground_widgets_in_a_real_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import falkit as fal\n"
            "class KernelApp(fal.App):\n"
            "    @fal.endpoint('/')\n"
            "    def run(self, body: dict) -> dict:\n"
            "        return body\n"
        ),
        nbformat.v4.new_code_cell("%fal serve KernelApp"),
        nbformat.v4.new_code_cell("%fal playground KernelApp"),
        nbformat.v4.new_code_cell(
            "import threading\n"
            "print(sorted(t.name for t in threading.enumerate() if 'playground' in t.name))\n"
            "%fal stop --all"
        ),
        nbformat.v4.new_code_cell(
            "import time\n"
            "for _ in range(100):\n"
            "    if not any('playground' in t.name for t in threading.enumerate()): break\n"
            "    time.sleep(0.05)\n"
            "left = [t.name for t in threading.enumerate() if 'playground' in t.name]\n"
            "print('threads left:', left)"
        ),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    view = "application/vnd.jupyter.widget-view+json"
    (card,) = [o.data for o in nb.cells[1].outputs if view in o.get("data", {})]
    assert "kernel-app" in card["text/plain"] and "<table>" in card["text/html"]
    assert any(view in o.get("data", {}) for o in nb.cells[2].outputs)
    assert "falkit-playground-poll" in nb.cells[3].outputs[0].text
    assert "threads left: []" in nb.cells[4].outputs[0].text
