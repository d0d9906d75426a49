"""The layout rule of ``falkit/__init__.py``, held: the public names (pinned), where they
say they live, no private module at the top level, the documented import paths, and one
exception tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import falkit
from falkit import exceptions

PUBLIC = [
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


def test_the_public_names_are_pinned_and_say_they_are_falkits():
    assert falkit.__all__ == PUBLIC  # a new public name is a decision: add it here
    for name in falkit.__all__:
        obj = getattr(falkit, name)
        if name != "playground":  # the package itself, callable
            assert obj.__module__ == "falkit", (name, obj.__module__)


def test_no_private_module_at_the_top_level():
    root = Path(falkit.__file__).parent
    private = [p.name for p in root.glob("_*.py") if p.name != "__init__.py"]
    assert private == []
    for info in pkgutil.iter_modules([str(root)]):
        if info.ispkg and info.name != "toolkit":  # toolkit mirrors fal.toolkit's paths
            sub = root / info.name
            assert not [p.name for p in sub.glob("_*.py") if p.name != "__init__.py"], sub


def test_documented_import_paths_keep_working():
    from falkit.asgi import build_asgi
    from falkit.compat import use_fal_client
    from falkit.ray import deploy
    from falkit.toolkit import File, Image

    assert callable(build_asgi) and callable(use_fal_client) and callable(deploy)
    assert File and Image
    for name in ("codec", "compat", "ray", "toolkit", "playground", "asgi", "serving"):
        assert importlib.import_module(f"falkit.{name}")
    assert callable(falkit.playground)
    assert falkit.realtime.__module__ == "falkit" and callable(falkit.realtime)


def test_every_falkit_error_is_in_the_tree_and_its_drawing():
    drawn = exceptions.__doc__ or ""
    ours = [
        cls
        for cls in vars(exceptions).values()
        if inspect.isclass(cls)
        and issubclass(cls, Exception)
        and cls.__module__ in ("falkit", "falkit.exceptions")
        and issubclass(cls, exceptions.FalkitError)
    ]
    assert len(ours) >= 15
    for cls in ours:
        assert cls.__name__ in drawn, f"{cls.__name__} is not drawn in the tree"
