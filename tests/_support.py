"""Small helpers several test modules share (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

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
