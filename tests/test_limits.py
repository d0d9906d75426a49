"""fal's limits honoured locally, under concurrent load from real clients over loopback:
``max_multiplexing`` / ``max_concurrency`` make the excess wait (fal queues, never refuses),
``request_timeout`` answers fal's 504 request error."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from _support import call
from fastapi import FastAPI, WebSocket

import falkit as fal
from falkit.asgi.layout import FalURLLayout
from falkit.asgi.limits import LimitSpec, RequestLimiter


class Gauge:
    """Counts requests inside a handler at once, and the most seen."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def _post_all(url: str, path: str, n: int, timeout: float = 20) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            return http.post(path, json={})

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _gauge_app(gauge: Gauge, **options: object) -> type[fal.App]:
    class Limited(fal.App, **options):  # type: ignore[call-arg]
        @fal.endpoint("/")
        async def run(self) -> dict:
            with gauge:
                await asyncio.sleep(0.2)
            return {"ok": True}

        @fal.endpoint("/sync")
        def run_sync(self) -> dict:
            with gauge:
                time.sleep(0.2)
            return {"ok": True}

    return Limited


@pytest.mark.parametrize("path", ["/", "/sync", "/me/limited/sync"])
def test_max_multiplexing_bounds_concurrency_and_the_excess_waits(serve, path):
    gauge = Gauge()
    server = serve(_gauge_app(gauge, max_multiplexing=2))
    began = time.monotonic()
    responses = _post_all(server.url, path, 6)
    took = time.monotonic() - began
    assert [r.status_code for r in responses] == [200] * 6  # none refused
    assert gauge.most == 2
    assert took >= 0.55  # three waves of two


def test_max_concurrency_times_multiplexing_is_the_app_limit(serve):
    gauge = Gauge()
    server = serve(_gauge_app(gauge, max_concurrency=2, max_multiplexing=2))
    responses = _post_all(server.url, "/", 10)
    assert all(r.status_code == 200 for r in responses)
    assert gauge.most == 4


def test_no_limit_set_means_unbounded_and_no_wrapper(serve):
    gauge = Gauge()

    class Free(fal.App):
        @fal.endpoint("/")
        async def run(self) -> dict:
            with gauge:
                deadline = time.monotonic() + 5
                while gauge.most < 8 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)  # all eight get in, or this times out
            return {"ok": True}

    server = serve(Free)
    asgi = server.generations.current.asgi
    assert isinstance(asgi, FastAPI)  # nothing between uvicorn and the app...
    assert not any(m.cls is RequestLimiter for m in asgi.user_middleware)  # ...no limiter
    responses = _post_all(server.url, "/", 8)
    assert all(r.status_code == 200 for r in responses)
    assert gauge.most == 8


def test_health_and_openapi_are_not_limited(serve):
    release = threading.Event()

    class One(fal.App, max_multiplexing=1):
        @fal.endpoint("/")
        def run(self) -> dict:
            release.wait(10)
            return {}

    server = serve(One)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(call, server, "/")
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=2) as http:
            assert http.get("/health").status_code == 200
            assert http.get("/openapi.json").status_code == 200
        release.set()
        busy.result(10)


def test_request_timeout_answers_fals_504_and_the_server_goes_on(serve):
    class Slow(fal.App, request_timeout=0.5):
        @fal.endpoint("/sync")
        def slow_sync(self, seconds: float = 0.0) -> dict:
            time.sleep(seconds)
            return {"slept": seconds}

        @fal.endpoint("/async")
        async def slow_async(self, seconds: float = 0.0) -> dict:
            await asyncio.sleep(seconds)
            return {"slept": seconds}

    server = serve(Slow)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ("/sync", "/async"):
            began = time.monotonic()
            response = http.post(f"{path}?seconds=3")
            assert time.monotonic() - began < 2.0  # answered at the timeout, not at 3 s
            assert response.status_code == 504
            assert response.json() == {
                "detail": "Request timed out",
                "error_type": "request_timeout",
            }
            assert response.headers["x-fal-error-type"] == "request_timeout"
            ok = http.post(f"{path}?seconds=0.01")
            assert ok.status_code == 200 and ok.json() == {"slept": 0.01}
    assert "request_timeout=0.5s exceeded" in server.logs()


def test_request_timeout_under_concurrent_load(serve):
    class Mixed(fal.App, request_timeout=0.5, max_multiplexing=8):
        @fal.endpoint("/")
        async def run(self, seconds: float = 0.0) -> dict:
            await asyncio.sleep(seconds)
            return {"slept": seconds}

    server = serve(Mixed)

    def one(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            return http.post(f"/?seconds={2.0 if i % 2 else 0.05}").status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(8)))
    assert codes == [200, 504] * 4


def test_timed_out_handler_frees_its_slot(serve):
    class Single(fal.App, request_timeout=0.3, max_multiplexing=1):
        @fal.endpoint("/")
        def run(self, seconds: float = 0.0) -> dict:
            time.sleep(seconds)
            return {}

    server = serve(Single)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/?seconds=1.5").status_code == 504
        began = time.monotonic()
        assert http.post("/?seconds=0").status_code == 200
        # served at once, not queued behind the runaway thread (still sleeping)
        assert time.monotonic() - began < 0.8


def test_websocket_session_holds_a_slot(serve):
    class Mux(fal.App, max_multiplexing=1):
        @fal.endpoint("/")
        def run(self) -> dict:
            return {"ok": True}

        @fal.endpoint("/ws", is_websocket=True)
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            async for text in websocket.iter_text():
                await websocket.send_text(text)

    server = serve(Mux)
    with ThreadPoolExecutor(1) as pool:
        with server.client as client, client.websocket("/ws") as ws:
            ws.send("hi")
            assert ws.recv(5) == "hi"
            waiting = pool.submit(call, server, "/")
            time.sleep(0.3)
            assert not waiting.done()  # queued behind the open session, as on fal
        assert waiting.result(10) == {"ok": True}


def test_limit_spec_from_options():
    class A(fal.App, max_multiplexing=3):
        pass

    class B(fal.App, max_concurrency=2):
        pass

    class C(fal.App, max_concurrency=2, max_multiplexing=4, request_timeout=30):
        pass

    assert LimitSpec.of(A) == LimitSpec(3, None)
    assert LimitSpec.of(B) == LimitSpec(2, None)
    assert LimitSpec.of(C) == LimitSpec(8, 30)
    assert not LimitSpec.of(fal.App).active
    for bad in ({"max_concurrency": 0}, {"max_multiplexing": 1.5}, {"request_timeout": -1}):
        cls = type("Bad", (fal.App,), dict(bad))
        with pytest.raises(ValueError):
            LimitSpec.of(cls)


def test_limiter_is_plain_asgi():
    # Usable around any ASGI app (the CLI and Ray Serve serve build_asgi's output too).
    app = FastAPI()
    limiter = RequestLimiter(app, LimitSpec(1, 1.0), {"/"})
    assert limiter._limited({"type": "http", "path": "/"})
    # fal's URL layout is taken off once, above the limiter (falkit.asgi.layout).
    seen: list[bool] = []

    async def inner(scope, receive, send) -> None:
        seen.append(limiter._limited(scope))

    asyncio.run(FalURLLayout(inner, "x")({"type": "http", "path": "/owner/x/"}, None, None))
    assert seen == [True]
    assert not limiter._limited({"type": "http", "path": "/health"})
    assert not limiter._limited({"type": "lifespan"})
