"""The registry of running servers, keyed by app name, and ``serve()``: serving a name
again updates its server in place (a swap or a restart on the same port) instead of
starting another. An ``atexit`` hook stops every server (teardown runs)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence

from ..app import App
from ..asgi import DEFAULT_MAX_BODY_SIZE, LimitSpec, SecuritySpec, is_loopback, mask_key
from ..exceptions import ServerError, ServerNotRunning
from ..interop import app_class
from .changes import restart_reason
from .connections import ConnectionSpec
from .server import Server

_registry: dict[str, Server] = {}
_registry_lock = threading.RLock()
#: Called with each new ``Server`` (not a swap or an in-place restart: those keep theirs),
#: after it is registered (``on_serve``).
_serve_listeners: list[Callable[[Server], None]] = []


def on_serve(listener: Callable[[Server], None]) -> None:
    """Call ``listener(server)`` for each new server from now on (not for a swap or an
    in-place restart, which keep their server): the playground follows an app served
    again this way."""
    _serve_listeners.append(listener)


def _forget(server: Server) -> None:
    # A server's stop callback: a stopped server leaves the registry.
    with _registry_lock:
        if _registry.get(server.app_name) is server:
            del _registry[server.app_name]


def serve(
    app_cls: type[App],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    fresh: bool = False,
    ws_max_size: int | None = None,
    auth: bool | str | None = None,
    cors_origins: Sequence[str] | None = None,
    max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
    allowed_hosts: Sequence[str] | None = None,
    connections: ConnectionSpec | None = None,
) -> Server:
    """Serve ``app_cls`` from a background thread and return the running ``Server``.

    Serving a name that is already served updates it in place (same port, same URL):
    when ``setup()``, ``teardown()`` and the class options are unchanged and ``fresh`` is
    false, the new handlers take over the running instance's state (loaded models) and
    setup does not run again ("swapped"); otherwise a new instance is set up while the old
    one keeps serving, then takes over, and the old one is torn down ("restarted")::

        server = falkit.serve(MyApp)
        server.client.call("/", {"prompt": "hi"})
        server.stop()

    ``ws_max_size`` is the largest realtime frame accepted, in bytes (default 16 MiB).

    Safe by default (see ``falkit.asgi.guard``): bound to 127.0.0.1; any other ``host`` prints
    a warning and requires ``Authorization: Key <key>`` on every request, with a key made
    for the server and never printed (``server.api_key``; ``server.client`` sends it);
    ``auth`` is ``False`` to turn keys off, ``True`` to require one on loopback too, or the
    key itself. Browser
    pages of other origins are refused unless listed in ``cors_origins``; request bodies
    over ``max_body_size`` bytes (default 64 MiB, ``None``: no limit) get 413. Requests
    whose ``Host`` is not a loopback name or address, the bound address or one of
    ``allowed_hosts`` get 403 (DNS rebinding); ``connections`` (a ``falkit.ConnectionSpec``)
    bounds each connection's headers, pauses and the number open.
    """
    app_cls = app_class(app_cls)
    limits = LimitSpec.of(app_cls)
    with _registry_lock:
        old = _registry.get(app_cls.app_name)
        if old is not None and not old.running:
            old, _ = None, _registry.pop(app_cls.app_name)
        security = _security(old, host, auth, cors_origins, max_body_size, allowed_hosts)
        connections = connections or ConnectionSpec()
        if old is not None and _same_place(old, port, host, ws_max_size, security, connections):
            reason = "fresh requested" if fresh else restart_reason(old.app_cls, app_cls)
            if reason is None:
                old.generations.swap(app_cls, limits)
            else:
                old.generations.restart(app_cls, limits, reason)
            return old
        server = _start_new(
            app_cls,
            old,
            limits,
            port=port,
            host=host,
            ws_max_size=ws_max_size,
            security=security,
            connections=connections,
        )
        _registry[app_cls.app_name] = server
    _warn_if_exposed(server)
    for listener in list(_serve_listeners):
        try:
            listener(server)
        except Exception:  # a listener's bug must not fail the serve that succeeded
            logging.getLogger("falkit.server").exception("a serve listener failed")
    return server


def _security(
    old: Server | None,
    host: str,
    auth: bool | str | None,
    cors_origins: Sequence[str] | None,
    max_body_size: int | None,
    allowed_hosts: Sequence[str] | None,
) -> SecuritySpec:
    if auth is None and old is not None and old.host == host and old.api_key is not None:
        auth = old.api_key  # serving again keeps the key already shown, not a new one
    try:
        return SecuritySpec.of(host, auth, cors_origins, max_body_size, allowed_hosts)
    except ValueError as exc:
        raise ServerError(str(exc)) from None


def _warn_if_exposed(server: Server) -> None:
    # Printed, not warnings.warn: the warning must reach the user's eyes, in the cell. The
    # key itself never is: a notebook saves its cells' outputs (and so would put the key in
    # git); only its first characters, and where to read it.
    if is_loopback(server.host):
        return
    if server.api_key is None:
        how = "with NO key (auth=False): anyone who can reach this machine can call it"
    else:
        how = (
            f"requests need the header 'Authorization: Key {mask_key(server.api_key)}' "
            f"(the key: falkit.get_server({server.app_name!r}).api_key; server.client and "
            "the playground send it)"
        )
    print(
        f"falkit: WARNING {server.app_name} listens on {server.url}, reachable from the "
        f"network; {how}",
        file=sys.stderr,
    )


def _same_place(
    old: Server,
    port: int | None,
    host: str,
    ws_max_size: int | None,
    security: SecuritySpec,
    connections: ConnectionSpec,
) -> bool:
    # uvicorn's own settings (socket, frame cap, guard) cannot change under a running server.
    return (
        port in (None, old.port)
        and host == old.host
        and ws_max_size in (None, old.ws_max_size)
        and security == old.security
        and connections == old.connections
    )


def _start_new(
    app_cls: type[App],
    old: Server | None,
    limits: LimitSpec,
    *,
    port: int | None,
    host: str,
    ws_max_size: int | None,
    security: SecuritySpec,
    connections: ConnectionSpec,
) -> Server:
    began = time.perf_counter()
    action = ""
    if old is not None and port in (None, old.port):
        # Same port, new socket settings: the old server must let go of the port first.
        port, action = old.port, "restarted: server settings changed"
        old.stop()
        old = None
    server = Server(
        app_cls,
        host=host,
        port=port or 0,
        ws_max_size=ws_max_size,
        security=security,
        connections=connections,
        limits=limits,
        on_stop=_forget,
    )._start()
    if old is not None:
        # Another port: the new server is up before the old one goes.
        old.stop()
        action = f"restarted on port {server.port}"
    server.last_action = action or f"started in {time.perf_counter() - began:.2f} s"
    return server


def servers() -> dict[str, Server]:
    """The running servers, by app name."""
    with _registry_lock:
        return {name: s for name, s in _registry.items() if s.running}


def get_server(name: str) -> Server:
    """The running server of app ``name`` (its app name or class name)."""
    with _registry_lock:
        for server in _registry.values():
            if name in (server.app_name, server.app_cls.__name__) and server.running:
                return server
    running = ", ".join(sorted(_registry)) or "none"
    raise ServerNotRunning(f"no server named {name!r} is running (running: {running})")


def stop_all() -> None:
    """Stop every running server (teardown runs). Called at interpreter exit too."""
    with _registry_lock:
        running = list(_registry.values())
    for server in running:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)
