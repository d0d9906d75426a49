"""``Server``: uvicorn in a daemon thread with its own event loop, and the registry of
running servers. Never on the kernel's loop: a synchronous client call from a cell would
deadlock against it."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import gc
import logging
import socket
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._logs import LogRing, current_ring
from ._logs import install as install_log_routing
from .app import App
from .asgi import build_asgi, call_hook
from .devices import DeviceSpec, describe_device
from .exceptions import AppDefinitionError, PortInUseError, ServerNotRunning, SetupError
from .realtime import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .client import Client
    from .routes import RouteSpec

logger = logging.getLogger("falkit")

_registry: dict[str, Server] = {}
_registry_lock = threading.RLock()
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Measured: uvicorn on a pre-bound socket without TCP_NODELAY answers ~23 sequential
    # requests/s instead of ~800 (delayed ACKs); accepted sockets inherit it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use; pick another with --port, "
                "or leave it out to get a free one"
            ) from None
        raise
    sock.listen(2048)
    return sock


def _check_app_class(app_cls: Any) -> type[App]:
    if isinstance(app_cls, type) and issubclass(app_cls, App):
        return app_cls
    from ._falcompat import adapt, is_fal_app

    if is_fal_app(app_cls):  # written with the real `fal` SDK: served through an adapter
        return adapt(app_cls)
    raise AppDefinitionError(
        f"{app_cls!r} is not a falkit App class; define `class MyApp(fal.App): ...`"
    )


def _setup_changed(old: type[App], new: type[App]) -> bool:
    # Code objects compare by bytecode, constants and names, not by source text or line
    # numbers: re-running an unchanged cell keeps the model loaded.
    old_setup = getattr(old.setup, "__code__", old.setup)
    new_setup = getattr(new.setup, "__code__", new.setup)
    return old_setup != new_setup or old.options() != new.options()


def _free_accelerator_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class RequestStats:
    """Counts and recent latencies of a server's HTTP requests (bounded memory)."""

    def __init__(self, window: int = 2048) -> None:
        self.requests = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=window)

    def record(self, seconds: float, status: int) -> None:
        self.requests += 1
        self.errors += status >= 500
        self._latencies.append(seconds)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._latencies)

        def pct(q: float) -> float | None:
            return (
                round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)
                if ordered
                else None
            )

        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        }


class Server:
    """A running App: ``url``, ``routes``, ``client``, ``logs()`` and ``stop()``.
    Made by ``falkit.serve``; works in a kernel and in a plain script alike."""

    def __init__(
        self, app_cls: type[App], *, host: str, port: int, ws_max_size: int | None = None
    ) -> None:
        self.app_cls = _check_app_class(app_cls)
        self.host = host
        self.ws_max_size = ws_max_size or DEFAULT_MAX_MESSAGE_SIZE
        self.ring = LogRing()
        self.setup_seconds: float | None = None
        self.last_action = ""
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._instance: App | None = None
        self._asgi: Any = None
        self._uvicorn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._setup_error: BaseException | None = None
        self._stopped = threading.Event()
        self._stats = RequestStats()
        self._thread = threading.Thread(
            target=self._thread_main, name=f"falkit-{self.app_name}", daemon=True
        )

    # -- public surface ----------------------------------------------------------------

    @property
    def app_name(self) -> str:
        return self.app_cls.app_name

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:8000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        """The routes currently served."""
        return self.app_cls.routes()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped.is_set()

    @property
    def device(self) -> DeviceSpec:
        """The device the app's models live on (name and memory where torch knows them)."""
        instance = self._instance
        kind = instance.__dict__.get("_falkit_device") if instance is not None else None
        return describe_device(kind or "cpu")

    @property
    def client(self) -> Client:
        """A ``falkit.Client`` for this server."""
        from .client import Client

        return Client(self.url)

    def stats(self) -> dict[str, Any]:
        """HTTP request count, error count (status >= 500) and p50/p99 latency in ms."""
        return self._stats.summary()

    def logs(self, last: int | None = None) -> str:
        """The server's recent log lines: handler prints, logs and tracebacks."""
        return self.ring.text(last)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: in-flight requests get ``timeout`` seconds, then teardown runs."""
        with _registry_lock:
            if _registry.get(self.app_name) is self:
                del _registry[self.app_name]
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive() and self._uvicorn is not None:
                self._uvicorn.force_exit = True
                self._thread.join(timeout)
        self._sock.close()
        self._stopped.set()
        self._instance = None
        self._asgi = None
        _free_accelerator_memory()

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self, takeover: App | None = None) -> Server:
        install_log_routing()
        self._takeover = takeover
        self._thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = self.app_cls.startup_timeout
        started = time.monotonic()
        while not (self._uvicorn is not None and self._uvicorn.started):
            if self._setup_error is not None:
                raise SetupError(
                    f"{self.app_cls.__name__}.setup() failed: {self._setup_error!r}"
                ) from self._setup_error
            if not self._thread.is_alive():
                raise SetupError(
                    f"{self.app_cls.__name__} stopped while starting:\n{self.logs(20)}"
                )
            if deadline is not None and time.monotonic() - started > deadline:
                raise SetupError(
                    f"{self.app_cls.__name__} did not start within startup_timeout={deadline}s"
                )
            time.sleep(0.005)

    def _thread_main(self) -> None:
        current_ring.set(self.ring)
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        import uvicorn

        instance = await self._make_instance()
        if instance is None:
            return
        config = uvicorn.Config(
            self._dispatch,
            log_config=None,
            lifespan="off",
            interface="asgi3",
            access_log=False,
            timeout_graceful_shutdown=5,
            # The realtime layer enforces ``ws_max_size`` itself and answers an oversize
            # frame with fal's error frame; uvicorn's cap (a bare 1009 close) sits above.
            ws_max_size=4 * self.ws_max_size,
        )
        self._uvicorn = uvicorn.Server(config)
        try:
            await self._uvicorn.serve(sockets=[self._sock])
        finally:
            await self._teardown(self._instance)

    async def _make_instance(self) -> App | None:
        takeover = getattr(self, "_takeover", None)
        instance = self.app_cls()
        began = time.perf_counter()
        if takeover is not None:
            instance.__dict__.update(takeover.__dict__)
        else:
            try:
                await call_hook(instance.setup)
            except BaseException as exc:
                self._setup_error = exc
                return None
            self.setup_seconds = time.perf_counter() - began
        self._install(instance)
        return instance

    def _install(self, instance: App) -> None:
        self._instance = instance
        self._asgi = build_asgi(instance, lifespan=False)
        self._asgi.state.ws_max_size = self.ws_max_size

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One attribute read per request; a hot swap replaces ``_asgi`` atomically, so a
        # request in flight finishes on the application it started on.
        if scope["type"] != "http":
            await self._asgi(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_recording(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._asgi(scope, receive, send_recording)
        finally:
            self._stats.record(time.perf_counter() - began, status)

    async def _teardown(self, instance: App | None) -> None:
        if instance is None:
            return
        try:
            await call_hook(instance.teardown)
        except Exception:
            logging.getLogger("falkit.server").exception(
                "%s.teardown() failed", type(instance).__name__
            )

    # -- hot swap ------------------------------------------------------------------------

    def _swap(self, app_cls: type[App]) -> None:
        """Serve ``app_cls``'s handlers from now on, keeping the instance's state."""
        began = time.perf_counter()
        old = self._instance
        new = app_cls()
        if old is not None:
            new.__dict__.update(old.__dict__)
        self.app_cls = app_cls
        self._install(new)
        self.last_action = f"swapped in {(time.perf_counter() - began) * 1000:.0f} ms (setup kept)"

    # -- display -------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<falkit.Server {self.app_name} {state} at {self.url}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from .magics import card_text

        p.text(card_text(self))

    def _repr_html_(self) -> str:
        from .magics import card_html

        return card_html(self)


def _can_swap(old: Server, app_cls: type[App], *, port: int | None, host: str, fresh: bool) -> bool:
    same_place = port in (None, old.port) and host == old.host
    return old.running and same_place and not fresh and not _setup_changed(old.app_cls, app_cls)


def serve(
    app_cls: type[App],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    fresh: bool = False,
    ws_max_size: int | None = None,
) -> Server:
    """Serve ``app_cls`` from a background thread and return the running ``Server``.

    Serving a name that is already served replaces it in place (same port); when
    ``setup()`` and the class options are unchanged and ``fresh`` is false, the running
    instance's state (loaded models) carries over and setup does not run again::

        server = falkit.serve(MyApp)
        server.client.call("/", {"prompt": "hi"})
        server.stop()

    ``ws_max_size`` is the largest realtime frame accepted, in bytes (default 16 MiB).
    """
    app_cls = _check_app_class(app_cls)
    with _registry_lock:
        old = _registry.get(app_cls.app_name)
        fresh = fresh or (old is not None and ws_max_size not in (None, old.ws_max_size))
        if old is not None and _can_swap(old, app_cls, port=port, host=host, fresh=fresh):
            old._swap(app_cls)
            return old
        began = time.perf_counter()
        action = "started"
        if old is not None:
            action = "restarted: " + ("fresh requested" if fresh else "setup changed")
            port = old.port if port is None else port
            old.stop()
        server = Server(app_cls, host=host, port=port or 0, ws_max_size=ws_max_size)._start()
        if old is None:
            action = f"started in {time.perf_counter() - began:.2f} s"
        server.last_action = action
        _registry[app_cls.app_name] = server
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
