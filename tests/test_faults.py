"""Faults, over real sockets and a real kernel: a clear error where the user looks, the
server still serving, and nothing leaked (threads, sockets, event-loop tasks)."""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.responses import StreamingResponse
from jupyter_client.manager import start_new_kernel
from pydantic import BaseModel

import falkit
import falkit as fal
from falkit import PortInUseError, RemoteError, SetupError


class Input(BaseModel):
    prompt: str = "p"
    seconds: float = 0.0


class Faulty(fal.App):
    @fal.endpoint("/")
    def ok(self, input: Input) -> dict:
        return {"output": input.prompt}

    @fal.endpoint("/sync-boom")
    def sync_boom(self, input: Input) -> dict:
        raise ValueError("sync handler exploded")

    @fal.endpoint("/async-boom")
    async def async_boom(self, input: Input) -> dict:
        raise KeyError("async handler exploded")

    @fal.endpoint("/slow")
    def slow(self, input: Input) -> dict:
        time.sleep(input.seconds)
        return {"slept": input.seconds}

    @fal.endpoint("/stream")
    async def stream(self, input: Input) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(50):
                if input.prompt == "boom" and i == 3:
                    raise RuntimeError("generator exploded mid-stream")
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(events(), media_type="text/event-stream")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loop_tasks(server: falkit.Server) -> int:
    """The tasks alive on the server's event loop (read through the loop, as uvicorn's own
    tasks and any handler left behind would be)."""

    async def count() -> int:
        return len(asyncio.all_tasks())

    assert server._loop is not None
    return asyncio.run_coroutine_threadsafe(count(), server._loop).result(5)


def settle(server: falkit.Server, baseline: int) -> int:
    deadline = time.monotonic() + 5
    while (now := loop_tasks(server)) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def alive(server: falkit.Server) -> None:
    with server.client as client:  # closed: its keep-alive socket is not counted as leaked
        assert client.call("/", {"prompt": "still"}) == {"output": "still"}


def fds_settle(limit: int) -> int:
    """Open fds, once the server has seen the clients' FINs (it closes its side then)."""
    deadline = time.monotonic() + 5
    while (now := fds()) > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


# -- lifecycle hooks ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_setup_exception_is_the_cells_error_and_leaves_nothing_behind(kind):
    if kind == "sync":

        class BadSetup(fal.App):
            def setup(self):
                raise OSError("weights.bin not found")
    else:

        class BadSetup(fal.App):  # type: ignore[no-redef]
            async def setup(self):
                raise OSError("weights.bin not found")

    with pytest.raises(SetupError):  # warm-up: a pipe made once per process, not per serve
        falkit.serve(BadSetup)
    threads, files = threading.active_count(), fds()
    for _ in range(3):
        with pytest.raises(SetupError, match=r"BadSetup.setup\(\) failed: .*weights.bin"):
            falkit.serve(BadSetup)
    assert falkit.servers() == {}
    assert threading.active_count() <= threads and fds() <= files


def test_teardown_exception_is_logged_and_stop_still_completes(serve):
    class BadTeardown(fal.App):
        def teardown(self):
            raise RuntimeError("could not free the GPU")

        @fal.endpoint("/")
        def ok(self) -> dict:
            return {}

    server = serve(BadTeardown)
    server.stop()
    assert not server.running
    assert "BadTeardown.teardown() failed" in server.logs()
    assert "could not free the GPU" in server.logs()
    again = serve(BadTeardown)  # and the port/name are free for the next cell
    assert again.client.call("/") == {}


# -- handlers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [("/sync-boom", "sync handler exploded"), ("/async-boom", "async handler exploded")],
)
def test_handler_exception_is_a_500_with_the_traceback_in_the_logs(serve, path, message):
    server = serve(Faulty)
    baseline = loop_tasks(server)
    for _ in range(3):
        with pytest.raises(RemoteError) as info:
            server.client.call(path, {})
        assert (info.value.status, info.value.detail) == (500, "Internal Server Error")
    assert message in server.logs() and "Traceback" in server.logs()
    alive(server)
    assert settle(server, baseline) == baseline


def test_streaming_generator_failing_mid_stream(serve):
    server = serve(Faulty)
    baseline = loop_tasks(server)
    got = []
    with pytest.raises(fal.ConnectionLost) as info:  # the stream is cut, not completed
        for event in server.client.stream("/stream", {"prompt": "boom"}):
            got.append(event)
    assert got == [0, 1, 2]
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert "generator exploded mid-stream" in server.logs()
    assert list(server.client.stream("/stream", {"prompt": "x"}))[:3] == [0, 1, 2]
    alive(server)
    assert settle(server, baseline) == baseline


# -- clients that go away ------------------------------------------------------------------


def _raw_post(port: int, path: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def test_client_disconnecting_mid_request(serve):
    server = serve(Faulty)
    baseline, files = loop_tasks(server), fds()
    for _ in range(5):
        sock = _raw_post(server.port, "/slow", b'{"seconds": 0.3}')
        time.sleep(0.05)
        sock.close()
    # half a body, then gone
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b'POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"pro')
    sock.close()
    alive(server)
    time.sleep(0.5)  # the abandoned sync handlers finish their sleep
    assert settle(server, baseline) == baseline
    assert fds_settle(files) <= files


def test_client_disconnecting_mid_stream(serve):
    server = serve(Faulty)
    baseline, files = loop_tasks(server), fds()
    for _ in range(5):
        sock = _raw_post(server.port, "/stream", b'{"prompt": "x"}')
        assert b"data: 0" in sock.recv(4096) + sock.recv(4096)
        sock.close()
    alive(server)
    assert settle(server, baseline) == baseline  # the generators were stopped
    assert fds_settle(files) <= files


# -- ports, timeouts ------------------------------------------------------------------------


def test_taken_port_is_port_in_use_error_and_the_holder_keeps_serving(serve):
    holder = serve(Faulty)

    class Other(Faulty):
        pass

    with pytest.raises(PortInUseError, match=f"port {holder.port}"):
        falkit.serve(Other, port=holder.port)
    alive(holder)
    with socket.socket() as blocker:  # a port taken by another program
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        with pytest.raises(PortInUseError):
            falkit.serve(Other, port=blocker.getsockname()[1])
    assert set(falkit.servers()) == {holder.app_name}


def test_request_timeout_frees_a_hanging_handler(serve):
    release = threading.Event()

    class Hangs(fal.App, request_timeout=0.5):
        @fal.endpoint("/hang")
        async def hang(self) -> dict:
            await asyncio.sleep(3600)
            return {}

        @fal.endpoint("/hang-sync")
        def hang_sync(self) -> dict:
            release.wait(10)
            return {}

        @fal.endpoint("/")
        def ok(self) -> dict:
            return {"ok": True}

    server = serve(Hangs)
    baseline = loop_tasks(server)
    for path in ("/hang", "/hang-sync"):
        with pytest.raises(RemoteError) as info:
            server.client.call(path)
        assert info.value.status == 504 and info.value.detail == "Request timed out"
        assert server.client.call("/") == {"ok": True}
    assert "request_timeout=0.5s exceeded" in server.logs()
    release.set()  # a sync handler's thread cannot be killed; it ends when it returns
    assert settle(server, baseline) == baseline  # the async handler was cancelled


# -- leaks over many cycles ---------------------------------------------------------------


@pytest.mark.timeout(600)  # ~1 s a cycle on a loaded 2-core machine
def test_fifty_serve_swap_stop_cycles_leak_no_thread_or_fd():
    def cycle(i: int) -> None:
        server = falkit.serve(Faulty)
        assert server.client.call("/", {"prompt": str(i)}) == {"output": str(i)}
        swapped = falkit.serve(Faulty)  # unchanged class: swapped in place
        assert swapped is server
        with server.client as client:
            assert client.call("/", {"prompt": "again"}) == {"output": "again"}
        server.stop()

    cycle(-1)  # warm-up: imports, the default executor, logging handlers
    threads, files = threading.active_count(), fds()
    for i in range(50):
        cycle(i)
    time.sleep(0.2)
    leaked_threads = threading.active_count() - threads
    leaked_fds = fds() - files
    assert leaked_threads <= 0, [t.name for t in threading.enumerate()]
    assert leaked_fds <= 0, sorted(os.listdir("/proc/self/fd"))


# -- the kernel's interrupt button ----------------------------------------------------------

KERNEL_SETUP = textwrap.dedent(
    """
    import time
    import falkit as fal

    class Sleepy(fal.App):
        @fal.endpoint("/slow")
        def slow(self) -> dict:
            time.sleep(3)
            return {"slept": True}

        @fal.endpoint("/")
        def ok(self) -> dict:
            return {"ok": True}

    server = fal.serve(Sleepy)
    """
)


def _execute(client, code: str, timeout: float = 30) -> dict:
    """Run ``code`` in the kernel; the ``execute_reply`` content (status, ename)."""
    msg_id = client.execute(code)
    while True:
        reply = client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def test_interrupt_button_during_a_blocking_call_in_a_cell():
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        assert _execute(client, KERNEL_SETUP)["status"] == "ok"
        msg_id = client.execute("server.client.call('/slow')")
        time.sleep(1.0)  # the cell is blocked in the HTTP call
        manager.interrupt_kernel()
        while True:
            reply = client.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        after = _execute(client, "assert server.client.call('/') == {'ok': True}")
        assert after["status"] == "ok", after
        stopped = _execute(client, "server.stop(); assert not fal.servers()")
        assert stopped["status"] == "ok", stopped
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
