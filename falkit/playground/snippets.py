""" "Copy as code": the ``falkit.Client`` and curl equivalents of what a console sent."""

from __future__ import annotations

import json
import shlex
from typing import Any


def py_literal(value: Any, indent: str = "") -> str:
    """``value`` as Python source: one line when short, else one top-level key a line."""
    flat = repr(value)
    if len(flat) <= 72 or not isinstance(value, dict) or not value:
        return flat
    inner = indent + "    "
    items = "".join(f"{inner}{k!r}: {v!r},\n" for k, v in value.items())
    return "{\n" + items + indent + "}"


def python_call(url: str, path: str, body: Any) -> str:
    """The ``falkit.Client`` lines that make the same request."""
    return (
        "import falkit\n\n"
        f"client = falkit.Client({url!r})\n"
        f"client.call({path!r}, {py_literal(body)})"
    )


def curl_call(url: str, path: str, body: Any) -> str:
    """The same request as a curl command line."""
    return (
        f"curl -X POST {shlex.quote(url + path)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(json.dumps(body))}"
    )


def python_realtime(url: str, path: str, body: Any) -> str:
    """The ``falkit.Client.realtime`` lines that send the same input."""
    return (
        "import falkit\n\n"
        f"with falkit.Client({url!r}).realtime({path!r}) as session:\n"
        f"    session.send({py_literal(body, '    ')})\n"
        "    print(session.recv())"
    )
