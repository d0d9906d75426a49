"""falkit: develop fal-style serverless apps inside Jupyter.

``import falkit as fal`` is a drop-in for ``import fal``: define ``class MyApp(fal.App)``
with ``@fal.endpoint`` / ``@fal.realtime`` routes, then ``%fal serve MyApp`` or
``falkit.serve(MyApp)``.
"""

from __future__ import annotations

from typing import Any

# Loaded first on purpose: importing the ``falkit.realtime`` module later (the server
# does) would rebind the package attribute ``realtime`` from the decorator to the module.
from . import realtime as _realtime_module  # noqa: F401
from .app import App
from .bench import BenchReport, bench
from .client import AsyncClient, Client
from .exceptions import (
    AppDefinitionError,
    ClientError,
    ConnectionLost,
    FalkitError,
    PortInUseError,
    ProtocolError,
    RealtimeError,
    RemoteError,
    ServerError,
    ServerNotRunning,
    SetupError,
)
from .routes import RouteSpec, endpoint, realtime
from .server import Server, get_server, serve, servers, stop_all

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppDefinitionError",
    "AsyncClient",
    "BenchReport",
    "Client",
    "ClientError",
    "ConnectionLost",
    "FalkitError",
    "PortInUseError",
    "ProtocolError",
    "RealtimeError",
    "RemoteError",
    "RouteSpec",
    "Server",
    "ServerError",
    "ServerNotRunning",
    "SetupError",
    "bench",
    "endpoint",
    "get_server",
    "playground",
    "realtime",
    "serve",
    "servers",
    "stop_all",
]


def __getattr__(name: str) -> Any:
    # ``falkit.playground(server)`` without importing ipywidgets on ``import falkit``:
    # the playground package is imported on first use, and is itself callable.
    # ``fal.toolkit`` (File, Image) likewise, as ``import fal`` offers it.
    if name in ("playground", "toolkit"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'falkit' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext falkit`` registers the ``%fal`` magic."""
    from .magics import register

    register(ipython)


def _auto_register() -> None:
    from .magics import register_if_in_ipython

    register_if_in_ipython()


_auto_register()
