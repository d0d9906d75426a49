"""The notebook tour under strict nbval, each notebook in its own pytest subprocess and
kernel, exactly as a user would run it:

    python -m pytest --nbval notebooks/NAME.ipynb --nbval-sanitize-with notebooks/nbval_sanitize.cfg

An IPython startup file in a throwaway profile records, after every cell, which falkit
servers and threads are alive; after the last cell there must be none, so every notebook
stops what it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"

# Runs inside the notebook's kernel (a startup file of a temporary IPython profile).
_RECORDER = """
import json, os, sys, threading

def _falkit_record_leftovers(result=None):
    falkit = sys.modules.get("falkit")
    servers = sorted(falkit.servers()) if falkit is not None else []
    threads = sorted(
        t.name for t in threading.enumerate() if t.name.startswith("falkit-") and t.is_alive()
    )
    with open(os.environ["FALKIT_NB_LEFTOVERS"], "w") as out:
        json.dump({"servers": servers, "threads": threads}, out)

get_ipython().events.register("post_run_cell", _falkit_record_leftovers)
"""


def test_there_is_a_tour() -> None:
    names = {nb.stem for nb in NOTEBOOKS}
    tour = {"01_quickstart", "04_image_model", "05_stateful_websocket", "06_testing_and_shipping"}
    assert tour <= names, sorted(tour - names)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_what_it_teaches_and_has_outputs(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), notebook.name
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "outputs are not committed"
    assert any(c.outputs for c in code), "outputs are not committed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"committed outputs hold an error: {errors[0].get('ename')}"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_strict_nbval(notebook: Path, tmp_path: Path) -> None:
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-falkit-leftovers.py").write_text(_RECORDER)
    leftovers = tmp_path / "leftovers.json"
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "FALKIT_NB_LEFTOVERS": str(leftovers),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    env.pop("JUPYTERHUB_SERVICE_PREFIX", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        str(notebook.relative_to(ROOT)),
        "--nbval-sanitize-with",
        str(SANITIZE.relative_to(ROOT)),
        "--nbval-current-env",
        "--nbval-cell-timeout=180",
        "-p",
        "no:cacheprovider",
        "-q",
        "--color=no",
    ]
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert proc.returncode == 0, f"nbval failed on {notebook.name}:\n{proc.stdout[-6000:]}"
    state = json.loads(leftovers.read_text())
    assert state == {"servers": [], "threads": []}, f"{notebook.name} left running: {state}"
