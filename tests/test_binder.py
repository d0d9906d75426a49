"""Binder, the way mybinder runs it: a jupyter-server with jupyter-server-proxy under a base
URL (``/user/<name>/``) with a token, ``JUPYTERHUB_SERVICE_PREFIX`` set for the kernel, and a
falkit server reached only through ``{base}proxy/{port}/`` (HTTP, /docs, WebSocket,
realtime). Also the files repo2docker reads."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import WebSocket
from pydantic import BaseModel

import falkit as fal
from falkit.serving import Server, browser_url, card_html, card_rows, proxy_root_path

ROOT = Path(__file__).resolve().parent.parent
BASE = "/user/test/"
TOKEN = "falkit-binder-test-token"

pytest.importorskip("jupyter_server_proxy")


class Input(BaseModel):
    prompt: str


class BinderApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> dict:
        return {"output": input.prompt.upper()}

    @fal.endpoint("/ws", is_websocket=True)
    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo: {text}")

    @fal.realtime("/realtime")
    def live(self, input: Input) -> dict:
        return {"output": input.prompt[::-1]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(
    proc: subprocess.Popen[str], url: str, log: Path, deadline_s: float = 90
) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"jupyter-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, headers={"Authorization": f"token {TOKEN}"}, timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"jupyter-server did not answer {url} within {deadline_s} s")


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A jupyter-server on loopback under ``BASE``, as on a hub; yields its origin."""
    home = tmp_path_factory.mktemp("jupyter")
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={BASE}",
        f"--IdentityProvider.token={TOKEN}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI and Binder-like containers run as root
        f"--ServerApp.root_dir={home}",
        "--ServerApp.jpserver_extensions={'jupyter_server_proxy': True}",
    ]
    log_path = home / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    origin = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, f"{origin}{BASE}api/status", log_path)
        yield origin
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's view of a hub: JupyterHub sets this in every single-user server."""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", BASE)


def _proxied(jupyter: str, server: Server) -> fal.Client:
    return fal.Client(
        jupyter + browser_url(server), headers={"Authorization": f"token {TOKEN}"}, timeout=20
    )


def test_card_and_links_point_through_the_proxy(hub: None, serve: Callable[..., Server]) -> None:
    server = serve(BinderApp)
    expected = f"{BASE}proxy/{server.port}"
    assert proxy_root_path(server.port) == expected
    assert browser_url(server, "/docs") == f"{expected}/docs"
    assert ("browser", f"{expected}/") in card_rows(server)
    assert f"href='{expected}/docs'" in card_html(server)
    # The kernel itself still talks to the loopback URL directly.
    assert server.client.call("/", {"prompt": "direct"}) == {"output": "DIRECT"}


def test_off_a_hub_links_are_the_loopback_url(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[..., Server]
) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    server = serve(BinderApp)
    assert browser_url(server, "/docs") == server.url + "/docs"
    assert "browser" not in dict(card_rows(server))
    docs = httpx.get(server.url + "/docs", timeout=10).text
    assert "'/openapi.json'" in docs


def test_docs_and_openapi_through_the_proxy(
    hub: None, jupyter: str, serve: Callable[..., Server]
) -> None:
    server = serve(BinderApp)
    auth = {"Authorization": f"token {TOKEN}"}
    docs = httpx.get(jupyter + browser_url(server, "/docs"), headers=auth, timeout=20)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # The page's script loads the schema from this URL, relative to the browser's origin.
    openapi_url = re.search(r"url: '([^']+)'", docs.text)
    assert openapi_url is not None, docs.text[:2000]
    assert openapi_url.group(1) == f"{BASE}proxy/{server.port}/openapi.json"
    schema = httpx.get(jupyter + openapi_url.group(1), headers=auth, timeout=20).json()
    assert "/" in schema["paths"]


def test_http_websocket_and_realtime_through_the_proxy(
    hub: None, jupyter: str, serve: Callable[..., Server]
) -> None:
    server = serve(BinderApp)
    with _proxied(jupyter, server) as client:
        assert client.call("/", {"prompt": "via proxy"}) == {"output": "VIA PROXY"}
        with pytest.raises(fal.RemoteError) as bad:
            client.call("/", {"wrong": 1})
        assert bad.value.status == 422
        assert client.call("/", {"prompt": "still"}) == {"output": "STILL"}
        with client.websocket("/ws") as ws:
            for word in ["one", "two"]:
                ws.send(word)
                assert ws.recv(timeout=10) == f"echo: {word}"
        with client.realtime("/realtime") as session:
            for word in ["abc", "xyz"]:
                session.send({"prompt": word})
                assert session.recv(timeout=10) == {"output": word[::-1]}


def test_the_proxy_needs_the_token(hub: None, jupyter: str, serve: Callable[..., Server]) -> None:
    server = serve(BinderApp)
    response = httpx.post(
        jupyter + browser_url(server, "/"), json={"prompt": "x"}, timeout=20, follow_redirects=False
    )
    assert response.status_code in (302, 403), response.status_code


def test_binder_files_install_falkit_with_the_proxy() -> None:
    import yaml

    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in deps)
    assert any(d.startswith("pytorch-cpu") for d in deps)
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert 'pip install --no-cache-dir -e ".[notebooks]"' in post_build.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = pyproject.split("\nnotebooks = [", 1)[1].split("]", 1)[0]
    assert "jupyter-server-proxy" in extra
