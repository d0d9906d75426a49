"""Classes written against the real ``fal`` SDK (``import fal``), served unchanged by falkit.

Each behaviour is checked twice over real loopback sockets: against falkit's server and
against fal's own ASGI application for the same class (``App._build_app()``, what
``fal run --local`` serves), run here on uvicorn in a thread. The answers must match.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import WebSocket
from pydantic import BaseModel

import falkit
from falkit.serving import Server

fal = pytest.importorskip("fal", reason="install the fal SDK: pip install 'falkit[fal]'")
pytest.importorskip("starlette_exporter", reason="fal's own server needs starlette-exporter")

pytestmark = [
    pytest.mark.timeout(120),
    # fal's own realtime code calls pydantic's deprecated .dict(); not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:fal.realtime"),
]

EVENTS: list[str] = []


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str


class RealFalApp(fal.App, keep_alive=30, max_concurrency=3):
    machine_type = "S"
    requirements = ["pydantic"]

    def setup(self) -> None:
        self.prefix = ">"
        EVENTS.append("setup")

    def teardown(self) -> None:
        EVENTS.append("teardown")

    def shout(self, text: str) -> str:  # a plain helper method, not a route
        return self.prefix + text.upper()

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=self.shout(input.prompt))

    @fal.endpoint("/fail")
    def fail(self, input: Input) -> Output:
        raise RuntimeError("boom")

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_json({"echo": self.prefix + text})
        await websocket.close()

    @fal.realtime("/realtime", buffering=4)
    def rt(self, input: Input) -> Output:
        if input.prompt == "boom":
            raise RuntimeError("bad frame")
        return Output(output=self.shout(input.prompt))

    @fal.realtime("/stream")
    def stream(self, input: Input) -> Iterator[Output]:
        for char in input.prompt:
            yield Output(output=char)


class FalOwnServer:
    """fal's own ASGI application for a class, on uvicorn in a thread (loopback)."""

    def __init__(self, app_cls: type) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app_cls(_allow_init=True)._build_app(), log_config=None)
        self.server = uvicorn.Server(config)
        # uvicorn's own signal handlers would replace pytest's; not wanted in a thread.
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "fal's app did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        # fal's lifespan hooks itself into fal_client (request headers from the current
        # fal app); later tests use fal_client against falkit, so put the default back.
        with contextlib.suppress(ImportError):
            import fal_client

            fal_client.set_get_current_app(None)  # type: ignore[arg-type]


@pytest.fixture
def both(serve: Any) -> Iterator[dict[str, str]]:
    EVENTS.clear()
    ours: Server = serve(RealFalApp)
    theirs = FalOwnServer(RealFalApp)
    try:
        yield {"falkit": ours.url, "fal": theirs.url}
    finally:
        theirs.stop()


def _http(url: str) -> list[tuple[int, Any]]:
    answers = []
    # A connection per request: after a 500 fal's own server resets a kept-alive
    # connection (falkit's keeps it; see the next test), which is not what is compared.
    for method, path, body in [
        ("POST", "/", {"prompt": "hi"}),
        ("POST", "/", {"wrong": 1}),
        ("POST", "/", None),
        ("POST", "/nope", {"prompt": "x"}),
        ("POST", "/fail", {"prompt": "x"}),
        ("POST", "/", {"prompt": "after the errors"}),
        ("GET", "/health", None),
    ]:
        response = httpx.request(method, url + path, json=body, timeout=30)
        answers.append((response.status_code, response.json()))
    return answers


def test_http_answers_match_fals_own_server(both: dict[str, str]) -> None:
    ours, theirs = _http(both["falkit"]), _http(both["fal"])
    assert ours == theirs
    assert ours[0] == (200, {"output": ">HI"})
    assert ours[3] == (404, {"detail": "Path /nope not found"})
    assert ours[4] == (500, {"detail": "Internal Server Error"})


def test_a_500_leaves_the_kept_alive_connection_usable(serve: Any) -> None:
    with httpx.Client(base_url=serve(RealFalApp).url, timeout=30) as client:
        assert client.post("/fail", json={"prompt": "x"}).status_code == 500
        assert client.post("/", json={"prompt": "x"}).json() == {"output": ">X"}


class Units(BaseModel):
    value: int | float | str


class BaseFalApp(fal.App):
    def setup(self) -> None:
        self.ready = "ready"

    def _add_extra_routes(self, app: Any) -> None:
        super()._add_extra_routes(app)

        @app.get("/ready")
        def ready() -> dict:
            return {"status": self.ready}


class HookedFalApp(BaseFalApp, keep_alive=10):
    """fal's exceptions, hooks and headers, each compared with fal's own server."""

    version = "2.0"

    def setup(self) -> None:
        super().setup()  # reaches BaseFalApp.setup, as written
        self.ready += "!"

    def provide_hints(self) -> list[str]:
        return ["gpu-a", "😀", "model-b"]

    def _add_extra_middlewares(self, app: Any) -> None:
        super()._add_extra_middlewares(app)

        @app.middleware("http")
        async def stamp(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-stamp"] = request.url.path
            return response

    @fal.endpoint("/app")
    def app_exception(self) -> Output:
        raise fal_exceptions().AppException(message="not for you", status_code=401)

    @fal.endpoint("/units")
    def units(self, input: Units) -> Output:
        raise fal_exceptions().FieldException("value", "wrong", billable_units=input.value)

    @fal.endpoint("/cancelled")
    async def cancelled(self) -> Output:
        raise fal_exceptions().RequestCancelledException("Request cancelled by the client.")

    @fal.endpoint("/oom")
    def oom(self) -> Output:
        raise RuntimeError("CUDA out of memory")

    @fal.endpoint("/cudnn")
    def cudnn(self) -> Output:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    @fal.endpoint("/triton")
    def triton(self) -> Output:
        raise RuntimeError("triton kernel failed to compile")

    @fal.endpoint("/whoami")
    def whoami(self, input: Input) -> Output:
        from fal.ref import get_current_app

        app = get_current_app()  # stands for the instance answering: it ran setup()
        return Output(output=f"{app.ready}:{app.current_request.request_id}")


def fal_exceptions() -> Any:
    import fal.exceptions

    return fal.exceptions


_HEADERS = ("x-fal-billable-units", "x-fal-runner-hints", "x-stamp")


def _hooked(url: str) -> list[tuple[Any, ...]]:
    answers = []
    for method, path, body in [
        ("POST", "/app", None),
        ("POST", "/units", {"value": 42}),
        ("POST", "/units", {"value": 1.23e-5}),
        ("POST", "/units", {"value": 0}),
        ("POST", "/units", {"value": "many"}),
        ("POST", "/cancelled", None),
        ("POST", "/oom", None),
        ("POST", "/cudnn", None),
        ("POST", "/triton", None),
        ("POST", "/units", {"wrong": 1}),
        ("POST", "/nope", {}),
        ("GET", "/ready", None),
        ("GET", "/health", None),
    ]:
        response = httpx.request(method, url + path, json=body, timeout=30)
        headers = tuple(response.headers.get(name) for name in _HEADERS)
        answers.append((response.status_code, response.json(), headers))
    return answers


def test_fals_exceptions_hooks_and_headers_match_fals_own_server(serve: Any) -> None:
    ours = _hooked(serve(HookedFalApp).url)
    theirs_server = FalOwnServer(HookedFalApp)
    try:
        theirs = _hooked(theirs_server.url)
    finally:
        theirs_server.stop()
    assert ours == theirs
    hints, stamp = "gpu-a,model-b", "/app"
    assert ours[0] == (401, {"detail": "not for you"}, (None, hints, stamp))
    assert ours[1][0] == 422 and ours[1][2][0] == "42"
    assert ours[2][2][0] == "0.00001230" and ours[3][2][0] is None
    assert ours[4][0] == 500
    assert ours[5][:2] == (499, {"detail": "Request cancelled by the client."})
    assert ours[6][:2] == ours[7][:2] == (503, {"detail": "CUDA error: out of memory"})
    assert ours[8][:2] == (503, {"detail": "GPU error"})
    assert (ours[9][0], ours[9][2][0]) == (422, "0")  # never run: not billed
    assert (ours[10][0], ours[10][2][0]) == (404, "0")
    assert ours[11][:2] == (200, {"status": "ready!"})
    assert ours[12][:2] == (200, {"version": "2.0"})


def test_a_real_fal_class_gets_fals_own_websocket_verdict() -> None:
    class SyncSocket(fal.App):
        @fal.endpoint("/ws", is_websocket=True)
        def ws(self, websocket: WebSocket) -> None:
            pass

    with pytest.raises(falkit.AppDefinitionError, match="at '/ws' must be defined with async"):
        falkit.serve(SyncSocket)


def test_fal_ref_names_the_app_answering_in_a_real_fal_class(serve: Any) -> None:
    server = serve(HookedFalApp)
    response = httpx.post(
        server.url + "/whoami",
        json={"prompt": "x"},
        headers={"x-fal-request-id": "req-7"},
        timeout=30,
    )
    assert response.json() == {"output": "ready!:req-7"}
    assert response.headers["x-fal-request-id"] == "req-7"


def _realtime(url: str) -> list[Any]:
    seen: list[Any] = []
    client = falkit.Client(url)
    with client.realtime("/realtime") as session:
        for word in ("a", "b"):
            session.send({"prompt": word})
            seen.append(session.recv())
        session.send({"prompt": "boom"})
        with pytest.raises(falkit.RealtimeError) as err:
            session.recv()
        seen.append((err.value.error, err.value.reason))
    with client.realtime("/stream") as session:
        session.send({"prompt": "xyz"})
        seen += [session.recv() for _ in range(3)]
    with client.realtime("/realtime") as session:  # a new session works after an error
        session.send({"prompt": "c"})
        seen.append(session.recv())
    return seen


def test_realtime_sessions_match_fals_own_server(both: dict[str, str]) -> None:
    ours, theirs = _realtime(both["falkit"]), _realtime(both["fal"])
    assert ours == theirs
    assert ours[:2] == [{"output": ">A"}, {"output": ">B"}]
    assert ours[2] == ("INTERNAL_ERROR", "bad frame")


def test_websocket_route_matches_fals_own_server(both: dict[str, str]) -> None:
    import json

    answers = []
    for url in (both["falkit"], both["fal"]):
        with falkit.Client(url).websocket("/ws") as ws:
            ws.send("hello")
            answers.append(json.loads(ws.recv(timeout=10)))
    assert answers == [{"echo": ">hello"}] * 2


def test_setup_and_teardown_run_once_each(serve: Any) -> None:
    EVENTS.clear()
    server = serve(RealFalApp)
    assert EVENTS == ["setup"]
    server.client.call("/", {"prompt": "x"})
    server.stop()
    assert EVENTS == ["setup", "teardown"]


def test_name_options_and_routes_come_from_the_fal_class(serve: Any) -> None:
    server = serve(RealFalApp)
    assert server.app_name == RealFalApp.app_name == "real-fal-app"
    assert falkit.get_server("RealFalApp") is server
    options = server.app_cls.options()
    assert options["keep_alive"] == 30 and options["max_concurrency"] == 3
    assert options["machine_type"] == "S" and options["requirements"] == ["pydantic"]
    kinds = {spec.path: spec.kind for spec in server.routes}
    assert kinds == {
        "/": "http",
        "/fail": "http",
        "/ws": "websocket",
        "/realtime": "realtime",
        "/stream": "realtime",
    }
    assert next(s for s in server.routes if s.path == "/realtime").buffering == 4
    # fal's URL layout: the same route under /<owner>/<app-name>/.
    assert server.client.call("/me/real-fal-app/", {"prompt": "y"}) == {"output": ">Y"}


def test_the_fal_class_itself_is_untouched(serve: Any) -> None:
    serve(RealFalApp).stop()
    serve(RealFalApp)  # adapting twice works: the user's functions keep only fal's tags
    assert not hasattr(RealFalApp.generate, "__falkit_route__")
    assert RealFalApp.generate.route_signature.path == "/"
    assert not issubclass(RealFalApp, falkit.App)


def test_not_an_app_is_still_rejected() -> None:
    class Plain:
        pass

    with pytest.raises(falkit.AppDefinitionError):
        falkit.serve(Plain)  # type: ignore[arg-type]
    with pytest.raises(falkit.AppDefinitionError):
        falkit.serve(fal.App)  # the base class itself has nothing to serve


def test_percent_fal_serve_accepts_a_real_fal_class() -> None:
    # The process-wide shell other tests use too (a second, terminal shell class
    # cannot be instantiated beside it).
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    falkit.load_ipython_extension(shell)
    shell.user_ns["RealFalApp"] = RealFalApp
    try:
        shell.run_line_magic("fal", "serve RealFalApp")
        server = falkit.get_server("real-fal-app")
        assert server.client.call("/", {"prompt": "m"}) == {"output": ">M"}
    finally:
        shell.run_line_magic("fal", "stop --all")
