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
