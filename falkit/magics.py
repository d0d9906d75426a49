"""The ``%fal`` line magic and the card ``%fal serve`` shows. IPython is imported lazily:
``import falkit`` outside a kernel never touches it."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any, NoReturn

from .app import App
from .bench import bench
from .exceptions import AppDefinitionError, FalkitError, ServerError, ServerNotRunning, SetupError
from .interop import is_fal_app
from .serving import get_server, serve, servers, stop_all


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        from IPython.core.error import UsageError

        raise UsageError(f"%fal {self.prog.split()[-1]}: {message}")


def _parser() -> argparse.ArgumentParser:
    root = _Parser(prog="%fal", add_help=False)
    sub = root.add_subparsers(dest="command", parser_class=_Parser)
    serve = sub.add_parser("serve", add_help=False)
    serve.add_argument("name")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--fresh", action="store_true")
    serve.add_argument("--no-auth", action="store_true")
    serve.add_argument("--cors", action="append", default=None, metavar="ORIGIN")
    serve.add_argument("--allow-host", action="append", default=None, metavar="NAME")
    stop = sub.add_parser("stop", add_help=False)
    stop.add_argument("name", nargs="?")
    stop.add_argument("--all", action="store_true")
    sub.add_parser("ls", add_help=False)
    logs = sub.add_parser("logs", add_help=False)
    logs.add_argument("name")
    logs.add_argument("-n", type=int, default=50)
    playground = sub.add_parser("playground", add_help=False)
    playground.add_argument("name")
    bench = sub.add_parser("bench", add_help=False)
    bench.add_argument("name")
    bench.add_argument("path", nargs="?", default="/")
    bench.add_argument("-n", type=int, default=1000)
    bench.add_argument("-c", type=int, default=8)
    bench.add_argument("--payload", default="null")
    bench.add_argument("--duration", type=float, default=30.0)
    return root


USAGE = (
    "usage: %fal serve NAME [--port N] [--host H] [--fresh] [--no-auth] [--cors ORIGIN] "
    "[--allow-host NAME] | "
    "%fal stop NAME | "
    "%fal stop --all | %fal ls | %fal logs NAME [-n N] | %fal playground NAME | "
    "%fal bench NAME PATH [-n N] [-c C] [--payload JSON] [--duration S]"
)


class FalMagic:
    """``%fal``: serve, stop, list and inspect Apps from notebook cells."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, line: str) -> Any:
        from IPython.core.error import UsageError

        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%fal: {exc}") from None
        if not words:
            raise UsageError(USAGE)
        args = _parser().parse_args(words)
        try:
            return getattr(self, f"_{args.command}")(args)
        except SetupError:
            raise  # the user's own setup() failed: its traceback is what they need
        except (ServerNotRunning, AppDefinitionError, ServerError) as exc:
            raise UsageError(str(exc)) from None

    def _app_class(self, name: str) -> Any:
        from IPython.core.error import UsageError

        if name not in self.shell.user_ns:
            raise UsageError(f"%fal: no App named {name!r} in this notebook; define it first")
        obj = self.shell.user_ns[name]
        if not (isinstance(obj, type) and (issubclass(obj, App) or is_fal_app(obj))):
            raise UsageError(f"%fal: {name!r} is a {type(obj).__name__}, not a fal.App subclass")
        return obj

    def _serve(self, args: argparse.Namespace) -> None:
        from IPython.display import display

        # The card widget (ipywidgets) loads with the first serve, not with ``%fal``.
        from .playground import serve_card

        server = serve(
            self._app_class(args.name),
            port=args.port,
            host=args.host,
            fresh=args.fresh,
            auth=False if args.no_auth else None,
            cors_origins=args.cors,
            allowed_hosts=args.allow_host,
        )
        # The card widget adds a "playground" button; its text and HTML parts are the
        # plain card's, so front ends without widgets show (and nbval compares) the same.
        display(serve_card(server))

    def _stop(self, args: argparse.Namespace) -> None:
        from IPython.core.error import UsageError

        if args.all:
            stop_all()
        elif args.name:
            get_server(args.name).stop()
        else:
            raise UsageError("%fal stop: name an app, or use --all")

    def _ls(self, args: argparse.Namespace) -> None:
        running = servers()
        if not running:
            print("no servers running")
        for name, server in running.items():
            print(f"{name:<24} {server.url:<28} {server.device.describe()}")

    def _logs(self, args: argparse.Namespace) -> None:
        print(get_server(args.name).logs(args.n) or "(no logs yet)")

    def _bench(self, args: argparse.Namespace) -> None:
        from IPython.core.error import UsageError
        from IPython.display import display

        try:
            payload = json.loads(args.payload)
        except ValueError as exc:
            raise UsageError(f"%fal bench: --payload is not JSON: {exc}") from None
        server = get_server(args.name)
        try:
            report = bench(
                server, args.path, n=args.n, c=args.c, payload=payload, duration=args.duration
            )
        except FalkitError as exc:
            raise UsageError(f"%fal bench: {exc}") from None
        display(report)

    def _playground(self, args: argparse.Namespace) -> Any:
        from IPython.display import display

        from .playground import playground

        display(playground(get_server(args.name)))


def register(shell: Any) -> None:
    """Register ``%fal`` on ``shell`` (idempotent)."""
    shell.register_magic_function(FalMagic(shell), magic_kind="line", magic_name="fal")


def register_if_in_ipython() -> None:
    """Registers ``%fal`` when a shell is running and lacks it. Called on ``import falkit``
    and when an App class is defined, so a shell that found falkit already imported (by
    another module, or an earlier shell in the same process) still gets the magic."""
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and "fal" not in shell.magics_manager.magics["line"]:
        register(shell)
