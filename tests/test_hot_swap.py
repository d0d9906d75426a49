"""Hot swap: re-serving an edited App keeps the port, the URL and (unless setup changed)
the loaded state; nothing in flight is dropped. Real clients over loopback throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import nbformat
import pytest
from _support import call, get
from fastapi import WebSocket
from nbclient import NotebookClient

import falkit as fal
from falkit.exceptions import RemoteError, SetupError

SETUPS: list[str] = []
TEARDOWNS: list[str] = []


@contextmanager
def hammering(server, *, clients: int, timeout: float) -> Iterator[list[object]]:
    """``clients`` threads POST ``/`` over and over while the block runs (from 0.2 s before it
    to 0.2 s after); then the list holds every answer: its ``version``, or the response
    itself when it was not a 200."""
    stop, started = threading.Event(), threading.Event()
    seen: list[object] = []

    def hammer() -> list[object]:
        answers: list[object] = []
        with httpx.Client(base_url=server.url, timeout=timeout) as http:
            while not stop.is_set():
                response = http.post("/", json={})
                ok = response.status_code == 200
                answers.append(response.json()["version"] if ok else response)
                started.set()
        return answers

    with ThreadPoolExecutor(clients) as pool:
        results = [pool.submit(hammer) for _ in range(clients)]
        try:
            assert started.wait(10)
            time.sleep(0.2)
            yield seen
            time.sleep(0.2)
        finally:
            stop.set()
        seen.extend(v for f in results for v in f.result(timeout + 10))


@pytest.fixture(autouse=True)
def _reset_counters() -> None:
    SETUPS.clear()
    TEARDOWNS.clear()


def test_swap_keeps_setup_state_port_and_url(serve):
    class Swap(fal.App):
        def setup(self):
            SETUPS.append("v1")
            self.model = {"weights": 42}

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": 1, "weights": self.model["weights"]}

    server = serve(Swap)
    url, port = server.url, server.port
    assert call(server, "/") == {"version": 1, "weights": 42}

    class Swap(fal.App):  # the same cell, edited and re-run
        def setup(self):
            SETUPS.append("v1")
            self.model = {"weights": 42}

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": 2, "weights": self.model["weights"]}

    swapped = fal.serve(Swap)
    assert swapped is server and swapped.url == url and swapped.port == port
    assert server.last_action.startswith("swapped in ")
    assert server.last_action.endswith(" ms (setup kept)")
    assert SETUPS == ["v1"] and TEARDOWNS == []
    assert call(server, "/") == {"version": 2, "weights": 42}


def _counter_app(version: int, setup_tag: str = "v1"):
    # The same source each call: identical setup code objects, as when a cell is re-run.
    class Counter(fal.App):
        def setup(self):
            SETUPS.append(setup_tag)
            self.count = 0

        def teardown(self):
            TEARDOWNS.append(setup_tag)

        @fal.endpoint("/")
        def run(self) -> dict:
            self.count += 1
            return {"version": version, "count": self.count}

    return Counter


def test_state_mutated_by_requests_carries_over(serve):
    server = serve(_counter_app(1))
    assert call(server, "/") == {"version": 1, "count": 1}
    fal.serve(_counter_app(2))
    assert call(server, "/") == {"version": 2, "count": 2}
    assert SETUPS == ["v1"]


def test_changed_setup_reruns_setup_with_teardown_of_the_old(serve):
    class Model(fal.App):
        def setup(self):
            SETUPS.append("a")
            self.value = "a"

        def teardown(self):
            TEARDOWNS.append(self.value)

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"value": self.value}

    server = serve(Model)
    port = server.port

    class Model(fal.App):
        def setup(self):
            SETUPS.append("b")
            self.value = "b"  # setup edited

        def teardown(self):
            TEARDOWNS.append(self.value)

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"value": self.value}

    assert fal.serve(Model) is server and server.port == port
    assert server.last_action == "restarted: setup changed"
    assert SETUPS == ["a", "b"] and TEARDOWNS == ["a"]
    assert call(server, "/") == {"value": "b"}


def test_changed_options_and_fresh_rerun_setup(serve):
    server = serve(_counter_app(1))
    call(server, "/")
    fal.serve(_counter_app(1), fresh=True)
    assert server.last_action == "restarted: fresh requested"
    assert call(server, "/") == {"version": 1, "count": 1}  # a new instance

    app = _counter_app(1)
    app.keep_alive = 600
    fal.serve(app)
    assert server.last_action == "restarted: options changed (keep_alive)"
    assert SETUPS == ["v1", "v1", "v1"] and TEARDOWNS == ["v1", "v1"]


def test_changed_teardown_is_a_restart(serve):
    server = serve(_counter_app(1))

    class Counter(fal.App):
        def setup(self):
            SETUPS.append("v1")

        def teardown(self):
            TEARDOWNS.append("other")

    fal.serve(Counter)
    assert server.last_action.startswith("restarted: ")


def test_requests_in_flight_finish_on_old_handlers(serve):
    release = threading.Event()

    class Slow(fal.App):
        @fal.endpoint("/")
        def run(self) -> dict:
            release.wait(10)
            return {"version": 1}

    server = serve(Slow)
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(call, server, "/") for _ in range(3)]
        _wait_for(lambda: server.generations.current.active == 3)

        class Slow(fal.App):
            @fal.endpoint("/")
            def run(self) -> dict:
                return {"version": 2}

        fal.serve(Slow)
        assert call(server, "/") == {"version": 2}
        release.set()
        assert [f.result(10) for f in in_flight] == [{"version": 1}] * 3


def test_open_websocket_and_realtime_sessions_keep_old_handlers(serve):
    class Echo(fal.App):
        @fal.endpoint("/ws", is_websocket=True)
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            async for text in websocket.iter_text():
                await websocket.send_text(f"v1:{text}")

        @fal.realtime("/rt")
        def rt(self, data: dict) -> dict:
            return {"version": 1, **data}

    server = serve(Echo)
    with server.client as client, client.websocket("/ws") as ws, client.realtime("/rt") as rt:
        ws.send("a")
        assert ws.recv(5) == "v1:a"
        rt.send({"n": 1})
        assert rt.recv(5) == {"version": 1, "n": 1}

        class Echo(fal.App):
            @fal.endpoint("/ws", is_websocket=True)
            async def ws(self, websocket: WebSocket) -> None:
                await websocket.accept()
                async for text in websocket.iter_text():
                    await websocket.send_text(f"v2:{text}")

            @fal.realtime("/rt")
            def rt(self, data: dict) -> dict:
                return {"version": 2, **data}

        fal.serve(Echo)
        ws.send("b")
        assert ws.recv(5) == "v1:b"  # the open session is not cut off, nor switched
        rt.send({"n": 2})
        assert rt.recv(5) == {"version": 1, "n": 2}
        with client.websocket("/ws") as ws2, client.realtime("/rt") as rt2:
            ws2.send("c")
            assert ws2.recv(5) == "v2:c"
            rt2.send({"n": 3})
            assert rt2.recv(5) == {"version": 2, "n": 3}


def test_routes_added_and_removed_and_openapi_follows(serve):
    class Routes(fal.App):
        @fal.endpoint("/old")
        def old(self) -> dict:
            return {"route": "old"}

    server = serve(Routes)
    assert "/old" in get(server, "/openapi.json")["paths"]

    class Routes(fal.App):
        @fal.endpoint("/new")
        def new(self) -> dict:
            return {"route": "new"}

    fal.serve(Routes)
    assert [r.path for r in server.routes] == ["/new"]
    paths = get(server, "/openapi.json")["paths"]
    assert "/new" in paths and "/old" not in paths
    assert call(server, "/new") == {"route": "new"}
    with pytest.raises(RemoteError) as err:
        call(server, "/old")
    assert err.value.status == 404


def test_failed_setup_on_reserve_keeps_the_old_server(serve):
    server = serve(_counter_app(1))
    call(server, "/")

    class Counter(fal.App):
        def setup(self):
            raise RuntimeError("weights not found")

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": "broken"}

    with pytest.raises(SetupError, match="weights not found") as err:
        fal.serve(Counter)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert server.running and fal.get_server("counter") is server
    assert call(server, "/") == {"version": 1, "count": 2}  # untouched, still serving
    assert TEARDOWNS == []


def test_restart_has_no_downtime_under_concurrent_load(serve):
    class Busy(fal.App):
        def setup(self):
            time.sleep(0.1)
            self.version = 1

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": self.version}

    server = serve(Busy)
    with hammering(server, clients=4, timeout=10) as seen:

        class Busy(fal.App):
            def setup(self):
                time.sleep(0.5)  # changed: a restart, with the old one serving meanwhile
                self.version = 2

            @fal.endpoint("/")
            def run(self) -> dict:
                return {"version": self.version}

        fal.serve(Busy)
        for _ in range(3):  # and a few setup-kept swaps on top
            fal.serve(Busy)
    assert set(seen) == {1, 2}, [v for v in seen if v not in (1, 2)][:3]
    assert server.last_action.startswith("swapped in ")


def test_teardown_of_the_old_waits_for_its_requests(serve):
    release = threading.Event()

    class Wait(fal.App):
        def setup(self):
            self.tag = "old"

        def teardown(self):
            TEARDOWNS.append(self.tag)

        @fal.endpoint("/")
        def run(self) -> dict:
            release.wait(10)
            return {"tag": self.tag}

    server = serve(Wait)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, server, "/")
        _wait_for(lambda: server.generations.current.active == 1)
        fal.serve(Wait, fresh=True)
        assert "retires when its 1 open connections end" in server.last_action
        assert TEARDOWNS == []
        release.set()
        assert pending.result(10) == {"tag": "old"}
    _wait_for(lambda: TEARDOWNS == ["old"])


def test_teardown_of_the_old_waits_for_its_queued_requests(serve):
    # A request submitted through fal's queue runs after its submit has been answered:
    # the old instance must stay up until it finishes, as for a direct request.
    started, release = threading.Event(), threading.Event()

    class Queued(fal.App):
        def setup(self):
            self.tag = "old"

        def teardown(self):
            TEARDOWNS.append(self.tag)
            self.tag = "torn down"

        @fal.endpoint("/")
        def run(self) -> dict:
            started.set()
            release.wait(10)
            return {"tag": self.tag}

    server = serve(Queued)
    queue = f"{server.url}/.fal/queue/local/{server.app_name}"
    with httpx.Client(timeout=10) as http:
        submitted = http.post(queue + "/", json={}).json()
        assert started.wait(10)
        fal.serve(Queued, fresh=True)
        assert TEARDOWNS == []
        release.set()
        _wait_for(lambda: http.get(submitted["status_url"]).status_code == 200)
        assert http.get(submitted["response_url"]).json() == {"tag": "old"}
    _wait_for(lambda: TEARDOWNS == ["old"])


def test_startup_timeout_on_first_serve_is_reported(serve):
    class Stuck(fal.App):
        startup_timeout = 0.3

        def setup(self):
            time.sleep(1.0)

    with pytest.raises(SetupError, match="startup_timeout") as err:
        serve(Stuck)
    assert "did not start within the allowed time" in str(err.value)
    assert fal.servers() == {}


def test_startup_timeout_on_restart_keeps_the_old_one(serve):
    server = serve(_counter_app(1))

    class Counter(fal.App):
        startup_timeout = 0.3

        def setup(self):
            time.sleep(1.0)

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": "slow"}

    with pytest.raises(SetupError, match="startup_timeout"):
        fal.serve(Counter)
    assert call(server, "/") == {"version": 1, "count": 1}


def test_bad_option_is_a_clear_error_and_the_server_keeps_serving(serve):
    server = serve(_counter_app(1))
    bad = _counter_app(1)
    bad.max_multiplexing = 0
    with pytest.raises(fal.AppDefinitionError, match="max_multiplexing must be a positive"):
        fal.serve(bad)
    assert call(server, "/") == {"version": 1, "count": 1}


# The cell a user runs twice, editing only the handler: the version it answers.
WEIGHTS_CELL = """class Weights(fal.App):
    def setup(self):
        print('loading weights')
        for _ in tqdm(range(4), desc='shards'):
            time.sleep(0.65)  # past _startup.SHOW_AFTER_S: progress shows
        self.weights = 7

    @fal.endpoint('/')
    def run(self) -> dict:
        return {'v': %d, 'w': self.weights}"""

KERNEL_CELLS = [
    "import falkit as fal\nimport time\nfrom tqdm.auto import tqdm",
    WEIGHTS_CELL % 1,
    "%fal serve Weights",
    WEIGHTS_CELL % 2,
    "%fal serve Weights",
    "fal.get_server('Weights').client.call('/')",
    "%fal stop --all",
]


def test_kernel_shows_setup_progress_then_swaps_on_reserve():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in KERNEL_CELLS])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    first = _outputs_text(nb.cells[2])
    assert "loading weights" in first  # setup's print, in the cell that started it
    assert "Weights: setup running" in first or "Weights: ready after" in first
    widgets = [
        o
        for o in nb.cells[2].outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "tqdm.auto's bar did not reach the cell"
    assert "status: started in" in first
    second = _outputs_text(nb.cells[4])
    assert "(setup kept)" in second and "loading weights" not in second
    assert "{'v': 2, 'w': 7}" in _outputs_text(nb.cells[5])


def _outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _big_app(version: int, memory: dict[str, int]):
    class Big(fal.App):
        def setup(self):
            if memory["free"] < 1:
                raise MemoryError("out of memory (simulated: room for one model)")
            memory["free"] -= 1
            time.sleep(0.2 + 0.0 * version)  # the version is in the code: setup changed

        def teardown(self):
            memory["free"] += 1
            TEARDOWNS.append("big")

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": version}

    return Big


def test_model_that_fits_once_restarts_teardown_first_and_holds_requests(serve):
    memory = {"free": 1}
    server = serve(_big_app(1, memory))
    assert call(server) == {"version": 1}
    with hammering(server, clients=3, timeout=20) as seen:
        fal.serve(_big_app(2, memory), fresh=True)
    assert set(seen) == {1, 2}, server.logs(30)  # none failed
    assert "old instance torn down first (not enough memory for both)" in server.last_action
    assert TEARDOWNS == ["big"] and memory == {"free": 0}


def test_model_that_fits_once_and_then_fails_stops_the_server(serve):
    memory = {"free": 1}
    server = serve(_big_app(1, memory))

    class Big(fal.App):
        def setup(self):
            raise MemoryError("never fits")

    with pytest.raises(SetupError, match="old instance was torn down to make room"):
        fal.serve(Big)
    assert not server.running and fal.servers() == {}
    assert memory == {"free": 1}  # the old one was torn down and freed
