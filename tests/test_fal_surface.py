"""fal's SDK surface with ``import falkit as fal``, served over real sockets: the exceptions
of ``fal.exceptions`` answered as fal's server answers them, fal's headers
(``x-fal-billable-units``, ``x-fal-request-id``, ``X-Fal-Runner-Hints``), ``fal.ref``, and
the routes and middlewares an App adds itself."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi import Request, WebSocket
from pydantic import BaseModel

import falkit as fal
from falkit.ref import get_current_app

FE = fal.exceptions


class Input(BaseModel):
    prompt: str


class Units(BaseModel):
    value: int | float | str


class Raising(fal.App):
    @fal.endpoint("/app")
    def app_exception(self) -> dict:
        raise FE.AppException("not for you", 401)

    @fal.endpoint("/field")
    def field_exception(self, input: Input) -> dict:
        raise FE.FieldException(field="prompt", message="prompt must rhyme")

    @fal.endpoint("/units")
    def units(self, input: Units) -> dict:
        raise FE.FieldException("value", "billed anyway", billable_units=input.value)

    @fal.endpoint("/cancelled")
    async def cancelled(self) -> dict:
        raise FE.RequestCancelledException()

    @fal.endpoint("/oom")
    def oom(self) -> dict:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    @fal.endpoint("/nccl")
    def nccl(self) -> dict:
        raise RuntimeError("NCCL error: unhandled system error")

    @fal.endpoint("/gpu")
    def gpu(self) -> dict:
        raise FE.GPUOutOfMemoryException()

    @fal.endpoint("/fail")
    def fail(self) -> dict:
        raise ValueError("boom")

    @fal.endpoint("/")
    def ok(self, input: Input) -> dict:
        return {"prompt": input.prompt}


def _post(server: Any, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30, **kw)


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        ("/app", None, 401, "not for you"),
        (
            "/field",
            {"prompt": "x"},
            422,
            [{"loc": ["body", "prompt"], "msg": "prompt must rhyme", "type": "value_error"}],
        ),
        ("/cancelled", None, 499, "Request cancelled by the client."),
        ("/oom", None, 503, "CUDA error: out of memory"),
        ("/nccl", None, 503, "GPU error"),
        ("/gpu", None, 503, "GPU error"),
        ("/fail", None, 500, "Internal Server Error"),
    ],
)
def test_fal_exceptions_are_answered_as_fals_server_answers_them(serve, path, body, status, detail):
    server = serve(Raising)
    response = _post(server, path, body)
    assert (response.status_code, response.json()) == (status, {"detail": detail})
    assert "x-fal-billable-units" not in response.headers
    assert response.headers["x-fal-request-id"]
    if path in ("/oom", "/nccl", "/fail"):  # unhandled: the traceback is logged, by id
        assert response.headers["x-fal-request-id"] in server.logs()
    assert _post(server, "/", {"prompt": "after"}).json() == {"prompt": "after"}


@pytest.mark.parametrize(
    ("value", "header"),
    [(42, "42"), (3.14159265, "3.14159265"), (1.23e-5, "0.00001230"), (0, None)],
)
def test_field_exception_bills_its_units_as_fal_formats_them(serve, value, header):
    response = _post(serve(Raising), "/units", {"value": value})
    assert response.status_code == 422
    assert response.headers.get("x-fal-billable-units") == header


def test_billable_units_that_are_not_a_number_make_a_500(serve):
    server = serve(Raising)
    response = _post(server, "/units", {"value": "many"})
    assert response.status_code == 500
    assert "could not convert string to float" in server.logs()


def test_fals_exception_classes_read_as_fals():
    exc = FE.AppException("nope", 418)
    assert (exc.message, exc.status_code, str(exc)) == ("nope", 418, "nope")
    assert {exc: 1}[exc] == 1  # hashable, as exceptions are
    field = FE.FieldException(field="a", message="bad")
    assert (field.status_code, field.type, field.billable_units) == (422, "value_error", 0)
    assert field.to_pydantic_format() == {
        "detail": [{"loc": ["body", "a"], "msg": "bad", "type": "value_error"}]
    }
    oom = FE.CUDAOutOfMemoryException()
    assert isinstance(oom, FE.GPUOutOfMemoryException)
    assert isinstance(oom, FE.AppException) and isinstance(oom, FE.FalServerlessException)
    assert (oom.status_code, oom.message) == (503, "CUDA error: out of memory")
    assert FE.RequestCancelledException().message == "Request cancelled by the client."
    assert not issubclass(FE.FalServerlessException, fal.FalkitError)  # the App's, not ours


def test_catch_gpu_exceptions_translates_gpu_failures_only():
    with pytest.raises(FE.CUDAOutOfMemoryException) as caught, FE.catch_gpu_exceptions():
        raise RuntimeError("CUDA error: out of memory")
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(FE.CUDAOutOfMemoryException), FE.catch_gpu_exceptions():
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.")
    with pytest.raises(FE.GPUException) as generic, FE.catch_gpu_exceptions():
        raise OSError("NVML driver failure")
    assert type(generic.value) is FE.GPUException and generic.value.message == "GPU error"
    original = FE.GPUException()
    with pytest.raises(FE.GPUException) as same, FE.catch_gpu_exceptions():
        raise original
    assert same.value is original

    @FE.catch_gpu_exceptions()
    def work(error: Exception | None) -> int:
        if error is not None:
            raise error
        return 42

    assert work(None) == 42
    with pytest.raises(TypeError, match="wrong type"):
        work(TypeError("wrong type"))
    with pytest.raises(FE.CUDAOutOfMemoryException):
        work(RuntimeError("CUDA out of memory"))
    assert FE.is_gpu_error(RuntimeError("CuDa went wrong"))
    assert not FE.is_gpu_error(RuntimeError("file not found"))


def test_requests_the_app_never_ran_are_not_billed(serve):
    server = serve(Raising)
    missing = _post(server, "/nope", {})
    assert (missing.status_code, missing.headers["x-fal-billable-units"]) == (404, "0")
    assert missing.json() == {"detail": "Path /nope not found"}
    invalid = _post(server, "/", {"prompt": 3})
    assert (invalid.status_code, invalid.headers["x-fal-billable-units"]) == (422, "0")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    binary = httpx.post(
        server.url + "/",
        content=png,
        headers={"content-type": "multipart/form-data; boundary=xyz"},
        timeout=30,
    )
    assert binary.status_code == 422 and binary.headers["x-fal-billable-units"] == "0"
    assert f"<binary {len(png)} bytes>" in binary.text  # fal's placeholder for non-text


def test_every_answer_names_its_request(serve):
    server = serve(Raising)
    made = _post(server, "/", {"prompt": "a"})
    assert made.status_code == 200 and len(made.headers["x-fal-request-id"]) >= 8
    assert "x-fal-billable-units" not in made.headers
    sent = _post(server, "/", {"prompt": "a"}, headers={"x-fal-request-id": "req-1"})
    assert sent.headers.get_list("x-fal-request-id") == ["req-1"]


def whose() -> str:
    """A helper with no ``self``, as fal's docs show ``fal.ref`` used."""
    return type(get_current_app()).__name__


class First(fal.App):
    def setup(self) -> None:
        self.current_in_setup = get_current_app() is self

    @fal.endpoint("/sync")
    def sync(self) -> dict:
        app = fal.ref.get_current_app()
        return {"app": whose(), "rid": app.current_request.request_id}

    @fal.endpoint("/async")
    async def run_async(self) -> dict:
        return {"app": whose(), "setup": self.current_in_setup}

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"app": whose()})
        await websocket.close()


class Second(First):
    pass


def test_get_current_app_is_the_instance_answering(serve):
    first, second = serve(First), serve(Second)  # Second is the App made last
    assert get_current_app() is not None and whose() == "Second"
    sent = {"x-fal-request-id": "abc"}
    assert _post(first, "/sync", headers=sent).json() == {"app": "First", "rid": "abc"}
    assert _post(second, "/sync").json()["app"] == "Second"
    assert _post(first, "/async").json() == {"app": "First", "setup": True}
    with fal.Client(first.url) as client:
        with client.websocket("/ws") as ws:
            assert json.loads(ws.recv(timeout=10)) == {"app": "First"}
        assert client.call("/me/first/async")["app"] == "First"  # fal's URL layout


class Hinted(fal.App):
    hints: list[Any] = ["gpu-a100", "é", "😀", 7, "model-x"]

    def provide_hints(self) -> list[str]:
        if self.hints is None:
            raise RuntimeError("no hints today")
        return self.hints

    @fal.endpoint("/")
    def run(self, input: Input) -> dict:
        return {"prompt": input.prompt}


def test_runner_hints_go_out_as_fals_header(serve):
    server = serve(Hinted)
    response = _post(server, "/", {"prompt": "x"})
    assert response.status_code == 200
    raw = dict(response.headers.raw)
    # latin-1 hints only: the emoji (and a non-string) are left out, and logged
    assert raw[b"x-fal-runner-hints"] == "gpu-a100,é,model-x".encode("latin-1")
    assert "is not latin-1" in server.logs()
    assert b"x-fal-runner-hints" in dict(httpx.get(server.url + "/health").headers.raw)
    Hinted.hints = None  # type: ignore[assignment]
    try:
        failed = _post(server, "/", {"prompt": "x"})
    finally:
        Hinted.hints = ["gpu-a100"]
    assert failed.status_code == 200 and "x-fal-runner-hints" not in failed.headers
    assert "provide_hints() failed" in server.logs()
    plain = _post(serve(Raising), "/", {"prompt": "x"})
    assert "x-fal-runner-hints" not in plain.headers  # provide_hints() not overridden


SEEN: list[str] = []


class Tagging:
    """A plain ASGI middleware an App adds itself."""

    def __init__(self, app: Any, tag: str) -> None:
        self.app, self.tag = app, tag

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            SEEN.append(f"{self.tag}:{scope['path']}")
        await self.app(scope, receive, send)


class Extended(fal.App):
    def _add_extra_middlewares(self, app: Any) -> None:
        super()._add_extra_middlewares(app)
        app.add_middleware(Tagging, tag="inner")
        app.add_middleware(Tagging, tag="outer")

        @app.middleware("http")
        async def whose_header(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-served-by"] = whose()
            return response

        @app.exception_handler(KeyError)
        async def missing_key(request: Any, exc: KeyError) -> Any:
            from fastapi.responses import JSONResponse

            return JSONResponse({"detail": f"no {exc.args[0]}"}, 404)

    def _add_extra_routes(self, app: Any) -> None:
        super()._add_extra_routes(app)

        @app.get("/ready")
        def ready() -> dict:
            return {"status": "ok"}

    @fal.endpoint("/lookup")
    def lookup(self, input: Input) -> dict:
        return {"found": {}[input.prompt]}


class Bare(fal.App):
    def _add_extra_routes(self, app: Any) -> None:
        @app.get("/ready")
        def ready() -> dict:
            return {"status": "ready"}

    @fal.endpoint("/")
    def run(self, input: Input) -> dict:
        return {}


def test_an_apps_own_routes_and_middlewares_are_served(serve):
    server = serve(Extended)
    SEEN.clear()
    ready = httpx.get(f"{server.url}/me/extended/ready", timeout=30)
    assert ready.json() == {"status": "ok"} and ready.headers["x-served-by"] == "Extended"
    # added last is outermost, as with Starlette; both see the route's own path
    assert SEEN == ["outer:/ready", "inner:/ready"]
    assert httpx.get(server.url + "/health").json() == {"version": "unknown"}
    lookup = _post(server, "/lookup", {"prompt": "pen"})
    assert (lookup.status_code, lookup.json()) == (404, {"detail": "no pen"})
    assert lookup.headers["x-fal-request-id"]
    bare = serve(Bare)
    assert httpx.get(bare.url + "/ready").json() == {"status": "ready"}
    assert httpx.get(bare.url + "/health").status_code == 404  # not added without super()


def test_handle_exit_runs_when_the_server_stops_before_requests_in_flight_end(serve):
    events: list[str] = []
    entered = threading.Event()

    class Exits(fal.App):
        def setup(self) -> None:
            self.exiting = False

        def handle_exit(self) -> None:
            events.append("handle_exit")
            self.exiting = True

        def teardown(self) -> None:
            events.append("teardown")

        @fal.endpoint("/work")
        def work(self) -> dict:
            entered.set()
            for _ in range(500):  # a long loop that checks fal's flag
                if self.exiting:
                    events.append("loop saw the flag")
                    return {"stopped": True}
                time.sleep(0.01)
            return {"stopped": False}

    server = serve(Exits)
    answers: list[dict] = []
    caller = threading.Thread(
        target=lambda: answers.append(httpx.post(server.url + "/work", timeout=30).json())
    )
    caller.start()
    assert entered.wait(10)
    server.stop()
    caller.join(30)
    assert answers == [{"stopped": True}]
    assert events == ["handle_exit", "loop saw the flag", "teardown"]


def test_cancel_on_disconnect_ends_the_block_when_the_queue_cancels(serve):
    from falkit.compat import use_fal_client
    from falkit.toolkit.utils.endpoint import cancel_on_disconnect

    fal_client = pytest.importorskip("fal_client")
    seen: list[str] = []
    entered = threading.Event()

    class Watches(fal.App):
        @fal.endpoint("/")
        async def run(self, request: Request) -> dict:
            async with cancel_on_disconnect(request):
                entered.set()
                await asyncio.sleep(30)
                seen.append("finished the work")
            seen.append("after the block")
            return {"cut": "finished the work" not in seen}

    server = serve(Watches)
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {})
        assert entered.wait(10)
        handle.cancel()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == ["after the block"]  # cancelled inside, the code after it ran
