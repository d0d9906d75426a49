"""fal's queue, locally (``falkit.asgi.gateway``): statuses and their HTTP codes, per-request
logs, the SSE status stream, fal's cooperative cancel, ``start_timeout``, webhooks, the
request context a queued handler sees, and failed requests, all over real loopback
sockets, driven by the real ``fal_client`` (sync and async), by ``fal.apps`` and by httpx
the way those clients call the queue."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import falkit as fal
from falkit.compat import use_fal_client

fal_client = pytest.importorskip("fal_client")
httpx_sse = pytest.importorskip("httpx_sse")

pytestmark = pytest.mark.timeout(60)


class Job(BaseModel):
    name: str


async def until(event: threading.Event, limit: float = 10.0) -> None:
    """Wait, without blocking the server's loop, until a test sets ``event``."""
    for _ in range(int(limit / 0.01)):
        if event.is_set():
            return
        await asyncio.sleep(0.01)


def wait_for(check: Callable[[], Any], limit: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + limit
    while not (value := check()):
        assert time.monotonic() < deadline, "the queue never got there"
        time.sleep(0.01)
    return value


def queue_url(server: fal.Server) -> str:
    return f"{server.url}/.fal/queue/local/{server.app_name}"


def serial_app(started: list[str], release: threading.Event) -> type[fal.App]:
    """An app working on one request at a time, each held until ``release`` is set."""

    class Serial(fal.App, max_multiplexing=1):  # type: ignore[call-arg]
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            started.append(input.name)
            print(f"working on {input.name}")
            await until(release)
            return {"name": input.name}

    return Serial


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a handler waiting behind a failed assertion


# -- statuses and their codes ------------------------------------------------------------


def test_statuses_and_codes_follow_fals_queue(serve, release):
    started: list[str] = []
    server = serve(serial_app(started, release))
    with httpx.Client(base_url=queue_url(server), timeout=10) as http:
        handles = {}
        for name in ("a", "b", "c"):
            submitted = http.post("/", json={"name": name})
            assert submitted.status_code == 200
            assert submitted.json()["status"] == "IN_QUEUE"
            handles[name] = submitted.json()
            if name == "a":  # "a" holds the one slot before the others come
                wait_for(
                    lambda: http.get(handles["a"]["status_url"]).status_code == 202 and started
                )
        a, b, c = (http.get(handles[n]["status_url"]) for n in "abc")
        assert [a.status_code, b.status_code, c.status_code] == [202, 202, 202]
        assert a.json()["status"] == "IN_PROGRESS" and "queue_position" not in a.json()
        assert [b.json()["status"], b.json()["queue_position"]] == ["IN_QUEUE", 0]
        assert [c.json()["status"], c.json()["queue_position"]] == ["IN_QUEUE", 1]
        early = http.get(handles["b"]["response_url"])
        assert early.status_code == 400
        assert early.json() == {"detail": "Request is still in progress"}
        release.set()
        for name in "abc":
            done = wait_for(
                lambda n=name: (r := http.get(handles[n]["status_url"])).status_code == 200 and r
            )
            body = done.json()
            assert body["status"] == "COMPLETED" and "error" not in body
            assert body["metrics"]["inference_time"] >= 0
            result = http.get(handles[name]["response_url"])
            assert result.json() == {"name": name}
            assert result.headers["content-type"] == "application/json"
            assert result.headers["x-fal-request-id"] == handles[name]["request_id"]
    assert started == ["a", "b", "c"]  # first come, first served


def test_fal_client_sees_queued_then_in_progress_then_completed(serve, release):
    started: list[str] = []
    server = serve(serial_app(started, release))
    with use_fal_client(server) as app_id:
        blocker = fal_client.submit(app_id, {"name": "first"})
        wait_for(lambda: isinstance(blocker.status(), fal_client.InProgress))
        updates: list[Any] = []

        def on_update(status: Any) -> None:
            updates.append(status)
            if isinstance(status, fal_client.Queued):
                release.set()  # seen waiting: let the line move

        result = fal_client.subscribe(
            app_id, {"name": "second"}, with_logs=True, on_queue_update=on_update
        )
        assert result == {"name": "second"}
        assert blocker.get() == {"name": "first"}
    kinds = [type(u).__name__ for u in updates]
    assert kinds[0] == "Queued" and updates[0].position == 0
    assert kinds[-1] == "Completed"
    assert kinds == sorted(kinds, key=["Queued", "InProgress", "Completed"].index)


def test_fal_apps_runs_through_the_local_queue(serve, monkeypatch):
    """fal's own client (``fal.apps``) reads a 200 status as done: a queue answering 200
    while a request runs made it fetch too early ("Request is still in progress")."""
    fal_apps = pytest.importorskip("fal.apps")

    class Slow(fal.App):
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            await asyncio.sleep(0.3)
            return {"name": input.name}

    server = serve(Slow)
    monkeypatch.setattr(fal_apps, "_QUEUE_URL_FORMAT", f"{server.url}/.fal/queue/{{app_id}}")
    http = fal_apps._get_http_client()
    try:
        with use_fal_client(server) as app_id:  # sets the placeholder FAL_KEY fal needs
            assert fal_apps.run(app_id, {"name": "x"}) == {"name": "x"}
            handle = fal_apps.submit(app_id, {"name": "y"})
            events = list(handle.iter_events(logs=True))
            assert all(isinstance(e, fal_apps.InProgress | fal_apps.Queued) for e in events)
            assert handle.get() == {"name": "y"}
            assert isinstance(handle.status(logs=True), fal_apps.Completed)
    finally:
        http.close()
        fal_apps._get_http_client.cache_clear()


# -- logs ----------------------------------------------------------------------------------


def test_logs_are_each_requests_own_in_fals_shape(serve, release):
    class Chatty(fal.App):
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            print(f"hello from {input.name}")
            await until(release)
            print(f"oops {input.name}", file=sys.stderr)
            # falkit's own records (a limit hit, a traceback) keep their level
            logging.getLogger("falkit.server").warning("warned %s", input.name)
            return {"name": input.name}

        @fal.endpoint("/sync")
        def run_sync(self, input: Job) -> dict:  # a worker thread: its prints too
            print(f"sync {input.name}")
            return {"name": input.name}

    server = serve(Chatty)
    with use_fal_client(server) as app_id:
        one = fal_client.submit(app_id, {"name": "one"})
        two = fal_client.submit(app_id, {"name": "two"})
        running = wait_for(lambda: (s := one.status(with_logs=True)).logs and s)
        assert isinstance(running, fal_client.InProgress)
        assert [e["message"] for e in running.logs] == ["hello from one"]
        assert one.status().logs is None  # only when asked for
        release.set()
        assert one.get() == {"name": "one"} and two.get() == {"name": "two"}
        logs = one.status(with_logs=True).logs
        others = two.status(with_logs=True).logs
        sync = fal_client.submit(app_id, {"name": "s"}, path="/sync")
        assert sync.get() == {"name": "s"}
        sync_logs = sync.status(with_logs=True).logs
    assert [(e["message"], e["level"]) for e in logs] == [
        ("hello from one", "STDOUT"),
        ("oops one", "STDERR"),
        ("warned one", "WARN"),
    ]
    assert [e["message"] for e in others] == ["hello from two", "oops two", "warned two"]
    entry = logs[0]
    assert set(entry) == {"message", "level", "source", "timestamp"} and entry["source"] == "USER"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
    assert [e["message"] for e in sync_logs] == ["sync s"]


# -- the SSE status stream -----------------------------------------------------------------


def test_status_stream_sends_each_change_until_completed(serve):
    gates = {name: threading.Event() for name in ("first", "second")}

    class Gated(fal.App, max_multiplexing=1):  # type: ignore[call-arg]
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            print(f"working on {input.name}")
            await until(gates[input.name])
            print(f"done with {input.name}")
            return {"name": input.name}

    server = serve(Gated)
    events = []
    try:
        with httpx.Client(timeout=10) as http:
            first = http.post(queue_url(server) + "/", json={"name": "first"}).json()
            wait_for(lambda: http.get(first["status_url"]).json()["status"] == "IN_PROGRESS")
            second = http.post(queue_url(server) + "/", json={"name": "second"}).json()
            url = second["status_url"] + "/stream"
            with httpx_sse.connect_sse(http, "GET", url, params={"logs": 1}) as source:
                assert source.response.headers["content-type"].startswith("text/event-stream")
                for sse in source.iter_sse():
                    events.append(json.loads(sse.data))
                    gates[{"IN_QUEUE": "first"}.get(events[-1]["status"], "second")].set()
            assert http.get(first["response_url"]).json() == {"name": "first"}
    finally:
        for gate in gates.values():
            gate.set()
    states = [e["status"] for e in events]
    assert states[0] == "IN_QUEUE" and events[0]["queue_position"] == 0
    assert "IN_PROGRESS" in states
    assert states[-1] == "COMPLETED" and states.count("COMPLETED") == 1
    assert states == sorted(states, key=["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].index)
    lines = [line["message"] for e in events for line in e.get("logs") or []]
    # each line once: an event brings the lines new since the one before
    assert lines == ["working on second", "done with second"]


def test_status_stream_of_an_unknown_request_is_404(serve):
    server = serve(serial_app([], threading.Event()))
    with httpx.Client(timeout=10) as http:
        answer = http.get(queue_url(server) + "/requests/nope/status/stream")
    assert answer.status_code == 404


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_drops_a_waiting_request(serve, release):
    started: list[str] = []
    server = serve(serial_app(started, release))
    with use_fal_client(server) as app_id:
        first = fal_client.submit(app_id, {"name": "first"})
        wait_for(lambda: started)
        waiting = fal_client.submit(app_id, {"name": "waiting"})
        assert isinstance(waiting.status(), fal_client.Queued)
        waiting.cancel()  # fal's 202 CANCELLATION_REQUESTED: no error
        final = waiting.status()
        assert isinstance(final, fal_client.Completed)
        assert final.error_type == "client_cancelled"
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            waiting.get()
        release.set()
        assert first.get() == {"name": "first"}
    assert info.value.status_code == 499
    assert info.value.response.json()["detail"] == "Request cancelled by the client."
    assert started == ["first"]  # the cancelled one never ran


@pytest.mark.parametrize("options", [{}, {"max_multiplexing": 1}], ids=["free", "one-slot"])
def test_cancel_tells_a_running_request_as_fal_does(serve, options):
    """fal's pattern ("Handle cancellations"): the app's ``<path>/cancel`` route gets the
    same ``x-fal-request-id``, stops its work and the request answers fal's 499."""
    exceptions = pytest.importorskip("fal.exceptions")
    seen: dict[str, Any] = {}

    # with one slot, the cancel call must not wait behind the request it stops
    class Cancellable(fal.App, **options):  # type: ignore[call-arg]
        def setup(self) -> None:
            self.tasks: dict[str, asyncio.Task[Any]] = {}

        @fal.endpoint("/predict")
        async def predict(self, input: Job, x_fal_request_id: str = Header()) -> dict:
            seen["request_id"] = self.current_request.request_id
            task = asyncio.ensure_future(asyncio.sleep(30))
            self.tasks[x_fal_request_id] = task
            try:
                await task
            except asyncio.CancelledError:
                print("stopped cleanly")
                raise exceptions.RequestCancelledException("Request cancelled") from None
            finally:
                self.tasks.pop(x_fal_request_id)
            return {"name": input.name}

        @fal.endpoint("/predict/cancel")
        async def predict_cancel(self, x_fal_request_id: str = Header()) -> dict:
            seen["cancel_for"] = x_fal_request_id
            self.tasks[x_fal_request_id].cancel()
            return {}

    server = serve(Cancellable)
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {"name": "x"}, path="/predict")
        wait_for(lambda: "request_id" in seen)
        handle.cancel()
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            handle.get()
        final = handle.status(with_logs=True)
        with pytest.raises(fal_client.FalClientHTTPError) as again:
            handle.cancel()
    assert seen["request_id"] == seen["cancel_for"] == handle.request_id
    assert info.value.status_code == 499
    assert info.value.response.json() == {"detail": "Request cancelled"}
    assert isinstance(final, fal_client.Completed) and final.error_type == "client_cancelled"
    assert "stopped cleanly" in [e["message"] for e in final.logs]
    assert again.value.status_code == 400
    assert again.value.response.json() == {"status": "ALREADY_COMPLETED"}


def test_cancel_reaches_a_streaming_answer_as_a_disconnect(serve):
    class Ticker(fal.App):
        @fal.endpoint("/ticks")
        async def ticks(self, input: Job) -> StreamingResponse:
            async def events() -> AsyncIterator[str]:
                for i in range(3000):  # 30 s at most
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(0.01)

            return StreamingResponse(events(), media_type="text/event-stream")

    server = serve(Ticker)
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {"name": "t"}, path="/ticks")
        wait_for(lambda: isinstance(handle.status(), fal_client.InProgress))
        handle.cancel()
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            handle.get()
    assert info.value.status_code == 499


def test_a_running_request_that_ignores_cancel_completes_as_on_fal(serve, release):
    started: list[str] = []
    server = serve(serial_app(started, release))
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {"name": "stubborn"})
        wait_for(lambda: started)
        handle.cancel()  # told, not killed: the app has no cancel route and reads no more
        release.set()
        assert handle.get() == {"name": "stubborn"}


def test_cancel_of_an_unknown_request_is_fals_404(serve):
    server = serve(serial_app([], threading.Event()))
    with httpx.Client(timeout=10) as http:
        answer = http.put(queue_url(server) + "/requests/nope/cancel")
        wrong = http.get(queue_url(server) + "/requests/nope/cancel")
    assert answer.status_code == 404 and answer.json()["status"] == "NOT_FOUND"
    assert wrong.status_code == 405


# -- start_timeout ---------------------------------------------------------------------------


def test_start_timeout_fails_a_request_not_started_in_time(serve, release):
    started: list[str] = []
    server = serve(serial_app(started, release))
    with use_fal_client(server) as app_id:
        # start_timeout bounds the wait only: "first" starts at once and runs on past it
        first = fal_client.submit(app_id, {"name": "first"}, start_timeout=1.5)
        wait_for(lambda: started)
        late = fal_client.submit(app_id, {"name": "late"}, start_timeout=1.5)
        final = wait_for(lambda: isinstance(s := late.status(), fal_client.Completed) and s)
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            late.get()
        release.set()
        assert first.get() == {"name": "first"}
    assert final.error_type == "request_timeout"
    assert info.value.status_code == 504
    assert info.value.response.headers["x-fal-request-timeout-type"] == "user"
    assert info.value.response.json()["error_type"] == "request_timeout"
    assert started == ["first"]


def test_a_malformed_start_timeout_is_a_400(serve):
    server = serve(serial_app([], threading.Event()))
    with httpx.Client(timeout=10) as http:
        answer = http.post(
            queue_url(server) + "/", json={"name": "x"}, headers={"X-Fal-Request-Timeout": "soon"}
        )
    assert answer.status_code == 400 and answer.json()["error_type"] == "bad_request"


# -- webhooks --------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server recording the webhooks POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["content-length"])
                receiver.headers.append(dict(self.headers))
                receiver.bodies.append(json.loads(self.rfile.read(size)))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, name="webhook-receiver")

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


def test_webhooks_get_fals_body_on_completion(serve, release):
    release.set()
    server = serve(serial_app([], release))
    with Receiver() as receiver, use_fal_client(server) as app_id:
        ok = fal_client.submit(app_id, {"name": "w"}, webhook_url=receiver.url)
        bad = fal_client.submit(app_id, {"wrong": 1}, webhook_url=receiver.url)
        wait_for(lambda: len(receiver.bodies) == 2)
    by_id = {body["request_id"]: body for body in receiver.bodies}
    assert by_id[ok.request_id] == {
        "request_id": ok.request_id,
        "gateway_request_id": ok.request_id,
        "status": "OK",
        "payload": {"name": "w"},
        "error": None,
    }
    failed = by_id[bad.request_id]
    assert failed["status"] == "ERROR" and failed["error"] == "Invalid status code: 422"
    assert failed["payload"]["detail"][0]["loc"] == ["body", "name"]
    assert {h["X-Fal-Webhook-Request-Id"] for h in receiver.headers} == set(by_id)


def test_a_webhook_off_this_machine_is_refused(serve):
    started: list[str] = []
    server = serve(serial_app(started, threading.Event()))
    refusals = []
    with use_fal_client(server) as app_id:
        for url in ("https://example.com/hook", "http://10.1.2.3/hook", "ftp://127.0.0.1/x"):
            with pytest.raises(fal_client.FalClientHTTPError) as info:
                fal_client.submit(app_id, {"name": "x"}, webhook_url=url)
            refusals.append((info.value.status_code, info.value.message))
    assert [code for code, _ in refusals] == [400, 400, 400]
    assert all("loopback URLs" in message for _, message in refusals[:2])
    assert "http(s)" in refusals[2][1]
    assert started == []  # refused before anything was queued


def test_an_undeliverable_webhook_is_logged(serve, release):
    release.set()
    server = serve(serial_app([], release))
    with Receiver(status=500) as receiver, use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {"name": "w"}, webhook_url=receiver.url)
        assert handle.get() == {"name": "w"}
        wait_for(lambda: "not delivered" in server.logs())
    assert len(receiver.bodies) == 3  # tried, then written to the server's log


# -- the request a handler sees --------------------------------------------------------------


def test_a_queued_handler_sees_the_queues_request_id_and_endpoint(serve):
    class Aware(fal.App):
        @fal.endpoint("/ctx")
        def ctx(self, input: Job) -> dict:
            request = self.current_request
            return {
                "request_id": request.request_id,
                "endpoint": request.endpoint,
                "authorization": request.headers.get("authorization"),
                "timeout": request.headers.get("x-fal-request-timeout"),
                "custom": request.headers.get("x-custom"),
            }

    server = serve(Aware)
    with use_fal_client(server) as app_id:
        headers = {"x-custom": "yes", "x-fal-request-id": "spoofed"}
        handle = fal_client.submit(
            app_id, {"name": "c"}, path="/ctx", headers=headers, start_timeout=30
        )
        seen = handle.get()
    assert seen == {
        "request_id": handle.request_id,
        "endpoint": f"{app_id}/ctx",
        "authorization": None,  # the caller's key stays with the queue, as on fal
        "timeout": None,  # a platform header, processed by the queue
        "custom": "yes",
    }


# -- failures --------------------------------------------------------------------------------


def test_a_failed_request_says_so_and_keeps_the_apps_answer(serve):
    class Failing(fal.App):
        @fal.endpoint("/boom")
        def boom(self, input: Job) -> dict:
            print(f"about to fail {input.name}")
            raise RuntimeError("boom")

    server = serve(Failing)
    with use_fal_client(server) as app_id:
        handle = fal_client.submit(app_id, {"name": "f"}, path="/boom")
        events = list(handle.iter_events(with_logs=True, interval=0.02))
        with pytest.raises(fal_client.FalClientHTTPError) as crashed:
            handle.get()
        invalid = fal_client.submit(app_id, {"wrong": 1}, path="/boom")
        with pytest.raises(fal_client.FalClientHTTPError) as refused:
            invalid.get()
        rejected = invalid.status()
    final = events[-1]
    assert isinstance(final, fal_client.Completed)
    assert (final.error, final.error_type) == ("Internal Server Error", "runner_server_error")
    (printed, traceback) = final.logs
    assert (printed["message"], printed["level"]) == ("about to fail f", "STDOUT")
    assert f"failed (request {handle.request_id})" in traceback["message"]
    assert "RuntimeError: boom" in traceback["message"] and traceback["level"] == "ERROR"
    response = crashed.value.response
    assert response.status_code == 500 and response.json() == {"detail": "Internal Server Error"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-fal-request-id"] == handle.request_id
    assert refused.value.status_code == 422
    assert refused.value.response.json()["detail"][0]["loc"] == ["body", "name"]
    assert (rejected.error, rejected.error_type) == ("Invalid status code: 422", None)


# -- the async client ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_fal_client_drives_the_queue(serve):
    class Echo(fal.App):
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            print(f"echo {input.name}")
            await asyncio.sleep(0.1)
            return {"name": input.name}

    server = serve(Echo)
    with use_fal_client(server) as app_id:
        handle = await fal_client.submit_async(app_id, {"name": "a"})
        events = [e async for e in handle.iter_events(with_logs=True, interval=0.02)]
        assert await handle.get() == {"name": "a"}
        status = await fal_client.status_async(app_id, handle.request_id, with_logs=True)
        assert await fal_client.result_async(app_id, handle.request_id) == {"name": "a"}
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            await fal_client.cancel_async(app_id, handle.request_id)
        # fal_client's default async client is never closed by fal_client itself: closed
        # here, on this test's loop, rather than after the loop is gone.
        await (await fal_client.async_client._client).aclose()
    assert isinstance(events[-1], fal_client.Completed)
    assert isinstance(status, fal_client.Completed)
    assert [e["message"] for e in status.logs] == ["echo a"]
    assert info.value.status_code == 400  # ALREADY_COMPLETED


# -- stopping --------------------------------------------------------------------------------


def test_stopping_the_server_ends_the_queued_requests_still_running(serve):
    ended: list[str] = []
    never = threading.Event()

    class Long(fal.App):
        @fal.endpoint("/")
        async def run(self, input: Job) -> dict:
            try:
                await until(never, limit=30)
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise
            return {}

    server = serve(Long)
    with httpx.Client(timeout=10) as http:
        submitted = http.post(queue_url(server) + "/", json={"name": "x"}).json()
        wait_for(lambda: http.get(submitted["status_url"]).json()["status"] == "IN_PROGRESS")
    server.stop()
    assert ended == ["cancelled"]  # before teardown, not left to the closed loop
