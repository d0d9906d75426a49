"""The playground in a real browser: JupyterLab served on loopback, Debian's Chromium
driven by Playwright. The notebook's cells serve an app and open the playground; the
test fills the form, clicks Send and reads the answer off the rendered page."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"

APP_CELL = """\
import falkit as fal
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str = Field(min_length=1, description="what to shout")
    times: int = Field(default=2, ge=1, le=5)


class Output(BaseModel):
    output: str


class BrowserApp(fal.App):
    @fal.endpoint("/")
    def shout(self, input: Input) -> Output:
        return Output(output=(input.prompt.upper() + "!") * input.times)
"""


def _require_browser() -> None:
    """Skip without Chromium or Playwright on a developer machine; in CI they are
    installed by scripts/test.sh, so their absence is a failure there."""
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if not missing:
        return
    reason = "browser test needs " + " and ".join(missing)
    if IN_CI:
        pytest.fail(reason + "; CI must run this test")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the kernels a Jupyter server started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code ``cells`` on the python3 kernel, written to ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
    nbformat.write(nb, path)
    return path


def _notebook(root: Path) -> Path:
    return write_notebook(
        root / "playground.ipynb",
        [APP_CELL, "%fal serve BrowserApp", "%fal playground BrowserApp"],
    )


@contextlib.contextmanager
def jupyter(
    root: Path, app: str = "lab", *, config: dict | None = None, env: dict | None = None
) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """JupyterLab (``app="server"``: a bare Jupyter Server) on 127.0.0.1 over ``root``,
    with a throwaway user config (``config`` as its ``jupyter_server_config.json``; the
    environment's ``jupyter_server_config.d`` still applies), runtime, settings and
    workspaces; ``env`` adds to the process environment. Yields (base URL, token,
    process), then shuts the server and its kernels down."""
    (root / "config").mkdir(exist_ok=True)
    if config is not None:
        (root / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    token, port = secrets.token_hex(16), _free_port()
    environ = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        **(env or {}),
    }
    lab = [
        f"--LabApp.user_settings_dir={root / 'settings'}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
    ]
    with (root / "jupyter.log").open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter", app, "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--ServerApp.port_retries=0",
                *(lab if app == "lab" else []),
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=root,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for_lab(base, token, proc, root / "jupyter.log")
            yield base, token, proc
        finally:
            _stop_lab(proc, base, token)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """JupyterLab on 127.0.0.1 with a throwaway root, settings and workspace; yields
    (base URL, token) and afterwards shuts the server and its kernels down."""
    _require_browser()
    _notebook(tmp_path)
    with jupyter(tmp_path) as (base, token, proc):
        yield base, token
        kernels = _children(proc.pid)
    deadline = time.monotonic() + 20
    while any(_alive(k) for k in kernels) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = [k for k in kernels if _alive(k)]
    for pid in leftover:
        os.kill(pid, 9)
    assert not leftover, f"kernel processes outlived JupyterLab: {leftover}"


def _wait_for_lab(base: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not start within 60 s:\n{log.read_text()[-3000:]}")


def _stop_lab(proc: subprocess.Popen, base: str, token: str) -> None:
    # The shutdown API stops the kernels (and the app server inside) before exiting.
    try:
        httpx.post(f"{base}/api/shutdown", headers={"Authorization": f"token {token}"}, timeout=10)
        proc.wait(30)
    except (httpx.HTTPError, subprocess.TimeoutExpired):
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.timeout(240)
def test_playground_sends_from_a_real_browser(lab: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "playground-failure.png").unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            try:
                page.goto(f"{base}/lab/tree/playground.ipynb?token={token}")
                _run_all_cells(page)
                playground = page.locator(".falkit-playground")
                expect(playground).to_be_visible(timeout=90_000)
                expect(playground).to_contain_text("browser-app")
                expect(playground).to_contain_text("prompt: string")

                prompt = playground.locator(".falkit-field-prompt input")
                prompt.fill("hello")
                prompt.press("Tab")  # commit the value to the kernel, as a person tabbing away
                times = playground.locator(".falkit-field-times input")
                times.fill("3")
                times.press("Tab")
                playground.locator(".falkit-http-send").click()
                output = playground.locator(".falkit-http-output")
                expect(output).to_contain_text('"output": "HELLO!HELLO!HELLO!"')
                expect(playground.locator(".falkit-http-status")).to_contain_text("200 OK")
                page.screenshot(path=str(ARTIFACTS / "playground-200.png"), full_page=True)

                prompt.fill("")
                prompt.press("Tab")
                playground.locator(".falkit-http-send").click()
                expect(output).to_contain_text("String should have at least 1 character")
                expect(playground.locator(".falkit-http-status")).to_contain_text("422")
                page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
                text = output.inner_text()
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "playground-failure.png"), full_page=True)
                raise
        finally:
            browser.close()
    assert "Traceback" not in text
    (ARTIFACTS / "playground.json").write_text(json.dumps({"last_output": text}))


def _run_all_cells(page) -> None:
    # Wait for the notebook and an idle kernel (answering the kernel dialog when
    # JupyterLab asks), then use the menu as a person would.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    # No dialog (the notebook's kernelspec taken as is) is fine too.
    with contextlib.suppress(PlaywrightTimeout):
        page.locator(".jp-Dialog").get_by_role("button", name="Select").click(timeout=10_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
