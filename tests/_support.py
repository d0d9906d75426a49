"""Small helpers several test modules share (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import threading
import time

import falkit as fal


def call(server, path: str = "/", data: object = None):
    """One call from a client closed right after (no socket left to the GC)."""
    with fal.Client(server.url) as client:
        return client.call(path, data)


def get(server, path: str):
    with fal.Client(server.url) as client:
        return client.get(path)


def run_in_kernel(kc, code: str) -> str:
    """Execute ``code`` in a real kernel (a jupyter_client client); its stdout. Fails the
    test on an error."""
    out: list[str] = []
    reply = kc.execute_interactive(
        code,
        timeout=60,
        output_hook=lambda msg: (
            out.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None
        ),
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def poller(default_timeout: float, interval: float = 0.02):
    """``until(predicate, timeout=default_timeout)``: polls ``predicate`` every
    ``interval`` seconds until it is true or the time is up; its last answer."""

    def until(predicate, timeout: float = default_timeout) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    return until


def threads_named(prefix: str) -> list[str]:
    """Names of the running threads whose name starts with ``prefix``."""
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]
