"""falkit: develop fal-style serverless apps inside Jupyter.

``import falkit as fal`` is a drop-in for ``import fal``: define ``class MyApp(fal.App)``
with ``@fal.endpoint`` / ``@fal.realtime`` routes, then ``%fal serve MyApp`` or
``falkit.serve(MyApp)``.

The layout rule (enforced by the import-linter contract in ``pyproject.toml``):

* Top-level modules are the user's model and its tools: ``app``, ``routes``, ``codec``,
  ``devices``, ``exceptions`` (one tree), ``ref`` (``fal.ref``), ``magics``, ``cli``,
  ``export``, ``ray``, ``compat`` (a documented path) and ``jupyter`` (the Jupyter Server
  extension, loaded by the server, never by the kernel), and ``toolkit``, a package whose
  modules are public because they mirror ``fal.toolkit``'s paths. There is no ``_x.py`` at
  the top level.
* Roles are subpackages, each with one owner: ``asgi`` (the whole per-request stack, built
  in one function), ``serving`` (``serve``, the registry, ``Server`` and its generations),
  ``client`` (the clients over one I/O-free core), ``interop`` (the real fal SDK and
  fal_client), ``bench`` and ``playground`` (the widgets). Inside a subpackage modules have
  plain names; what other parts of falkit use is public only through its ``__init__``.
* Layers, highest first; a module imports only from layers below it::

      cli | magics | compat | jupyter
      playground | bench | ray | export
      serving
      interop
      asgi | client
      app | toolkit
      routes | devices | codec | ref
      exceptions

This module re-exports the names users need (sorted ``__all__``); each reports
``__module__ == "falkit"``. ``%fal`` is registered here (on import inside IPython, on
``%load_ext falkit``, and when an App class is defined in a shell that lacks it).
"""

from __future__ import annotations

from typing import Any

from . import app as _app
from . import magics as _magics
from .app import App, RequestContext
from .bench import BenchReport, bench
from .client import AsyncClient, Client
from .exceptions import (
    AppDefinitionError,
    BenchError,
    ClientError,
    CLIError,
    ConnectionLost,
    EncodeError,
    ExportError,
    FalkitError,
    FormError,
    MissingDependency,
    PortInUseError,
    ProtocolError,
    RealtimeError,
    RemoteError,
    ServerError,
    ServerNotRunning,
    SetupError,
)
from .routes import HealthCheck, RouteSpec, endpoint, realtime
from .serving import ConnectionSpec, Server, get_server, serve, servers, stop_all

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppDefinitionError",
    "AsyncClient",
    "BenchError",
    "BenchReport",
    "CLIError",
    "Client",
    "ClientError",
    "ConnectionLost",
    "ConnectionSpec",
    "EncodeError",
    "ExportError",
    "FalkitError",
    "FormError",
    "HealthCheck",
    "MissingDependency",
    "PortInUseError",
    "ProtocolError",
    "RealtimeError",
    "RemoteError",
    "RequestContext",
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

# httpx's idiom: the public names say where users find them.
for _name in __all__:
    _obj = globals().get(_name)
    if _obj is not None and hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj


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
    _magics.register(ipython)


_app.class_defined_hooks.append(lambda _cls: _magics.register_if_in_ipython())
_magics.register_if_in_ipython()
