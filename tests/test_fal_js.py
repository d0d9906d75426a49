"""The real ``@fal-ai/client`` from npm (pinned in tests/js/package.json) against a local
falkit server, configured with ``proxyUrl`` alone (``when: "always"`` in node) plus the
few lines that point its realtime WebSocket at the server: from node, and from a page in
Debian's Chromium on an allowed origin; the same page on an origin not listed is refused.

The calls and what they return live in tests/js/scenarios.js; the assertions are here."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import call
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from test_browser import CHROMIUM, CHROMIUM_ARGS, IN_CI, _require_browser

import falkit as fal
from falkit.exceptions import RequestCancelledException

JS = Path(__file__).resolve().parent / "js"
NODE_TIMEOUT_S = 150  # above node_client.mjs's own watchdog (120 s)
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fal-js page</title>
<link rel="icon" href="data:,"></head><body><script src="bundle.js"></script></body></html>
"""


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str


class Ask(BaseModel):
    ask: bool = True


class FileInput(BaseModel):
    file: str


class JsApp(fal.App):
    app_name = "js-app"

    def setup(self) -> None:
        self.calls = 0
        self.gate = {"entered": False, "cancelled": False, "finished": False}
        self.cancel_asked = asyncio.Event()

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        self.calls += 1
        return Output(output=input.prompt.upper())

    @fal.endpoint("/slow")
    async def slow(self, input: Input) -> Output:
        await asyncio.sleep(0.3)  # long enough for a status poll to see it unfinished
        return Output(output=input.prompt[::-1])

    @fal.endpoint("/stream")
    async def stream(self, input: Input) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for ch in input.prompt:
                yield f"data: {json.dumps({'ch': ch})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.endpoint("/gate")
    async def gated(self, input: Input) -> Output:
        self.gate["entered"] = True
        try:
            await asyncio.wait_for(self.cancel_asked.wait(), 30)  # bounded, should none come
        except asyncio.CancelledError:  # a server may stop the request outright instead
            self.gate["cancelled"] = True
            raise
        except TimeoutError:
            self.gate["finished"] = True
            return Output(output=input.prompt)
        self.gate["cancelled"] = True
        raise RequestCancelledException()

    @fal.endpoint("/gate/cancel")
    async def cancel_gate(self) -> dict[str, str]:
        # fal tells a running request it was cancelled with POST <path>/cancel
        # ("Handle cancellations"); async, so the event is set on the server's loop.
        self.cancel_asked.set()
        return {}

    @fal.endpoint("/probe")
    def probe(self, input: Ask) -> dict[str, Any]:
        return {"calls": self.calls, **self.gate}

    @fal.endpoint("/file")
    def file(self, input: FileInput) -> dict[str, str]:
        return {"url": input.file}

    @fal.realtime("/realtime")
    def realtime(self, input: Input) -> Output:
        return Output(output=input.prompt * 2)


# -- what each scenario must return (tests/js/scenarios.js) ---------------------------------


def _run(value: dict, server) -> None:
    assert value == {"data": {"output": "HI"}}


def _run_error(value: dict, server) -> None:
    assert value["name"] == "ValidationError" and value["status"] == 422, value
    assert "prompt" in value["fields"], value


def _request_ids(value: dict, server) -> None:
    # fal answers every request with x-fal-request-id; fal-js returns it as `requestId`.
    assert value["run"], f"fal.run() gave no requestId: {value}"
    assert value["enqueued"] and value["result"] == value["enqueued"], value


def _subscribe(value: dict, server) -> None:
    assert value["data"] == {"output": "ebircsbus"}, value
    assert value["enqueued"], value
    assert value["statuses"] and value["statuses"][-1] == "COMPLETED", value


def _stream(value: dict, server) -> None:
    events = [{"ch": "a"}, {"ch": "b"}, {"ch": "c"}]
    assert value == {"events": events, "done": events[-1]}


def _queue(value: dict, server) -> None:
    assert value["submitted"] == "IN_QUEUE" and value["hasRequestId"], value
    assert value["first"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), value
    assert value["done"] == "COMPLETED" and value["data"] == {"output": "eueuq"}, value


def _cancel(value: dict, server) -> None:
    assert value["cancelled"] and not value["finished"], value
    assert "resolved" not in value["result"], f"a cancelled request gave a result: {value}"
    assert value["result"]["status"] >= 400, value


def _realtime(value: dict, server) -> None:
    assert value == {"outputs": [{"output": "aa"}, {"output": "bcbc"}]}


def _storage_upload(value: dict, server) -> None:
    assert value["url"].startswith(f"{server.url}/.fal/files/"), value
    assert value["status"] == 200 and value["text"] == "hello from fal-js", value
    assert value["type"].startswith("text/plain"), value
    # The URL fal-js returned is a plain GET for anyone, not only for the page.
    back = httpx.get(value["url"], timeout=10)
    assert back.status_code == 200 and back.text == "hello from fal-js"


def _blob_input(value: dict, server) -> None:
    assert value["url"].startswith(f"{server.url}/.fal/files/"), value
    assert value["text"] == "blob in the input", value


CHECKS: dict[str, Callable[[dict, Any], None]] = {
    "run": _run,
    "run_error": _run_error,
    "request_ids": _request_ids,
    "subscribe_polling": _subscribe,
    "subscribe_streaming": _subscribe,
    "stream": _stream,
    "queue": _queue,
    "cancel": _cancel,
    "realtime": _realtime,
    "storage_upload": _storage_upload,
    "blob_input": _blob_input,
}


def _check(name: str, outcome: dict, server) -> None:
    assert outcome["ok"], f"{name} threw in fal-js: {outcome['error']}"
    CHECKS[name](outcome["value"], server)


# -- node ------------------------------------------------------------------------------------


def _require_node() -> str:
    """node, with tests/js's packages installed; skipped without them on a developer
    machine, a failure in CI (scripts/js_deps.sh installs them there)."""
    node = shutil.which("node")
    missing = []
    if node is None or shutil.which("npm") is None:
        missing.append("node and npm (apt-get install nodejs npm)")
    if not (JS / "node_modules" / "@fal-ai" / "client" / "package.json").is_file():
        missing.append("tests/js/node_modules (bash scripts/js_deps.sh)")
    if not missing:
        assert node is not None
        return node
    reason = "fal-js test needs " + " and ".join(missing)
    if IN_CI:
        pytest.fail(reason + "; CI must run this test")
    pytest.skip(reason)


def _node(server, *names: str) -> dict[str, dict]:
    node = _require_node()
    done = subprocess.run(
        [node, str(JS / "node_client.mjs"), server.url, *names],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"node exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
        f"stderr:\n{done.stderr[-3000:]}"
    )
    return json.loads(lines[-1])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_fal_js_from_node(serve, name: str) -> None:
    server = serve(JsApp)
    _check(name, _node(server, name)[name], server)


# -- Chromium --------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _static_site(root: Path) -> Iterator[str]:
    """``root`` served on 127.0.0.1; yields its origin as ``http://localhost:<port>``, an
    origin other than the falkit server's."""
    handler = partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="fal-js-page", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def page_site(tmp_path: Path) -> Iterator[str]:
    """The page (the real @fal-ai/client bundled by esbuild) on its own loopback origin."""
    _require_browser()
    node = _require_node()
    subprocess.run(
        [node, str(JS / "build_page.mjs"), str(tmp_path)], cwd=JS, check=True, timeout=120
    )
    (tmp_path / "index.html").write_text(PAGE)
    with _static_site(tmp_path) as origin:
        yield origin


def _in_page(origin: str, server, names: list[str]) -> tuple[dict[str, dict], list[str]]:
    """Open the page in Chromium, run ``names`` there against ``server``; the results and
    the page's console lines."""
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.goto(f"{origin}/index.html")
            page.wait_for_function("() => window.falkitJs !== undefined")
            results = page.evaluate(
                "([url, names]) => window.falkitJs.run(url, names)", [server.url, names]
            )
        finally:
            browser.close()
    return results, console


@pytest.mark.timeout(240)
def test_fal_js_in_chromium_from_an_allowed_origin(serve, page_site: str) -> None:
    server = serve(JsApp, cors_origins=[page_site])
    names = sorted(CHECKS)
    results, console = _in_page(page_site, server, names)
    failures = []
    for name in names:
        try:
            _check(name, results[name], server)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join([*failures, "page console:", *console[-40:]])


@pytest.mark.timeout(240)
def test_fal_js_in_chromium_from_an_origin_not_listed(serve, page_site: str) -> None:
    server = serve(JsApp)  # no cors_origins: the page's origin is foreign
    results, _ = _in_page(page_site, server, ["refused"])
    outcome = results["refused"]
    assert outcome["ok"], outcome
    for call_name, result in outcome["value"].items():
        # The browser sees a refused preflight as a network error, never as an answer.
        assert "resolved" not in result, f"{call_name} went through: {result}"
        assert result["name"] == "TypeError", f"{call_name}: {result}"
    assert call(server, "/probe", {}) == {
        "calls": 0,
        "entered": False,
        "cancelled": False,
        "finished": False,
    }
