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


# -- the same limits on every way in: fal's queue, fal's URL layout, websockets ------------


def _submit_all(server: fal.Server, path: str, n: int) -> list[httpx.Response]:
    """``n`` requests through fal's queue API at once (as ``fal_client.submit`` sends them),
    each polled to its end; the results, as the queue answers them."""
    base = f"/.fal/queue/local/{server.app_name}"

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=20) as http:
            submitted = http.post(base + path, json={})
            assert submitted.status_code == 200, submitted.text
            status_url = submitted.json()["status_url"]
            deadline = time.monotonic() + 20
            while http.get(status_url).json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline, "queued request never completed"
                time.sleep(0.02)
            return http.get(submitted.json()["response_url"])

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("path", ["/", "/sync"])
def test_queued_requests_are_bounded_by_max_multiplexing(serve, path):
    gauge = Gauge()
    server = serve(_gauge_app(gauge, max_multiplexing=2))
    results = _submit_all(server, path, 6)
    assert [r.status_code for r in results] == [200] * 6  # none refused: they wait
    assert all(r.json() == {"ok": True} for r in results)
    assert gauge.most == 2


def test_queued_requests_are_bounded_by_max_concurrency_times_multiplexing(serve):
    gauge = Gauge()
    server = serve(_gauge_app(gauge, max_concurrency=2, max_multiplexing=2))
    results = _submit_all(server, "/", 10)
    assert all(r.status_code == 200 for r in results)
    assert gauge.most == 4


def test_queue_direct_and_url_layout_share_one_limit(serve):
    gauge = Gauge()
    server = serve(_gauge_app(gauge, max_multiplexing=3))
    with ThreadPoolExecutor(3) as pool:
        queued = pool.submit(_submit_all, server, "/", 4)
        direct = pool.submit(_post_all, server.url, "/", 4)
        layout = pool.submit(_post_all, server.url, f"/me/{server.app_name}/", 4)
        codes = [r.status_code for r in queued.result() + direct.result() + layout.result()]
    assert codes == [200] * 12
    assert gauge.most == 3  # one budget for all three ways in, not three


class _Slow(fal.App, request_timeout=0.3):
    @fal.endpoint("/")
    def slow(self) -> dict:
        time.sleep(1.0)
        return {"slept": 1.0}

    @fal.endpoint("/quick")
    def quick(self) -> dict:
        return {"slept": 0.0}


def test_request_timeout_through_the_queue_answers_fals_504(serve):
    server = serve(_Slow)
    (result,) = _submit_all(server, "/", 1)
    assert result.status_code == 504  # before: 200 after the whole second
    assert result.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    assert result.headers["x-fal-error-type"] == "request_timeout"
    # the server goes on: a quick request through the queue completes
    base = f"/.fal/queue/local/{server.app_name}"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        submitted = http.post(base + "/quick", json={}).json()
        deadline = time.monotonic() + 10
        while http.get(submitted["status_url"]).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert http.get(submitted["response_url"]).json() == {"slept": 0.0}


def test_request_timeout_through_the_url_layout_answers_fals_504(serve):
    server = serve(_Slow)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        began = time.monotonic()
        response = http.post(f"/me/{server.app_name}/")
        assert time.monotonic() - began < 0.9
        assert response.status_code == 504
        assert response.headers["x-fal-error-type"] == "request_timeout"
        assert http.post(f"/me/{server.app_name}/quick").json() == {"slept": 0.0}


def test_request_timeout_through_the_real_fal_client(serve):
    fal_client = pytest.importorskip("fal_client")
    from falkit.compat import use_fal_client

    server = serve(_Slow)
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {}, path="/")
        with pytest.raises(Exception) as caught:
            handle.get()
        assert "504" in str(caught.value) or "timed out" in str(caught.value).lower()
        assert fal_client.submit(app_id, {}, path="/quick").get() == {"slept": 0.0}


def test_websocket_through_the_url_layout_holds_a_slot(serve):
    class Mux(fal.App, max_multiplexing=1):
        @fal.endpoint("/")
        def run(self) -> dict:
            return {"ok": True}

        @fal.realtime("/realtime")
        def rt(self, input: dict) -> dict:
            return input

    server = serve(Mux)
    with ThreadPoolExecutor(1) as pool:
        with server.client as client, client.realtime(f"/me/{server.app_name}/realtime") as rt:
            rt.send({"n": 1})
            assert rt.recv(5) == {"n": 1}
            waiting = pool.submit(_submit_all, server, "/", 1)
            time.sleep(0.3)
            assert not waiting.done()  # queued behind the open session, as on fal
        assert [r.json() for r in waiting.result(20)] == [{"ok": True}]
