"""Shared fixtures: servers on real loopback sockets, stopped by the test that made them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

import falkit
from falkit.serving import Server


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """``serve(AppClass, **kw)`` serves on 127.0.0.1 and stops the server after the test."""
    started: list[Server] = []

    def _serve(app_cls: type[falkit.App], **kwargs: object) -> Server:
        server = falkit.serve(app_cls, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture
def kernel() -> Iterator[object]:
    """A real ipykernel (a jupyter_client client to it), its servers and itself stopped
    after the test."""
    from _support import run_in_kernel
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield kc
    finally:
        try:
            run_in_kernel(kc, "import falkit; falkit.stop_all()")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


@pytest.fixture(autouse=True)
def _no_leaked_servers() -> Iterator[None]:
    """Every test leaves no server and no falkit thread running."""
    yield
    leaked = falkit.servers()
    falkit.stop_all()
    threads = [
        t.name for t in threading.enumerate() if t.name.startswith("falkit-") and t.is_alive()
    ]
    assert not leaked, f"test left servers running: {sorted(leaked)}"
    assert not threads, f"test left server threads running: {threads}"
