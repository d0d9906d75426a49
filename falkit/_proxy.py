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
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not prefix:
        return server.url + path
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return f"{prefix}proxy/{server.port}{path or '/'}"
