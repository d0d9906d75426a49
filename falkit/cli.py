"""The ``falkit`` console script: serve, inspect, export and scale out an App from a shell.

::

    falkit serve app.py::MyApp [--port 8000] [--host 127.0.0.1] [--reload]
    falkit routes app.py::MyApp
    falkit export notebook.ipynb MyApp -o app.py
    falkit deploy-ray app.py::MyApp [--port 8000] [--replicas 2] [--route-prefix /]

``falkit serve`` mirrors ``fal run --local``: the same ``falkit.serve`` server a notebook
uses, in the foreground; Ctrl-C or SIGTERM stops it and ``teardown()`` runs.
``falkit deploy-ray`` joins the Ray cluster ``RAY_ADDRESS`` names (else starts a local one);
when Ray Serve already runs there, its proxy keeps its own host and port.

A file written with ``import fal`` loads whether or not the ``fal`` SDK is installed: when
it is absent, ``import fal`` inside that file resolves to ``falkit`` (the drop-in); when it
is present, the file gets the real SDK and its ``fal.App`` class is served through
falkit's adapter. Bad input (a missing file, no such class, not an App) is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .exceptions import CLIError, FalkitError
from .routes import KIND_LABELS

if TYPE_CHECKING:
    from .app import App
    from .serving import Server

USAGE_ERROR = 2
_POLL_S = 0.1


# -- loading an App from ``file.py::Name`` ----------------------------------------------


def _split_target(target: str) -> tuple[Path, str | None]:
    file, _, name = target.partition("::")
    path = Path(file)
    if not path.is_file():
        raise CLIError(f"no such file: {file}")
    if path.suffix != ".py":
        raise CLIError(f"{file} is not a Python file; pass path/to/app.py::AppName")
    return path, name or None


def _real_fal_installed() -> bool:
    if "fal" in sys.modules:
        return sys.modules["fal"] is not None  # None: imports of fal are blocked
    return importlib.util.find_spec("fal") is not None


@contextmanager
def _fal_resolves_to_falkit() -> Iterator[None]:
    """While a user file executes, make ``import fal`` mean ``falkit`` when the real SDK
    is not installed, so one file runs here and deploys to fal unchanged."""
    if _real_fal_installed():
        yield
        return
    import falkit

    missing = object()
    previous = sys.modules.get("fal", missing)
    sys.modules["fal"] = falkit  # type: ignore[assignment]
    finder = _FalSubmodules()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in finder.aliased:
            sys.modules.pop(name, None)
        if previous is missing:
            sys.modules.pop("fal", None)
        else:
            sys.modules["fal"] = previous  # type: ignore[assignment]


class _FalSubmodules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import fal.toolkit.image`` as falkit's own ``falkit.toolkit.image`` (the same module
    object, not a second copy with classes of its own) while ``fal`` stands for falkit."""

    def __init__(self) -> None:
        self.aliased: list[str] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not fullname.startswith("fal."):
            return None
        try:
            module = importlib.import_module("falkit." + fullname[len("fal.") :])
        except ImportError:
            return None
        self.aliased.append(fullname)
        return importlib.util.spec_from_loader(fullname, self, origin=module.__name__)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module("falkit." + spec.name[len("fal.") :])

    def exec_module(self, module: Any) -> None:
        pass  # already executed, as falkit's


def _module_name(path: Path) -> str:
    # The file's own stem keeps the class importable by name (Ray workers, pickling);
    # a stem that shadows a loaded module gets a private name instead.
    stem = path.stem
    taken = stem in sys.modules and getattr(sys.modules[stem], "__file__", None) != str(path)
    return (
        f"_falkit_user_{abs(hash(str(path)))}_{stem}" if taken or not stem.isidentifier() else stem
    )


def load_module(path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module (its folder on ``sys.path`` for local imports)."""
    path = path.resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Ray workers cannot import a file loaded from a path: its classes travel by value.
    module.__falkit_by_value__ = True  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        with _fal_resolves_to_falkit():
            spec.loader.exec_module(module)
    except FalkitError:
        raise
    except Exception as exc:
        del sys.modules[name]
        raise CLIError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _is_app_class(obj: Any) -> bool:
    from .interop import app_class

    if not isinstance(obj, type):
        return False
    try:
        app_class(obj)
    except FalkitError:
        return False
    return True


def _app_classes(module: ModuleType) -> list[str]:
    return [
        name
        for name, obj in vars(module).items()
        if _is_app_class(obj) and getattr(obj, "__module__", None) == module.__name__
    ]


def load_app(target: str) -> type[App]:
    """The App class named by ``path/to/file.py::AppName`` (the name may be left out when
    the file defines exactly one App); a real ``fal.App`` class comes back as written."""
    path, name = _split_target(target)
    module = load_module(path)
    found = _app_classes(module)
    if name is None:
        if len(found) != 1:
            listed = ", ".join(found) or "none"
            raise CLIError(f"{path} defines {len(found)} Apps ({listed}); pass {path}::AppName")
        name = found[0]
    if not hasattr(module, name):
        listed = ", ".join(found) or "none"
        raise CLIError(f"{path} has no {name!r} (Apps defined there: {listed})")
    obj = getattr(module, name)
    if not _is_app_class(obj):
        what = f"class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise CLIError(f"{path}::{name} is a {what}, not a fal.App subclass")
    return obj  # type: ignore[no-any-return]


# -- output ------------------------------------------------------------------------------


def route_table(app_cls: type[App], base: str = "") -> str:
    """One line per route: kind, path, handler name."""
    from .interop import app_class

    app_cls = app_class(app_cls)
    rows = [("GET", "/health", "health")]
    rows += [(KIND_LABELS[r.kind], r.path, r.method) for r in app_cls.routes()]
    width = max(len(path) for _, path, _ in rows)
    return "\n".join(f"  {kind:<5} {base}{path:<{width}}  {method}" for kind, path, method in rows)


def openapi_document(app_cls: type[App]) -> dict[str, Any]:
    """The OpenAPI document the server would publish at ``/openapi.json`` (no setup runs)."""
    from .asgi import build_asgi
    from .interop import app_class

    return build_asgi(app_class(app_cls)(), lifespan=False).openapi()


# -- commands ----------------------------------------------------------------------------


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str) -> None:
    print(text, flush=True)


def _tail(server: Server, seen: int) -> int:
    """Echo the server's log lines (handler prints, tracebacks) added since ``seen``: in a
    terminal they belong on screen, where ``fal run`` puts them too."""
    version = server.ring.version
    if version != seen:
        entries = server.ring.entries()
        for entry in entries[len(entries) - min(version - seen, len(entries)) :]:
            stream = sys.stderr if entry.level in ("ERROR", "CRITICAL") else sys.stdout
            print(entry.format(), file=stream, flush=True)
    return version


def _announce(server: Server) -> None:
    _say(f"falkit: serving {server.app_cls.__name__} ({server.app_name}) at {server.url}")
    _say(route_table(server.app_cls))
    _say(f"  docs  {server.url}/docs")
    _say("Press Ctrl-C to stop.")


def _reload(args: argparse.Namespace, server: Server) -> Server:
    from .serving import serve

    try:
        app_cls = load_app(args.target)
        server = serve(app_cls, port=server.port, host=server.host, allowed_hosts=args.allow_host)
    except Exception as exc:
        _say(f"falkit: reload failed, still serving the previous version: {exc}")
        return server
    _say(f"falkit: reloaded {app_cls.__name__}: {server.last_action}")
    return server


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving import serve

    path, _ = _split_target(args.target)
    mtime = path.stat().st_mtime  # before loading: an edit made during setup counts
    server = serve(
        load_app(args.target), port=args.port, host=args.host, allowed_hosts=args.allow_host
    )
    _announce(server)
    seen = server.ring.version  # what setup() printed was shown while it ran
    with _stop_signals() as stop:
        try:
            while not stop.wait(_POLL_S):
                seen = _tail(server, seen)
                if not server.running:
                    _say("falkit: the server stopped on its own; see the log above")
                    return 1
                if args.reload and path.stat().st_mtime != mtime:
                    mtime = path.stat().st_mtime
                    previous, server = server, _reload(args, server)
                    seen = seen if server is previous else server.ring.version
        finally:
            _say("falkit: stopping (teardown runs)")
            server.stop()
            _tail(server, seen)
    _say("falkit: stopped")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from .interop import app_class

    app_cls = app_class(load_app(args.target))
    _say(f"{app_cls.__name__} ({app_cls.app_name})")
    _say(route_table(app_cls))
    try:
        document = openapi_document(app_cls)
    except Exception as exc:  # e.g. a model field with no JSON schema (torch.Tensor)
        reason = (str(exc).splitlines() or [""])[0]
        raise CLIError(f"no OpenAPI document for {app_cls.__name__}: {reason}") from exc
    _say(json.dumps(document, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_notebook

    source = export_notebook(Path(args.notebook), args.app)
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        Path(args.output).write_text(source)
        _say(f"falkit: wrote {args.app} to {args.output}")
    return 0


def cmd_deploy_ray(args: argparse.Namespace) -> int:
    from .ray import deploy

    deployment = deploy(
        load_app(args.target),
        host=args.host,
        port=args.port,
        route_prefix=args.route_prefix,
        num_replicas=args.replicas,
    )
    _say(f"falkit: {deployment.app_name} on Ray Serve at {deployment.url}")
    _say(route_table(deployment.app_cls))
    _say("Press Ctrl-C to stop.")
    with _stop_signals() as stop:
        try:
            stop.wait()
        finally:
            _say("falkit: shutting down Ray Serve")
            deployment.shutdown()
            import ray

            ray.shutdown()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="falkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve file.py::App in the foreground")
    serve.add_argument("target", help="path/to/file.py::AppName")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--reload", action="store_true", help="re-import on file change")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=None,
        metavar="NAME",
        help="also answer requests whose Host is NAME (default: loopback names only)",
    )
    serve.set_defaults(run=cmd_serve)
    routes = sub.add_parser("routes", help="print the route table and the OpenAPI document")
    routes.add_argument("target", help="path/to/file.py::AppName")
    routes.set_defaults(run=cmd_routes)
    export = sub.add_parser("export", help="write a notebook's App as a standalone module")
    export.add_argument("notebook")
    export.add_argument("app", help="the App class name")
    export.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    export.set_defaults(run=cmd_export)
    ray = sub.add_parser("deploy-ray", help="run file.py::App as a Ray Serve application")
    ray.add_argument("target", help="path/to/file.py::AppName")
    ray.add_argument("--host", default="127.0.0.1")
    ray.add_argument("--port", type=int, default=8000)
    ray.add_argument("--replicas", type=int, default=None, help="fixed replica count")
    ray.add_argument("--route-prefix", default="/", help="where the app answers (default /)")
    ray.set_defaults(run=cmd_deploy_ray)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``falkit`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (FalkitError, OSError) as exc:
        print(f"falkit: error: {exc}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except KeyboardInterrupt:  # Ctrl-C before serving began (during imports or setup)
        print("falkit: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
