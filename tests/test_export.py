"""``falkit export``: a notebook's App becomes a standalone module that ``falkit serve`` runs
(and ``fal deploy`` would take). Exports are served with the CLI over real loopback."""

from __future__ import annotations

import ast
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from test_cli import URL, CLIProcess, tracked_processes

import falkit
from falkit.cli import main
from falkit.export import ExportError, export_notebook

pytestmark = pytest.mark.timeout(240)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

CELLS = [
    "%load_ext autoreload\n%autoreload 2",
    "from __future__ import annotations\nimport os, json\nimport numpy as np\n"
    "import falkit as fal\nfrom fastapi import WebSocket\nfrom pydantic import BaseModel, Field",
    "!echo exploring\nPREFIX = '>'\nUNUSED = 5\n"
    "class Input(BaseModel):\n    prompt: str = Field()\n\n"
    "class Output(BaseModel):\n    output: str",
    "def shout(text: str) -> str:\n    return PREFIX + text.upper()\n\nprint(shout('hi'))\nx = 42",
    "from falkit import codec, endpoint\n\n"
    "def helper_of_helper() -> str:\n    return codec.decode(codec.encode('deep'))\n\n"
    "def uses_helper() -> str:\n    return helper_of_helper()",
    "plt.plot([1, 2, 3]) if False else None\nresult = shout('exploration')",
    "class EchoApp(fal.App):\n"
    "    keep_alive = 10\n\n"
    "    def setup(self):\n        self.pid = os.getpid()\n\n"
    "    @fal.endpoint('/')\n"
    "    def generate(self, input: Input) -> Output:\n"
    "        return Output(output=shout(input.prompt) + uses_helper())\n\n"
    "    @fal.endpoint('/ws', is_websocket=True)\n"
    "    async def ws(self, websocket: WebSocket) -> None:\n"
    "        await websocket.accept()\n"
    "        await websocket.send_json({'pid': self.pid})\n"
    "        await websocket.close()\n\n"
    "    @fal.realtime('/realtime')\n"
    "    def rt(self, input: Input) -> Output:\n"
    "        return Output(output=input.prompt)",
    "server = fal.serve(EchoApp)\nserver.client.call('/', {'prompt': 'x'})",
    "%fal serve EchoApp",
    "%%time\nEchoApp.routes()",
    "def shout(text):\n    return 'redefined after the class'",
    "class NotAnApp:\n    pass",
]


@pytest.fixture
def cli() -> Iterator[type[CLIProcess]]:
    yield from tracked_processes()


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    nb = new_notebook()
    nb.cells = [new_markdown_cell("# A notebook")] + [new_code_cell(c) for c in CELLS]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    return path


def test_export_keeps_what_the_class_needs_and_nothing_else(notebook: Path) -> None:
    source = export_notebook(notebook, "EchoApp")
    ast.parse(source)
    assert "import fal\n" in source and "import falkit" not in source
    assert source.index("from __future__ import annotations") < source.index("import os")
    for kept in ("PREFIX = '>'", "class Input", "class Output", "def shout", "def uses_helper"):
        assert kept in source
    assert "def helper_of_helper" in source  # transitively, through uses_helper
    # falkit's own names stay falkit's (fal's SDK has no codec); unused ones are dropped.
    assert "from falkit import codec\n" in source and "endpoint\n" not in source
    for dropped in (
        "%",
        "!echo",
        "UNUSED",
        "print(",
        "x = 42",
        "result =",
        "fal.serve",
        "import json",
        ", json",
        "numpy",
        "NotAnApp",
        "redefined after the class",
    ):
        assert dropped not in source, dropped
    # Definitions come in notebook order: what the class uses precedes it.
    assert source.index("def helper_of_helper") < source.index("def uses_helper")
    assert source.index("def shout") < source.index("class EchoApp")


@pytest.mark.parametrize("without_fal", [False, True], ids=["fal-as-installed", "fal-absent"])
def test_exported_module_serves_with_the_cli(
    notebook: Path,
    tmp_path: Path,
    cli: type[CLIProcess],
    without_fal: bool,
) -> None:
    out = tmp_path / "app.py"
    assert main(["export", str(notebook), "EchoApp", "-o", str(out)]) == 0
    proc = cli("serve", f"{out}::EchoApp", without_fal=without_fal)
    url = proc.wait_for(URL).group(1)
    with falkit.Client(url) as client:
        assert client.call("/", {"prompt": "hi"}) == {"output": ">HIdeep"}
        with client.realtime("/realtime") as session:
            session.send({"prompt": "rt"})
            assert session.recv() == {"output": "rt"}
        with client.websocket("/ws") as ws:
            assert isinstance(json.loads(ws.recv(timeout=10))["pid"], int)
    assert proc.stop(signal.SIGINT) == 0


def test_export_to_stdout(notebook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(notebook), "EchoApp"]) == 0
    assert "class EchoApp(fal.App):" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("app", "message"),
    [("Nope", "defines no class 'Nope'"), ("NotAnApp", "'NotAnApp' is not a fal.App subclass")],
)
def test_bad_class_is_one_line_exit_2(
    notebook: Path, capsys: pytest.CaptureFixture[str], app: str, message: str
) -> None:
    assert main(["export", str(notebook), app, "-o", str(notebook.with_suffix(".py"))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not notebook.with_suffix(".py").exists()


def test_bad_notebooks_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.ipynb"
    garbage.write_text("{not json")
    assert main(["export", str(tmp_path / "missing.ipynb"), "A"]) == 2
    assert "no such notebook" in capsys.readouterr().err
    assert main(["export", str(garbage), "A"]) == 2
    assert "is not a notebook" in capsys.readouterr().err
    with pytest.raises(ExportError):
        export_notebook(garbage, "A")


# -- the tour notebooks ------------------------------------------------------------------


def _tour_apps() -> list[str]:
    apps = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        apps += [
            f"{path.name}::{name}" for name in re.findall(r"^class (\w+)\(fal\.App", code, re.M)
        ]
    return apps


def test_the_quickstart_notebook_is_in_the_tour() -> None:
    assert "01_quickstart.ipynb::RealtimeApp" in _tour_apps()


@pytest.mark.parametrize("target", _tour_apps())
def test_every_tour_notebook_app_exports_and_serves(
    target: str,
    tmp_path: Path,
    cli: type[CLIProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    notebook, _, app = target.partition("::")
    out = tmp_path / "app.py"
    assert main(["export", str(NOTEBOOKS / notebook), app, "-o", str(out)]) == 0
    capsys.readouterr()
    code = main(["routes", f"{out}::{app}"])
    printed, err = capsys.readouterr()
    assert printed.startswith(f"{app} (") and "GET   /health" in printed
    if code == 0:
        openapi = json.loads(printed[printed.index("\n{") + 1 :])
        assert openapi["info"]["title"] == app
    else:  # the app's models have no JSON schema: a one-line error, the server says 500
        assert (
            code == 2
            and err.startswith("falkit: error: no OpenAPI document")
            and err.count("\n") == 1
        )
        openapi = None
    # Every App sets itself up in a fresh process (04's trains its weights when the
    # notebook's checkpoint is not there), as it would after `fal deploy`.
    proc = cli("serve", f"{out}::{app}")
    url = proc.wait_for(URL, timeout=180).group(1)
    with falkit.Client(url) as client:
        assert client.get("/health") is not None
        if openapi is not None:
            assert set(client.get("/openapi.json")["paths"]) >= set(openapi["paths"])
    assert proc.stop(signal.SIGINT) == 0
