"""The in-thread server: lifecycle, registry, errors, logs, over real loopback sockets."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading

import httpx
import pytest
from pydantic import BaseModel

import falkit
import falkit as fal
from falkit import AppDefinitionError, PortInUseError, ServerNotRunning, SetupError


class Input(BaseModel):
    prompt: str


class Greeter(fal.App):
    def setup(self):
        print("loading weights")
        self.model = "greeter-v1"

    @fal.endpoint("/")
    def greet(self, input: Input) -> dict:
        print(f"handling {input.prompt}")
        return {"model": self.model, "greeting": f"hello {input.prompt}"}


def test_serve_returns_a_running_server_with_its_surface(serve):
    server = serve(Greeter)
    assert server.running
    assert server.app_name == "greeter"
    assert server.url.startswith("http://127.0.0.1:")
    assert [(r.kind, r.path) for r in server.routes] == [("http", "/")]
    assert server.client.call("/", {"prompt": "ann"}) == {
        "model": "greeter-v1",
        "greeting": "hello ann",
    }
    assert falkit.servers() == {"greeter": server}
    assert falkit.get_server("Greeter") is server
    server.stop()
    assert not server.running
    assert falkit.servers() == {}
    with pytest.raises(httpx.ConnectError):
        httpx.post(server.url + "/", json={"prompt": "x"}, timeout=2)


def test_handler_prints_go_to_the_log_ring_not_stdout(serve, capfd):
    server = serve(Greeter)
    server.client.call("/", {"prompt": "bob"})
    out, err = capfd.readouterr()
    assert "handling bob" not in out + err  # setup's prints are echoed while it starts
    logs = server.logs()
    assert "loading weights" in logs and "handling bob" in logs
    print("a print from the test itself")
    assert "a print from the test itself" in capfd.readouterr().out


def test_setup_failure_raises_in_the_caller_chained_and_releases_the_port():
    class Broken(fal.App):
        def setup(self):
            raise ValueError("weights missing")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SetupError, match="weights missing") as info:
        falkit.serve(Broken, port=port)
    assert isinstance(info.value.__cause__, ValueError)
    assert falkit.servers() == {}
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", port))


def test_async_setup_and_teardown_run(serve, tmp_path):
    marker = tmp_path / "teardown"

    class Lifecycle(fal.App):
        async def setup(self):
            self.ready = True

        async def teardown(self):
            marker.write_text("done")

        @fal.endpoint("/")
        async def is_ready(self, input: Input) -> dict:
            return {"ready": self.ready}

    server = serve(Lifecycle)
    assert server.client.call("/", {"prompt": ""}) == {"ready": True}
    server.stop()
    assert marker.read_text() == "done"


def test_taken_port_is_a_clear_error(serve):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port}.*--port"):
            serve(Greeter, port=port)
    assert falkit.servers() == {}


def test_explicit_port_and_nodelay(serve):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(Greeter, port=port)
    assert server.port == port
    assert server._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_serving_a_name_again_replaces_it_on_the_same_port(serve, tmp_path):
    marker = tmp_path / "torn"

    class Versioned(fal.App):
        def setup(self):
            self.version = 1

        def teardown(self):
            marker.write_text("old torn down")

        @fal.endpoint("/")
        def version_(self, input: Input) -> dict:
            return {"version": self.version}

    first = serve(Versioned)
    port = first.port

    class Versioned(fal.App):
        def setup(self):
            self.version = 2

        @fal.endpoint("/")
        def version_(self, input: Input) -> dict:
            return {"version": self.version}

    second = serve(Versioned)
    assert second.port == port
    assert second.client.call("/", {"prompt": ""}) == {"version": 2}
    assert marker.read_text() == "old torn down"
    assert list(falkit.servers()) == ["versioned"]


def test_two_servers_run_side_by_side(serve):
    class Other(fal.App):
        @fal.endpoint("/")
        def hi(self, input: Input) -> dict:
            return {"other": True}

    a, b = serve(Greeter), serve(Other)
    assert a.port != b.port
    assert a.client.call("/", {"prompt": "x"})["model"] == "greeter-v1"
    assert b.client.call("/", {"prompt": "x"}) == {"other": True}
    falkit.stop_all()
    assert not a.running and not b.running


def test_bad_arguments_and_unknown_names():
    with pytest.raises(AppDefinitionError, match="not a falkit App"):
        falkit.serve(object)  # type: ignore[arg-type]
    with pytest.raises(ServerNotRunning, match="'nobody'"):
        falkit.get_server("nobody")


def test_stop_twice_is_harmless(serve):
    server = serve(Greeter)
    server.stop()
    server.stop()
    assert not server.running


def test_serve_works_in_a_plain_script_and_atexit_runs_teardown(tmp_path):
    marker = tmp_path / "teardown.txt"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import falkit as fal
            from pydantic import BaseModel

            class In(BaseModel):
                x: int

            class ScriptApp(fal.App):
                def teardown(self):
                    open({str(marker)!r}, "w").write("torn down at exit")

                @fal.endpoint("/")
                def double(self, input: In) -> dict:
                    return {{"y": input.x * 2}}

            server = fal.serve(ScriptApp)
            print(server.client.call("/", {{"x": 21}}))
            # no stop(): the atexit hook must stop the server and run teardown
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "{'y': 42}" in result.stdout
    assert marker.read_text() == "torn down at exit"


def test_concurrent_sync_requests_do_not_block_each_other(serve):
    import time

    class Slow(fal.App):
        @fal.endpoint("/")
        def slow(self, input: Input) -> dict:
            time.sleep(0.5)
            return {"ok": input.prompt}

    server = serve(Slow)
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(server.client.call("/", {"prompt": str(i)}))
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(r["ok"] for r in results) == ["0", "1", "2", "3"]
    assert server.stats()["requests"] == 4
