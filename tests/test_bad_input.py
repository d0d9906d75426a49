"""Garbage in, over real sockets: every bad request gets a clear answer, and the good request
sent right after it still succeeds. HTTP, realtime, and the Python/magic API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import msgpack
import pytest
from _support import poller, threads_named
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.client import connect

import falkit
import falkit as fal
from falkit import AppDefinitionError, ServerError, ServerNotRunning

JSON = {"content-type": "application/json"}


class Input(BaseModel):
    prompt: str
    n: int = 1


class Bad(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> dict:
        return {"output": input.prompt, "n": input.n}

    @fal.endpoint("/any")
    def anything(self, input: dict) -> dict:
        return {"keys": sorted(input)}

    @fal.realtime("/rt")
    def rt(self, input: Input) -> dict:
        return {"output": input.prompt}

    @fal.realtime("/slow", buffering=None)
    def slow(self, input: Input) -> dict:
        time.sleep(0.002)
        return {"n": input.n}

    @fal.realtime("/slow-buffered", buffering=3)
    def slow_buffered(self, input: Input) -> dict:
        time.sleep(0.02)
        return {"n": input.n}

    @fal.realtime("/firehose")
    def firehose(self, input: Input) -> Iterator[dict]:
        for i in range(1_000_000):  # ends with the session, not with the loop
            yield {"i": i, "blob": b"x" * 65536}


class Other(Bad):
    """Same routes under another name: tests that start and stop their own server."""


@pytest.fixture(scope="module")
def server():
    server = falkit.serve(Bad, ws_max_size=4096)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_leaked_servers():
    """Overrides conftest's: the module's one server (``bad``) outlives each test; any
    other server or falkit thread left behind is a failure."""
    yield
    leaked = sorted(set(falkit.servers()) - {"bad"})
    for name in leaked:
        falkit.servers()[name].stop()
    assert not leaked, f"test left servers running: {leaked}"
    # A realtime session's worker thread ends when the server has seen the session end,
    # which may come a moment after the client saw its close frame.
    settled = poller(5.0, interval=0.01)(lambda: len(threads_named("falkit-")) <= 1)
    assert settled, threads_named("falkit-")


def good(server) -> None:
    assert server.client.call("/", {"prompt": "ok"}) == {"output": "ok", "n": 1}


# -- HTTP ---------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        ("/", b'{"prompt": ', JSON, 422, "JSON decode error"),
        ("/", b'{"prompt": 3}', JSON, 422, "valid string"),
        ("/", b'{"prompt": "a", "n": "x"}', JSON, 422, "valid integer"),
        ("/", b"{}", JSON, 422, "Field required"),
        ("/", b"[1, 2]", JSON, 422, "valid dictionary"),
        ("/", b'{"prompt": "a"}', {"content-type": "text/plain"}, 422, "valid dictionary"),
        ("/", b"prompt=a", {"content-type": "application/x-www-form-urlencoded"}, 422, "dict"),
        ("/", b"", JSON, 422, "Field required"),
        ("/", b'{"prompt": "\xff\xfe"}', JSON, 400, "error parsing the body"),
        ("/", b'{"prompt": "a", "n": ' + b"9" * 5000 + b"}", JSON, 400, "parsing the body"),
        ("/any", b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}", JSON, 400, "parsing the body"),
        ("/any", b'{"a": ' + b'{"a": ' * DEEP + b"1" + b"}" * (DEEP + 1), JSON, 400, "parsing"),
    ],
    ids=[
        "invalid-json",
        "wrong-type",
        "wrong-type-int",
        "missing-field",
        "array-not-object",
        "text-plain",
        "form-encoded",
        "empty-body",
        "invalid-utf8",
        "5000-digit-int",
        "deep-list",
        "deep-object",
    ],
)
def test_bad_http_bodies_get_a_clear_4xx(server, path, body, headers, status, says):
    r = httpx.post(server.url + path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert says in r.text
    good(server)


@pytest.mark.parametrize(
    ("method", "path", "status", "detail"),
    [
        ("POST", "/nope", 404, "Path /nope not found"),
        ("GET", "/", 405, "Method Not Allowed"),
        ("DELETE", "/", 405, "Method Not Allowed"),
        ("PUT", "/health", 405, "Method Not Allowed"),
        ("GET", "/rt", 404, None),  # a websocket route answers plain HTTP with 404
        ("POST", "/%00", 404, None),
        ("POST", "/" + "a" * 8000, 404, None),
    ],
)
def test_unknown_paths_and_methods(server, method, path, status, detail):
    r = httpx.request(method, server.url + path, json={"prompt": "a"})
    assert r.status_code == status
    if detail is not None:
        assert r.json()["detail"] == detail
    good(server)


def test_oversize_body_gets_413(serve):
    small = serve(Other, max_body_size=10_000)
    r = httpx.post(small.url + "/", json={"prompt": "x" * 20_000})
    assert r.status_code == 413 and "max_body_size" in r.json()["detail"]
    good(small)


@pytest.mark.parametrize(
    "text",
    ["a\x00b", "\u202eabc\u202c", "👩\u200d👩\u200d👧 ﷽", "e\u0301", "\ufeff", "\U0001d54f" * 1000],
    ids=["nul", "rtl-override", "emoji-zwj", "combining", "bom", "astral"],
)
def test_unicode_edge_cases_round_trip(server, text):
    assert server.client.call("/", {"prompt": text}) == {"output": text, "n": 1}


def test_a_lone_surrogate_is_echoed_back_escaped_not_a_500(server):
    # JSON allows the escape "\ud800", Python decodes it to a lone surrogate, and
    # pydantic accepts it; UTF-8 cannot encode it, so it goes back as the same escape.
    r = httpx.post(server.url + "/", content=b'{"prompt": "\\ud800"}', headers=JSON)
    assert r.status_code == 200
    assert b"\\ud800" in r.content and r.json() == {"output": "\ud800", "n": 1}
    good(server)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_get_a_422_not_a_500(server, number):
    # Python's JSON parser accepts NaN; FastAPI's 422 quotes the input, which strict JSON
    # cannot carry, so it is quoted as a string.
    body = b'{"prompt": "a", "n": ' + number + b"}"
    r = httpx.post(server.url + "/", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "n"]
    good(server)


# -- realtime -----------------------------------------------------------------------------


def ws_url(server, path: str) -> str:
    return server.url.replace("http", "ws", 1) + path


def error_of(ws) -> dict:
    """The session's last text frame (an ``x-fal-error``), after the close 1000."""
    text = None
    while True:
        try:
            frame = ws.recv(10)
        except ConnectionClosedOK:
            break
        if isinstance(frame, str):
            text = frame
    assert ws.close_code == 1000
    assert text is not None
    return json.loads(text)


def good_rt(server) -> None:
    with server.client.realtime("/rt") as rt:
        rt.send({"prompt": "fine"})
        assert rt.recv() == {"output": "fine"}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"prompt": "a"}', "text frames are not accepted"),
        (msgpack.packb({"prompt": "a"})[:-1], "invalid msgpack frame"),
        (b"\xc1", "invalid msgpack frame"),
        (b"", "invalid msgpack frame"),
        (msgpack.packb([1, 2, 3]), "does not fit Input"),
        (msgpack.packb({"prompt": 5}), "does not fit Input"),
        (msgpack.packb({"n": 1}), "does not fit Input"),
        (msgpack.packb({"prompt": "x" * 5000}), "exceeds the limit of 4096 bytes"),
        (msgpack.packb(msgpack.ExtType(5, b"zz")), "does not fit Input"),
    ],
    ids=[
        "text",
        "truncated",
        "reserved-byte",
        "empty",
        "list",
        "wrong-type",
        "missing",
        "oversize",
        "ext",
    ],
)
def test_bad_realtime_frames_get_fal_error_frames_then_close(server, frame, reason):
    with connect(ws_url(server, "/rt"), max_size=None) as ws:
        ws.send(frame)
        error = error_of(ws)
    assert error["type"] == "x-fal-error" and error["error"] == "INTERNAL_ERROR"
    assert reason in error["reason"]
    good_rt(server)


def test_a_frame_far_over_uvicorns_cap_closes_1009_and_the_server_goes_on(server):
    with connect(ws_url(server, "/rt"), max_size=None) as ws:
        ws.send(b"\x00" * (64 * 4096))
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                ws.recv(10)
    good_rt(server)


def test_flood_without_buffering_loses_nothing_and_keeps_order(server):
    with connect(ws_url(server, "/slow"), max_size=None) as ws:
        for n in range(500):
            ws.send(msgpack.packb({"prompt": "p", "n": n}))
        got = [msgpack.unpackb(ws.recv(10))["n"] for _ in range(500)]
    assert got == list(range(500))
    good_rt(server)


def test_flood_with_buffering_drops_the_oldest_and_answers_the_newest(server):
    with connect(ws_url(server, "/slow-buffered"), max_size=None) as ws:
        for n in range(300):
            ws.send(msgpack.packb({"prompt": "p", "n": n}))
        got = []
        while not got or got[-1] != 299:
            got.append(msgpack.unpackb(ws.recv(10))["n"])
    assert got == sorted(got) and len(got) < 300  # in order, the oldest dropped
    good_rt(server)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_never_reads_holds_server_memory_bounded(server):
    """A handler yields 64 KiB outputs forever to a client that never reads: the ordered
    outgoing queue waits for the socket, so memory stays flat (measured growth ~1 MiB over
    3 s here, bound asserted at 64 MiB; an unbounded queue would grow ~100 MiB/s)."""
    with connect(ws_url(server, "/firehose"), max_size=None) as ws:
        ws.send(msgpack.packb({"prompt": "p"}))
        time.sleep(0.5)  # socket buffers fill first
        before = _rss_mib()
        time.sleep(3)
        growth = _rss_mib() - before
    assert growth < 64, f"RSS grew {growth:.0f} MiB while the client did not read"
    good_rt(server)


# -- Python API and magics ----------------------------------------------------------------


@pytest.mark.parametrize("obj", [42, "Bad", None, Bad(), Input, Bad.generate], ids=repr)
def test_serving_a_non_app_is_a_one_line_error(obj):
    with pytest.raises(AppDefinitionError) as info:
        falkit.serve(obj)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"port": 70000}, "not a port number"),
        ({"port": -1}, "not a port number"),
        ({"host": "256.1.1.1"}, "cannot listen on 256.1.1.1"),
        ({"host": "no-such-host.invalid"}, "cannot listen on"),
    ],
)
def test_bad_port_or_host_is_a_one_line_server_error(kwargs, says):
    with pytest.raises(ServerError) as info:
        falkit.serve(Other, **kwargs)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_unknown_names_and_stopping_twice(serve):
    with pytest.raises(ServerNotRunning, match="no server named 'nope'"):
        falkit.get_server("nope")
    server = serve(Other)
    server.stop()
    server.stop()  # a no-op, not an error
    assert not server.running
    with pytest.raises(ServerNotRunning):
        falkit.get_server("Other")


def test_serving_the_same_class_from_two_threads_at_once(serve):
    results: list[object] = []
    errors: list[BaseException] = []

    def serve_it() -> None:
        try:
            results.append(serve(Other))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 2
    assert results[0] is results[1]  # one server; the second call updated it in place
    assert results[0].app_name in falkit.servers()
    good(results[0])


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    falkit.load_ipython_extension(shell)
    shell.user_ns.update(falkit=falkit, Other=Other, not_an_app=42)
    yield shell
    falkit.stop_all()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("%fal serve Other --port 70000", "not a port number"),
        ("%fal serve Other --host 256.1.1.1", "cannot listen on"),
        ("%fal serve Other --port", "expected one argument"),
        ("%fal serve", "the following arguments are required"),
        ("%fal playground Nope", "no server named 'Nope'"),
        ("%fal logs", "the following arguments are required"),
        ("%fal serve not_an_app", "not a fal.App subclass"),
    ],
)
def test_bad_magic_lines_are_one_line_usage_errors(shell, line, says):
    with capture_output():
        result = shell.run_cell(line)
    error = result.error_in_exec
    assert type(error).__name__ == "UsageError", repr(error)
    assert says in str(error) and "\n" not in str(error).strip()
    assert shell.run_cell("1 + 1").result == 2


def test_magic_stop_twice(shell):
    with capture_output():
        assert shell.run_cell("%fal serve Other").success
        assert shell.run_cell("%fal stop Other").success
        again = shell.run_cell("%fal stop Other")
    assert type(again.error_in_exec).__name__ == "UsageError"
    assert "no server named 'Other' is running" in str(again.error_in_exec)
