"""``falkit.bench`` / ``%fal bench`` against real served apps, and the ``Server-Timing``
header they read. Counts are bounded; figures are checked for shape, never for speed."""

from __future__ import annotations

import itertools
import sys
import textwrap

import httpx
import nbformat
import pytest
from fastapi import WebSocket
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbclient import NotebookClient
from pydantic import BaseModel

import falkit as fal
from falkit import FalkitError
from falkit.asgi.timing import parse


class In(BaseModel):
    prompt: str


class BenchApp(fal.App):
    def setup(self) -> None:
        self.calls = itertools.count(1)

    @fal.endpoint("/")
    def echo(self, input: In) -> dict:
        return {"output": input.prompt}

    @fal.endpoint("/flaky")
    async def flaky(self, input: In) -> dict:
        # every fourth request fails: async, so the count is exact
        if next(self.calls) % 4 == 0:
            raise RuntimeError("every fourth one")
        return {"output": input.prompt}

    @fal.endpoint("/picky")
    def picky(self, input: In) -> dict:
        if input.prompt == "bad":
            raise ValueError("bad input")
        return {"output": input.prompt}

    @fal.realtime("/rt")
    def rt(self, input: In) -> dict:
        if input.prompt == "bad":
            raise ValueError("bad input")
        return {"output": input.prompt}

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()


OK = {"prompt": "hi"}


def test_http_report_has_every_figure(serve):
    server = serve(BenchApp)
    report = fal.bench(server, "/", n=200, c=4, payload=OK)
    assert (report.requests, report.errors, report.error_kinds) == (200, 0, {})
    assert len(report.latencies_ms) == 200 and report.rps > 0
    assert 0 < report.p50_ms <= report.p90_ms <= report.p99_ms <= report.latencies_ms[-1]
    assert set(report.server_timing_ms) == {"decode", "handler", "encode"}
    summary = report.summary()
    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "errors", "decode_ms", "handler_ms"):
        assert key in summary
    assert summary["url"] == server.url + "/"
    text = report.text()
    assert "req/s" in text and "p99" in text and "handler" in text and "#" in text


def test_failures_are_counted_and_the_server_keeps_serving(serve):
    server = serve(BenchApp)
    report = fal.bench(server, "/flaky", n=200, c=4, payload=OK)
    assert report.requests == 200
    assert report.errors == 50 and report.error_kinds == {"HTTP 500": 50}
    assert server.client.call("/flaky", OK) == {"output": "hi"}  # the 201st: not a fourth
    assert server.client.call("/", OK) == {"output": "hi"}


def test_bad_inputs_are_errors_by_status(serve):
    server = serve(BenchApp)
    invalid = fal.bench(server, "/", n=40, c=2, payload={"wrong": 1})
    assert invalid.error_kinds == {"HTTP 422": 40}
    assert invalid.server_timing_ms == {}  # no handler ran
    failing = fal.bench(server.url, "/picky", n=40, c=2, payload={"prompt": "bad"})
    assert failing.error_kinds == {"HTTP 500": 40}
    assert server.client.call("/picky", OK) == {"output": "hi"}


def test_realtime_round_trips_and_error_frames(serve):
    server = serve(BenchApp)
    report = fal.bench(server, "/rt", n=100, c=2, payload=OK)
    assert report.kind == "realtime" and report.url.startswith("ws://127.0.0.1:")
    assert (report.requests, report.errors) == (100, 0)
    assert len(report.latencies_ms) == 100
    bad = fal.bench(server, "/rt", n=10, c=2, payload={"prompt": "bad"})
    assert bad.error_kinds == {"x-fal-error INTERNAL_ERROR": 10}
    with server.client.realtime("/rt") as session:
        session.send(OK)
        assert session.recv() == {"output": "hi"}


@pytest.mark.parametrize(
    ("target", "path", "kwargs", "message"),
    [
        ("http://example.com:80", "/", {}, "only targets loopback"),
        (None, "/nope", {}, "has no route '/nope'"),
        (None, "/ws", {}, "is a websocket route"),
        (None, "/", {"n": 0}, "n must be between"),
        (None, "/", {"c": 0}, "at least 1"),
        (None, "/", {"duration": 0}, "duration must be positive"),
        (None, "/", {"payload": object()}, "JSON-serialisable"),
    ],
)
def test_bad_arguments_are_clear_errors(serve, target, path, kwargs, message):
    server = serve(BenchApp)
    with pytest.raises(FalkitError, match=message):
        fal.bench(target or server, path, **kwargs)
    assert server.client.call("/", OK) == {"output": "hi"}


def test_duration_bounds_the_run(serve):
    server = serve(BenchApp)
    report = fal.bench(server, "/", n=1_000_000, c=2, payload=OK, duration=0.5)
    assert 0 < report.requests < 1_000_000
    assert report.seconds < 30


def test_a_dead_target_counts_connection_errors(serve):
    server = serve(BenchApp)
    url = server.url
    server.stop()
    report = fal.bench(url, "/", n=5, c=1, payload=OK, timeout=2)
    assert report.errors == 5 and report.latencies_ms == ()
    assert "ConnectionRefusedError" in report.error_kinds
    assert "no answered requests" in report.text()


def test_histogram_png_and_text_fallback(serve, monkeypatch):
    server = serve(BenchApp)
    report = fal.bench(server, "/", n=50, c=2, payload=OK)
    assert report.histogram_png().startswith(b"\x89PNG")
    assert "data:image/png;base64," in report._repr_html_()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert report.histogram_png() is None
    html = report._repr_html_()
    assert "<img" not in html and "#" in html and "req/s" in html


# -- Server-Timing ---------------------------------------------------------------------------


def test_server_timing_header_on_sync_and_async_handlers(serve):
    server = serve(BenchApp)
    for path in ("/", "/flaky"):
        answer = httpx.post(server.url + path, json=OK)
        assert answer.status_code == 200
        phases = parse(answer.headers["server-timing"])
        assert set(phases) == {"decode", "handler", "encode"}
        assert all(v >= 0 for v in phases.values())
    assert "server-timing" not in httpx.post(server.url + "/", json={}).headers  # 422
    # fal's URL layout is timed too
    answer = httpx.post(server.url + "/any-owner/bench-app/", json=OK)
    assert "handler" in parse(answer.headers["server-timing"])


def test_parse_skips_malformed_entries():
    assert parse("decode;dur=0.5, handler;dur=x, cache;desc=hit, encode;dur=2") == {
        "decode": 0.5,
        "encode": 2.0,
    }


# -- %fal bench ------------------------------------------------------------------------------

APP_CELL = textwrap.dedent(
    """
    import falkit as fal
    from pydantic import BaseModel

    class In(BaseModel):
        prompt: str

    class BenchMagicApp(fal.App):
        @fal.endpoint("/")
        def echo(self, input: In) -> dict:
            if input.prompt == "bad":
                raise ValueError("bad")
            return {"output": input.prompt}
    """
)


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    # IPython's test shell (another test may have made the instance) formats plain text
    # only; a notebook front end asks for HTML too.
    active = shell.display_formatter.active_types
    shell.display_formatter.active_types = shell.display_formatter.format_types
    assert shell.run_cell(APP_CELL).success
    yield shell
    fal.stop_all()
    shell.display_formatter.active_types = active


def run(shell: InteractiveShell, code: str):
    with capture_output() as captured:
        result = shell.run_cell(code)
    return result, captured


def test_magic_bench_displays_a_report(shell):
    assert run(shell, "%fal serve BenchMagicApp")[0].success
    result, captured = run(
        shell, """%fal bench BenchMagicApp / -n 200 -c 4 --payload '{"prompt": "x"}'"""
    )
    assert result.success, result.error_in_exec
    (shown,) = [o for o in captured.outputs if "req/s" in o.data.get("text/plain", "")]
    assert "requests 200" in shown.data["text/plain"] and "errors 0" in shown.data["text/plain"]
    assert "data:image/png;base64," in shown.data["text/html"]
    result, captured = run(
        shell, """%fal bench BenchMagicApp / -n 20 -c 2 --payload '{"prompt": "bad"}'"""
    )
    assert result.success
    assert "errors 20 (HTTP 500: 20)" in captured.outputs[-1].data["text/plain"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%fal bench BenchMagicApp / --payload '{nope'", "--payload is not JSON"),
        ("%fal bench BenchMagicApp /missing", "has no route '/missing'"),
        ("%fal bench BenchMagicApp / -n 0", "n must be between"),
        ("%fal bench BenchMagicApp / -n many", "invalid int value"),
        ("%fal bench Nope /", "no server named 'Nope'"),
    ],
)
def test_magic_bench_bad_input_is_a_usage_error(shell, line, message):
    assert run(shell, "%fal serve BenchMagicApp")[0].success
    result, _ = run(shell, line)
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert message in str(result.error_in_exec)
    server = fal.get_server("BenchMagicApp")
    assert server.client.call("/", {"prompt": "ok"}) == {"output": "ok"}


def test_magic_bench_in_a_real_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(APP_CELL),
        nbformat.v4.new_code_cell("%fal serve BenchMagicApp"),
        nbformat.v4.new_code_cell(
            """%fal bench BenchMagicApp / -n 200 -c 4 --payload '{"prompt": "k"}'"""
        ),
        nbformat.v4.new_code_cell("%fal stop --all"),
    ]
    NotebookClient(nb, timeout=90, kernel_name="python3").execute()
    (shown,) = nb.cells[2].outputs
    assert shown.output_type == "display_data"
    assert "requests 200" in shown.data["text/plain"]
    assert "errors 0" in shown.data["text/plain"]
    assert "data:image/png;base64," in shown.data["text/html"]
