"""The %fal magic, through IPython's in-process shell and through a real kernel (nbclient)."""

from __future__ import annotations

import textwrap

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbclient import NotebookClient

import falkit

APP_CELL = textwrap.dedent(
    """
    import falkit as fal
    from pydantic import BaseModel

    class In(BaseModel):
        prompt: str

    class MagicApp(fal.App):
        def setup(self):
            print("setup ran")

        @fal.endpoint("/")
        def echo(self, input: In) -> dict:
            print("echo", input.prompt)
            return {"echo": input.prompt}

    not_an_app = 42
    """
)


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    result = shell.run_cell(APP_CELL)
    assert result.success, result.error_in_exec
    yield shell
    falkit.stop_all()


def run(shell: InteractiveShell, code: str):
    with capture_output() as captured:
        result = shell.run_cell(code)
    return result, captured


def test_import_registers_the_magic_and_load_ext_works(shell):
    assert "fal" in shell.magics_manager.magics["line"]
    result, _ = run(shell, "%load_ext falkit")
    assert result.success


def test_serve_shows_a_card_and_the_app_answers(shell):
    result, captured = run(shell, "%fal serve MagicApp")
    assert result.success, result.error_in_exec
    (card,) = [o for o in captured.outputs if "text/html" in o.data]
    text, html = card.data["text/plain"], card.data["text/html"]
    server = falkit.get_server("MagicApp")
    for needle in (server.url, "magic-app", "POST /", "device", "setup"):
        assert needle in text
    assert server.url in html and "<table>" in html
    assert server.client.call("/", {"prompt": "hi"}) == {"echo": "hi"}

    result, captured = run(shell, "%fal ls")
    assert "magic-app" in captured.stdout and server.url in captured.stdout
    result, captured = run(shell, "%fal logs MagicApp")
    assert "setup ran" in captured.stdout and "echo hi" in captured.stdout
    result, captured = run(shell, "%fal stop MagicApp")
    assert result.success and not server.running
    result, captured = run(shell, "%fal ls")
    assert "no servers running" in captured.stdout


def test_serve_with_port_and_stop_all(shell):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result, _ = run(shell, f"%fal serve MagicApp --port {port}")
    assert result.success
    assert falkit.get_server("magic-app").port == port
    result, _ = run(shell, "%fal stop --all")
    assert result.success and falkit.servers() == {}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%fal", "usage: %fal serve NAME"),
        ("%fal serve Nope", "no App named 'Nope'"),
        ("%fal serve not_an_app", "'not_an_app' is a int, not a fal.App subclass"),
        ("%fal serve MagicApp --port notanumber", "invalid int value"),
        ("%fal serve MagicApp --bogus", "unrecognized arguments: --bogus"),
        ("%fal frobnicate", "invalid choice"),
        ("%fal stop", "name an app, or use --all"),
        ("%fal stop MagicApp", "no server named 'MagicApp' is running"),
        ("%fal logs Nope", "no server named 'Nope'"),
        ("%fal serve 'unclosed", "No closing quotation"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(shell, line, message):
    result, captured = run(shell, line)
    assert not result.success
    error = result.error_in_exec
    assert type(error).__name__ == "UsageError"
    assert message in str(error)
    assert "\n" not in str(error).strip()
    assert "Traceback" not in captured.stdout + captured.stderr
    # the kernel keeps working afterwards
    assert run(shell, "1 + 1")[0].result == 2


def test_taken_port_is_a_one_line_usage_error(shell):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result, _ = run(shell, f"%fal serve MagicApp --port {port}")
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert f"port {port}" in str(result.error_in_exec)


def test_magics_in_a_real_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(APP_CELL),
        nbformat.v4.new_code_cell("%fal serve MagicApp"),
        nbformat.v4.new_code_cell(
            "server = fal.get_server('MagicApp')\nserver.client.call('/', {'prompt': 'kernel'})"
        ),
        nbformat.v4.new_code_cell("%fal serve DoesNotExist"),
        nbformat.v4.new_code_cell("%fal logs MagicApp"),
        nbformat.v4.new_code_cell("%fal stop --all\n%fal ls"),
    ]
    client = NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True)
    client.execute()
    (card,) = [
        o for o in nb.cells[1].outputs if "falkit-card" in o.get("data", {}).get("text/html", "")
    ]
    assert "magic-app" in card.data["text/plain"]
    assert "text/html" in card.data
    assert nb.cells[2].outputs[0].data["text/plain"] == "{'echo': 'kernel'}"
    # IPython shows a UsageError as one stderr line, with no traceback
    (error,) = nb.cells[3].outputs
    assert (error.output_type, error.name) == ("stream", "stderr")
    assert error.text.strip() == (
        "UsageError: %fal: no App named 'DoesNotExist' in this notebook; define it first"
    )
    assert "echo kernel" in nb.cells[4].outputs[0].text
    assert "no servers running" in nb.cells[5].outputs[0].text


def test_serve_flags_for_cors_and_auth(shell):
    import httpx

    result, _ = run(shell, "%fal serve MagicApp --cors http://localhost:3000 --cors https://a.b")
    assert result.success, result.error_in_exec
    server = falkit.get_server("MagicApp")
    allowed = httpx.post(
        server.url + "/", json={"prompt": "x"}, headers={"Origin": "http://localhost:3000"}
    )
    assert allowed.json() == {"echo": "x"}
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused = httpx.post(server.url + "/", json={"prompt": "x"}, headers={"Origin": "http://evil"})
    assert refused.status_code == 403
    result, _ = run(shell, "%fal stop --all")

    result, _ = run(shell, "%fal serve MagicApp --host 0.0.0.0 --port 0 --no-auth")
    assert result.success, result.error_in_exec
    server = falkit.get_server("MagicApp")
    assert server.api_key is None
    loopback = f"http://127.0.0.1:{server.port}/"
    assert httpx.post(loopback, json={"prompt": "open"}).json() == {"echo": "open"}
