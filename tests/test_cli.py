"""The ``falkit`` console script, driven as a user drives it: a subprocess, real ports on
127.0.0.1, Ctrl-C (SIGINT) or SIGTERM to stop it; every process is stopped by its test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import falkit
from falkit.cli import main

pytestmark = pytest.mark.timeout(180)

APP = """
import fal
from fastapi import WebSocket
from pydantic import BaseModel


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str


class EchoApp(fal.App):
    def setup(self):
        self.prefix = "{prefix}"
        print("setup ran", flush=True)

    def teardown(self):
        print("teardown ran", flush=True)

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=self.prefix + input.prompt)

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(self.prefix)
        await websocket.close()

    @fal.realtime("/realtime")
    def rt(self, input: Input) -> Output:
        return Output(output=input.prompt.upper())


NOT_AN_APP = 3
"""

URL = re.compile(r"at (http://127\.0\.0\.1:\d+)")
# Runs the console script's entry point with `fal` made unimportable: the file's
# `import fal` must then resolve to falkit, as on a machine without the fal SDK.
WITHOUT_FAL = "import sys; sys.modules['fal'] = None; from falkit.cli import main; sys.exit(main())"


def write_app(folder: Path, prefix: str = ">") -> Path:
    path = folder / "echo_app.py"
    path.write_text(textwrap.dedent(APP.format(prefix=prefix)))
    return path


class CLIProcess:
    """A ``falkit`` subprocess whose output is collected by a reader thread."""

    def __init__(self, *args: str, without_fal: bool = False) -> None:
        command = [sys.executable, "-c", WITHOUT_FAL] if without_fal else [_falkit()]
        self.proc = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared; output:\n{self.output}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(10)
            if self.proc.stdout is not None and not self._reader.is_alive():
                self.proc.stdout.close()


def _falkit() -> str:
    script = Path(sys.executable).with_name("falkit")
    assert script.exists(), "the falkit console script is not installed (pip install -e .)"
    return str(script)


def tracked_processes() -> Iterator[type[CLIProcess]]:
    """A ``CLIProcess`` class whose instances are all killed when the generator ends."""
    started: list[CLIProcess] = []

    class Tracked(CLIProcess):
        def __init__(self, *args: str, **kwargs: bool) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    yield Tracked
    for process in started:
        process.stop(signal.SIGKILL)


@pytest.fixture
def cli() -> Iterator[type[CLIProcess]]:
    yield from tracked_processes()


def _check_served(url: str, prefix: str = ">") -> None:
    with falkit.Client(url) as client:
        assert client.call("/", {"prompt": "hi"}) == {"output": prefix + "hi"}
        with pytest.raises(falkit.RemoteError) as err:
            client.call("/", {"wrong": 1})
        assert err.value.status == 422
        assert client.call("/", {"prompt": "again"}) == {"output": prefix + "again"}
        with client.websocket("/ws") as ws:
            assert ws.recv(timeout=10) == prefix
        with client.realtime("/realtime") as session:
            session.send({"prompt": "rt"})
            assert session.recv() == {"output": "RT"}


@pytest.mark.parametrize("without_fal", [False, True], ids=["fal-as-installed", "fal-absent"])
def test_serve_prints_url_and_routes_and_stops_on_ctrl_c(
    tmp_path: Path, cli: type[CLIProcess], without_fal: bool
) -> None:
    path = write_app(tmp_path)
    proc = cli("serve", f"{path}::EchoApp", without_fal=without_fal)
    url = proc.wait_for(URL).group(1)
    for route in ("POST  /          generate", "RT    /realtime  rt", "WS    /ws        ws"):
        assert route in proc.output
    _check_served(url)
    proc.wait_for("setup ran")
    assert proc.stop(signal.SIGINT) == 0
    assert "teardown ran" in proc.output
    assert proc.output.rstrip().endswith("falkit: stopped")


def test_serve_sigterm_stops_cleanly_and_frees_the_port(
    tmp_path: Path, cli: type[CLIProcess]
) -> None:
    path = write_app(tmp_path)
    proc = cli("serve", f"{path}::EchoApp", "--port", "0", "--host", "127.0.0.1")
    url = proc.wait_for(URL).group(1)
    assert proc.stop(signal.SIGTERM) == 0
    assert "teardown ran" in proc.output
    port = int(url.rsplit(":", 1)[1])
    again = cli("serve", f"{path}::EchoApp", "--port", str(port))
    assert again.wait_for(URL).group(1) == url
    assert again.stop() == 0


def test_serve_taken_port_is_one_line_exit_2(tmp_path: Path, cli: type[CLIProcess]) -> None:
    path = write_app(tmp_path)
    first = cli("serve", f"{path}::EchoApp")
    port = first.wait_for(URL).group(1).rsplit(":", 1)[1]
    second = cli("serve", f"{path}::EchoApp", "--port", port)
    assert second.proc.wait(60) == 2
    second.stop()
    assert "already in use" in second.output
    assert "Traceback" not in second.output
    _check_served(f"http://127.0.0.1:{port}")  # the first server is unharmed
    assert first.stop() == 0


def test_reload_picks_up_an_edit_and_keeps_serving(tmp_path: Path, cli: type[CLIProcess]) -> None:
    path = write_app(tmp_path, prefix=">")
    proc = cli("serve", f"{path}::EchoApp", "--reload")
    url = proc.wait_for(URL).group(1)
    _check_served(url, ">")
    time.sleep(1.1)  # a new mtime even on filesystems with one-second timestamps
    path.write_text(path.read_text().replace('">"', '"#"'))
    proc.wait_for("reloaded EchoApp")
    _check_served(url, "#")  # same URL, the edited setup() ran: a restart
    time.sleep(1.1)
    path.write_text("this is not python(\n")
    proc.wait_for("reload failed, still serving the previous version")
    _check_served(url, "#")
    assert proc.stop() == 0


def test_reload_of_a_handler_edit_keeps_setup(tmp_path: Path, cli: type[CLIProcess]) -> None:
    path = write_app(tmp_path)
    proc = cli("serve", f"{path}::EchoApp", "--reload")
    url = proc.wait_for(URL).group(1)
    proc.wait_for("setup ran")
    time.sleep(1.1)
    path.write_text(path.read_text().replace("input.prompt.upper()", "input.prompt.lower()"))
    proc.wait_for(r"reloaded EchoApp: swapped .* \(setup kept\)")
    with falkit.Client(url) as client, client.realtime("/realtime") as session:
        session.send({"prompt": "MiXeD"})
        assert session.recv() == {"output": "mixed"}
    assert proc.output.count("setup ran") == 1
    assert proc.stop() == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.py::EchoApp", "no such file: missing.py"),
        ("{path}::Nope", "has no 'Nope'"),
        ("{path}::NOT_AN_APP", "is a int, not a fal.App subclass"),
        ("{path}::Input", "is a class Input, not a fal.App subclass"),
        ("{notpy}::EchoApp", "is not a Python file"),
        ("{broken}::EchoApp", "importing broken.py failed: NameError"),
    ],
)
def test_bad_targets_are_one_line_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    path = write_app(tmp_path)
    notpy = tmp_path / "app.txt"
    notpy.write_text("")
    broken = tmp_path / "broken.py"
    broken.write_text("undefined_name\n")
    target = target.format(path=path, notpy=notpy, broken=broken)
    for command in ("serve", "routes"):
        assert main([command, target]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert err.count("\n") == 1 and err.startswith("falkit: error: ")


def test_bad_target_through_the_console_script(tmp_path: Path, cli: type[CLIProcess]) -> None:
    proc = cli("serve", str(tmp_path / "nope.py"))
    assert proc.proc.wait(60) == 2
    proc.stop()
    assert proc.output.strip() == f"falkit: error: no such file: {tmp_path / 'nope.py'}"


def test_routes_prints_table_and_openapi(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    path = write_app(tmp_path)
    assert main(["routes", f"{path}::EchoApp"]) == 0
    out = capsys.readouterr().out
    head, _, document = out.partition("{")
    assert head.splitlines()[0] == "EchoApp (echo-app)"
    assert "GET   /health" in head and "POST  /          generate" in head
    openapi = json.loads("{" + document)
    assert "/" in openapi["paths"] and "post" in openapi["paths"]["/"]
    assert "Input" in openapi["components"]["schemas"]


def test_routes_without_app_name_when_the_file_has_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_app(tmp_path)
    assert main(["routes", str(path)]) == 0
    assert capsys.readouterr().out.startswith("EchoApp (echo-app)")


def test_fal_toolkit_submodules_are_falkits_own_without_the_sdk(tmp_path: Path) -> None:
    # With `import fal` standing for falkit, `fal.toolkit.image` must be falkit's module,
    # not a second copy whose classes fail isinstance checks against falkit's.
    path = tmp_path / "toolkit_app.py"
    path.write_text(
        textwrap.dedent(
            """
            import fal
            from fal.toolkit import Image
            from fal.toolkit.image import ImageSize
            import falkit.toolkit.image as ours

            print("same classes:", Image is ours.Image and ImageSize is ours.ImageSize)

            class ToolkitApp(fal.App):
                @fal.endpoint("/")
                def run(self) -> dict:
                    return {}
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FAL, "routes", f"{path}::ToolkitApp"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same classes: True" in done.stdout
