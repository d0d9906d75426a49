"""Links a person's browser can open. On JupyterHub and Binder the kernel's loopback ports
are not reachable from the browser; jupyter-server-proxy forwards them under
``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/``."""

from __future__ import annotations

import os
from typing import Any


def browser_url(server: Any, path: str = "") -> str:
    """The URL of ``path`` on ``server`` as seen from the notebook's browser: behind
    ``JUPYTERHUB_SERVICE_PREFIX`` it goes through ``/proxy/PORT/``, else it is
    ``server.url + path``.

    Example::

        browser_url(server, "/docs")   # "/user/ada/proxy/8000/docs" on a hub
    """
    path = path if not path or path.startswith("/") else "/" + path
    root = proxy_root_path(server.port)
    if not root:
        return server.url + path
    return f"{root}{path or '/'}"


def proxy_root_path(port: int) -> str:
    """The path jupyter-server-proxy serves ``port`` under on a hub
    (``/user/ada/proxy/8000``), or ``""`` off a hub. The server uses it as the ASGI
    ``root_path``: the proxy strips it from requests, and ``/docs`` must load
    ``openapi.json`` from under it, not from the hub's root."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not prefix:
        return ""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return f"{prefix}proxy/{port}"
