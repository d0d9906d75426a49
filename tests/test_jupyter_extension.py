"""falkit's Jupyter Server extension (falkit/jupyter.py), in a real Jupyter Server with a
real kernel: installing falkit enables it, and a kernel WebSocket a client opens has
TCP_NODELAY on the server's socket; disabled, the same socket has Nagle's algorithm on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_browser import jupyter
from websockets.sync.client import connect

TESTS = Path(__file__).resolve().parent


@contextmanager
def jupyter_server(tmp: Path, extensions: dict[str, bool]) -> Iterator[tuple[str, str]]:
    """A Jupyter Server on loopback with ``extensions`` set in its user config (over what
    the environment's ``jupyter_server_config.d`` enables), stopped with its kernels."""
    config = {"ServerApp": {"jpserver_extensions": extensions}}
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    with jupyter(tmp, "server", config=config, env={"PYTHONPATH": path}) as (base, token, _):
        yield base, token


def nodelay_of_a_kernel_websocket(base: str, token: str) -> list[bool]:
    auth = {"Authorization": f"token {token}"}
    kernel = httpx.post(f"{base}/api/kernels", headers=auth, json={}, timeout=30).json()["id"]
    url = base.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
    with connect(url, additional_headers=auth, open_timeout=30, close_timeout=5):
        return httpx.get(f"{base}/falkit-probe/nodelay", headers=auth, timeout=10).json()["nodelay"]


@pytest.mark.timeout(180)
def test_installing_falkit_enables_the_extension() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    line = next(x for x in (listed.stdout + listed.stderr).splitlines() if "falkit.jupyter" in x)
    assert "enabled" in line


@pytest.mark.timeout(180)
def test_kernel_websockets_write_with_tcp_nodelay(tmp_path: Path) -> None:
    with jupyter_server(tmp_path, {"_jupyter_probe": True}) as (base, token):
        assert nodelay_of_a_kernel_websocket(base, token) == [True]


@pytest.mark.timeout(180)
def test_disabled_the_kernel_websocket_keeps_nagle(tmp_path: Path) -> None:
    # The probe reads the real socket: without the extension it reports Nagle on.
    with jupyter_server(tmp_path, {"_jupyter_probe": True, "falkit.jupyter": False}) as (
        base,
        token,
    ):
        assert nodelay_of_a_kernel_websocket(base, token) == [False]
