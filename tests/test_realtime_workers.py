"""Sync realtime handlers run in the server's realtime worker threads: each session's
calls in order, blocking handlers of several sessions at once, the event loop free
meanwhile, and the threads gone when the last session using them ends (client leaving,
server stopping, hot swap). Real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
from _support import poller, threads_named
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import falkit as fal
from falkit.asgi.workers import MAX_WORKERS


class In(BaseModel):
    i: int


def ws_url(server, path: str) -> str:
    return server.url.replace("http", "ws", 1) + path


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


worker_threads = functools.partial(threads_named, "falkit-realtime-")
wait_until = poller(5.0, interval=0.01)


def me() -> dict:
    thread = threading.current_thread()
    return {"thread": thread.name, "ident": thread.ident}


class Threads(fal.App):
    gate = threading.Event()
    entered = threading.Event()
    barrier = threading.Barrier(1)
    calls: list[list[int]] = []

    @fal.endpoint("/open")
    def open_gate(self) -> dict:
        Threads.gate.set()
        return {"ok": True}

    @fal.realtime("/who")
    def who(self, input: In) -> dict:
        return {"i": input.i, **me()}

    @fal.realtime("/steps")
    def steps(self, input: In) -> Iterator[dict]:
        yield {"k": -1, **me()}  # the call that makes the generator
        for k in range(input.i):
            yield {"k": k, **me()}

    @fal.realtime("/together")
    def together(self, input: In) -> dict:
        # Passes only once every session's handler is running at the same time.
        Threads.barrier.wait(10)
        return {"i": input.i, **me()}

    @fal.realtime("/gated")
    def gated(self, input: In) -> dict:
        Threads.entered.set()
        Threads.gate.wait(10)
        return {"i": input.i}

    @fal.realtime("/batched", buffering=3, max_batch_size=2)
    def batched(self, input: In, *more: In) -> dict:
        Threads.entered.set()
        Threads.gate.wait(10)
        batch = [input, *more]
        Threads.calls.append([x.i for x in batch])
        return {"i": batch[-1].i, "n": len(batch)}

    @fal.realtime("/talks")
    def talks(self, input: In) -> dict:
        print(f"handler saw {input.i}")
        return {"i": input.i}

    @fal.realtime("/stops")
    def stops(self, input: In) -> dict:
        raise StopIteration("no more")


@pytest.fixture
def server(serve):
    Threads.gate.clear()
    Threads.entered.clear()
    Threads.calls = []
    server = serve(Threads)
    yield server
    Threads.gate.set()


def test_each_sessions_calls_run_in_order_in_the_worker_threads(server) -> None:
    with connect(ws_url(server, "/who")) as a, connect(ws_url(server, "/who")) as b:
        for i in range(50):  # sent ahead of the answers: they queue, in order
            a.send(pack({"i": i}))
            b.send(pack({"i": 100 + i}))
        outs_a = [msgpack.unpackb(a.recv(10)) for _ in range(50)]
        outs_b = [msgpack.unpackb(b.recv(10)) for _ in range(50)]
    assert [o["i"] for o in outs_a] == list(range(50))
    assert [o["i"] for o in outs_b] == list(range(100, 150))
    threads = {o["thread"] for o in outs_a + outs_b}
    assert all(name.startswith("falkit-realtime-") for name in threads)
    assert len(threads) <= MAX_WORKERS


def test_sync_streaming_steps_run_in_the_worker_threads(server) -> None:
    with server.client as client, client.realtime("/steps") as rt:
        rt.send({"i": 5})
        outputs = list(rt)
    assert [o["k"] for o in outputs] == [-1, 0, 1, 2, 3, 4]
    assert all(o["thread"].startswith("falkit-realtime-") for o in outputs)


def test_blocking_handlers_of_several_sessions_run_at_once(server) -> None:
    # Each handler waits until all of them are running at the same time.
    sessions = min(5, MAX_WORKERS)
    Threads.barrier = threading.Barrier(sessions)
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connect(ws_url(server, "/together"))) for _ in range(sessions)]
        for i, ws in enumerate(conns):
            ws.send(pack({"i": i}))
        outputs = [msgpack.unpackb(ws.recv(15)) for ws in conns]
    assert [o["i"] for o in outputs] == list(range(sessions))
    assert len({o["ident"] for o in outputs}) == sessions


def test_the_loop_serves_others_while_a_sync_handler_blocks(server) -> None:
    with connect(ws_url(server, "/gated")) as blocked, connect(ws_url(server, "/who")) as other:
        blocked.send(pack({"i": 1}))
        assert Threads.entered.wait(5)
        other.send(pack({"i": 2}))
        assert msgpack.unpackb(other.recv(5))["i"] == 2  # another session is answered
        with server.client as client:
            assert client.call("/open") == {"ok": True}  # and HTTP
        assert msgpack.unpackb(blocked.recv(5)) == {"i": 1}


def test_buffering_and_batching_keep_their_rules_on_the_worker(server) -> None:
    with connect(ws_url(server, "/batched")) as ws:
        ws.send(pack({"i": 0}))
        assert Threads.entered.wait(5)
        for i in range(1, 7):
            ws.send(pack({"i": i}))
        time.sleep(0.3)  # the handler holds 0; the reader queues 1..6, keeping the newest 3
        Threads.gate.set()
        outputs = [msgpack.unpackb(ws.recv(5)) for _ in range(3)]
    assert outputs == [{"i": 0, "n": 1}, {"i": 5, "n": 2}, {"i": 6, "n": 1}]
    assert Threads.calls == [[0], [4, 5], [6]]


def test_the_last_session_closing_ends_the_worker_threads(server) -> None:
    with server.client as client, client.realtime("/who") as first:
        first.send({"i": 1})
        assert first.recv(5)["i"] == 1
        with client.realtime("/who") as second:
            second.send({"i": 2})
            assert second.recv(5)["i"] == 2
        first.send({"i": 3})  # the other session closing left the threads to this one
        assert first.recv(5)["i"] == 3
        assert worker_threads()
    assert wait_until(lambda: not worker_threads())


def test_client_leaving_mid_call_ends_the_worker_after_the_handler(server) -> None:
    with connect(ws_url(server, "/gated")) as ws:
        ws.send(pack({"i": 1}))
        assert Threads.entered.wait(5)
    # The handler is still running: its thread outlives the connection until it returns.
    assert worker_threads()
    Threads.gate.set()
    assert wait_until(lambda: not worker_threads())
    with server.client as client, client.realtime("/who") as rt:
        rt.send({"i": 2})
        assert rt.recv(5)["i"] == 2
    assert "Traceback" not in server.logs()


def test_stopping_the_server_ends_open_sessions_workers(serve) -> None:
    server = serve(Threads)
    with connect(ws_url(server, "/who")) as ws:
        ws.send(pack({"i": 1}))
        assert msgpack.unpackb(ws.recv(5))["i"] == 1
        server.stop()  # with the session still open
        assert not worker_threads()
        with pytest.raises(ConnectionClosed):
            ws.recv(5)


def test_hot_swap_sessions_old_and_new_share_the_threads_then_free_them(serve) -> None:
    class Swap(fal.App):
        @fal.realtime("/rt")
        def rt(self, data: dict) -> dict:
            return {"version": 1, **me()}

    server = serve(Swap)
    with server.client as client, client.realtime("/rt") as old:
        old.send({})
        assert old.recv(5)["version"] == 1

        class Swap(fal.App):  # the same cell, edited and re-run
            @fal.realtime("/rt")
            def rt(self, data: dict) -> dict:
                return {"version": 2, **me()}

        fal.serve(Swap)
        old.send({})
        assert old.recv(5)["version"] == 1  # the open session keeps its handler
        with client.realtime("/rt") as new:
            new.send({})
            second = new.recv(5)
        assert second["version"] == 2 and second["thread"].startswith("falkit-realtime-")
    assert wait_until(lambda: not worker_threads())


def test_prints_of_a_sync_handler_reach_the_server_log(server) -> None:
    with server.client as client, client.realtime("/talks") as rt:
        rt.send({"i": 41})
        assert rt.recv(5) == {"i": 41}
    assert wait_until(lambda: "handler saw 41" in server.logs())


def test_stop_iteration_from_a_sync_handler_is_an_error_frame(server) -> None:
    with server.client as client, client.realtime("/stops") as rt:
        rt.send({"i": 1})
        with pytest.raises(fal.RealtimeError, match="StopIteration"):
            rt.recv(5)


def test_a_session_cancelled_while_its_workers_stop_leaves_no_loop_error() -> None:
    # A session's task cancelled while ``leave`` waits for the threads (starlette's
    # TestClient closing its portal does that) once cancelled the future the threads'
    # exit settles: "InvalidStateError" from the loop, in the cell's stderr.
    from falkit.asgi.workers import Workers

    release = threading.Event()
    errors: list[dict] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        workers = Workers.enter()
        call = workers.run(release.wait, 5)
        leaving = asyncio.ensure_future(workers.leave())
        await asyncio.sleep(0.05)  # leave() now waits for the busy thread
        leaving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leaving
        release.set()
        assert await call is True
        for _ in range(200):  # the thread's exit reaches the loop
            if not workers.alive:
                break
            await asyncio.sleep(0.01)
        assert workers.alive == 0

    asyncio.run(main())
    assert errors == []
    assert wait_until(lambda: not worker_threads())


def test_in_process_testclient_sessions_leave_no_loop_error(caplog) -> None:
    # Notebook 06's in-process tests, repeated: no loop error, no thread left.
    from fastapi.testclient import TestClient

    from falkit.asgi import build_asgi

    class Echo(fal.App):
        @fal.realtime("/rt")
        def rt(self, data: In) -> In:
            return data

    caplog.set_level(logging.ERROR, logger="asyncio")
    for i in range(10):
        with TestClient(build_asgi(Echo())) as client, client.websocket_connect("/rt") as ws:
            ws.send_bytes(pack({"i": i}))
            assert msgpack.unpackb(ws.receive_bytes()) == {"i": i}
    assert wait_until(lambda: not worker_threads())
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
