"""``Server``: uvicorn in a daemon thread with its own event loop, and the registry of
running servers. Never on the kernel's loop: a synchronous client call from a cell would
deadlock against it.

Serving a running name again never moves it (same port, URL, open playground). Each App
instance served is a *generation*; requests and WebSocket sessions keep the generation they
started on until they end, so nothing in flight is dropped or switched mid-way:
- swap: ``setup()``, ``teardown()`` and fal's options unchanged (code objects compared, not
  text) and not ``fresh``: a new instance takes over the old one's state, no setup; ~ms.
- restart: otherwise. Decided: the new instance is set up *while the old one keeps
  serving* (no downtime; a failed or too slow setup raises in the cell and leaves the old
  one serving), then takes over; the old one's ``teardown()`` runs once its requests and
  sessions have ended, and its memory is handed back. The price: both instances are alive
  during the new ``setup()``; a model that cannot fit twice needs ``stop()`` first.
Changing host, port or uvicorn-level settings starts a new server instead.

This module: the thread, uvicorn, request dispatch and the registry of servers. Making,
swapping, restarting and retiring generations is ``_generations.Generations``."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._changes import restart_reason
from ._generations import (
    Generations,
    _check_options,
    _forget_handlers,
    _Generation,
    _resolve_device,
    _setup_failed,
    _startup_timeout,
)
from ._kernelfirst import install as install_kernel_first
from ._kernelfirst import yield_to_kernel
from ._logs import LogRing, current_ring
from ._logs import ensure_routed as ensure_log_routing
from ._logs import install as install_log_routing
from ._startup import StartupProgress
from ._stats import RequestStats
from .app import App
from .devices import DeviceSpec, describe_device, free_memory, pick_device
from .exceptions import (
    AppDefinitionError,
    PortInUseError,
    ServerError,
    ServerNotRunning,
    SetupError,
)
from .limits import LimitSpec
from .realtime import DEFAULT_MAX_MESSAGE_SIZE
from .security import DEFAULT_MAX_BODY_SIZE, SecuritySpec, auth_headers, guard, is_loopback

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .client import Client
    from .routes import RouteSpec

_registry: dict[str, Server] = {}
_registry_lock = threading.RLock()
_client_lock = threading.Lock()
KEEP_ALIVE_S = 75  # longer than clients' pools keep idle connections (httpx: 5 s)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    # uvloop when installed, as ``uvicorn.run`` picks it for a bare FastAPI app: measured
    # with wrk (benchmarks/http_overhead.py), asyncio's own loop served ~10% fewer requests.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Measured: uvicorn on a pre-bound socket without TCP_NODELAY answers ~23 sequential
    # requests/s instead of ~800 (delayed ACKs); accepted sockets inherit it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OverflowError:
        sock.close()
        raise ServerError(f"port {port} is not a port number; use 1-65535, or 0 for any") from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use; pick another with --port, "
                "or leave it out to get a free one"
            ) from None
        # a bad host name or an address this machine does not have
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
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


class Server(Generations):
    """A running App: ``url``, ``routes``, ``client``, ``logs()`` and ``stop()``.
    Made by ``falkit.serve``; works in a kernel and in a plain script alike."""

    def __init__(
        self,
        app_cls: type[App],
        *,
        host: str,
        port: int,
        ws_max_size: int | None = None,
        security: SecuritySpec | None = None,
    ) -> None:
        self.app_cls = _check_app_class(app_cls)
        self.host = host
        self.security = security or SecuritySpec()
        self.ws_max_size = ws_max_size or DEFAULT_MAX_MESSAGE_SIZE
        _check_options(self.app_cls)
        self.ring = LogRing()
        self.setup_seconds: float | None = None
        self.last_action = ""
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._gen: _Generation | None = None
        self._retiring: set[_Generation] = set()  # replaced, awaiting teardown
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._device: str | None = None
        self._uvicorn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
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
    def limits(self) -> LimitSpec:
        """The request limits in force (``max_multiplexing``, ``request_timeout``, ...)."""
        gen = self._gen
        return gen.limits if gen is not None else _check_options(self.app_cls)

    @property
    def _instance(self) -> App | None:
        gen = self._gen
        return gen.instance if gen is not None else None

    @property
    def device(self) -> DeviceSpec:
        """The device the app's models live on: name, total and used memory (torch's view
        for a GPU, the machine's RAM for ``cpu``). Never imports torch itself."""
        instance = self._instance
        kind = instance.__dict__.get("_falkit_device") if instance is not None else None
        if kind is None and "torch" in sys.modules:
            kind = pick_device(self.app_cls)
        return describe_device(kind or self._device or "cpu")

    @property
    def client(self) -> Client:
        """A ``falkit.Client`` for this server (sending its API key, if it has one). One
        client per server, reused, so its connections are pooled; closed on ``stop()``."""
        from .client import Client

        with _client_lock:  # threads (the playground's, a user's) must share one client
            client = self.__dict__.get("_client")
            if client is None or client.closed:
                client = Client(self.url, headers=auth_headers(self.api_key))
                self.__dict__["_client"] = client
        return client

    @property
    def api_key(self) -> str | None:
        """The key requests must send as ``Authorization: Key <key>``; ``None`` when the
        server needs none (the default on 127.0.0.1)."""
        return self.security.api_key

    def stats(self) -> dict[str, Any]:
        """HTTP request count, error count (status >= 500) and p50/p99 latency in ms."""
        return self._stats.summary()

    def logs(self, last: int | None = None) -> str:
        """The server's recent log lines: handler prints, logs and tracebacks."""
        return self.ring.text(last)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: in-flight requests get ``timeout`` seconds, then teardown runs and
        the instance is dropped (its GPU memory handed back)."""
        with _registry_lock:
            if _registry.get(self.app_name) is self:
                del _registry[self.app_name]
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        elif self._loop is not None and self._main is not None:
            # Still in setup(): uvicorn is not up to be told; the setup thread runs on to
            # its end in the background, but nothing waits for it.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._main.cancel)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive() and self._uvicorn is not None:
                self._uvicorn.force_exit = True
                self._thread.join(timeout)
        self._sock.close()
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()
        self._stopped.set()
        self._drop_generations()

    def _drop_generations(self) -> None:
        for gen in [self._gen, *self._retiring]:
            if gen is not None:
                gen.drop()
        self._gen = None
        self._retiring.clear()
        _forget_handlers()
        free_memory()

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> Server:
        install_log_routing()
        install_kernel_first()  # the kernel's tuning and hooks (see _kernelfirst)
        self._device = _resolve_device(self.app_cls)
        # The server stack's first import (a second or more on a busy machine) happens
        # here, before the clock starts: progress lines are about setup(), and a line that
        # appears only when imports are slow would make notebook outputs unstable.
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        progress = StartupProgress(self.app_cls.__name__, self.ring)
        self._thread.start()
        try:
            self._wait_ready(progress)
        except BaseException:
            progress.close(f"failed after {progress.elapsed:.1f} s")
            self.stop()
            raise
        progress.close(f"ready after {progress.elapsed:.1f} s")
        return self

    def _wait_ready(self, progress: StartupProgress) -> None:
        deadline = self.app_cls.startup_timeout
        while not (self._uvicorn is not None and self._uvicorn.started):
            if self._setup_error is not None:
                raise _setup_failed(self.app_cls, self._setup_error) from self._setup_error
            if not self._thread.is_alive():
                raise SetupError(
                    f"{self.app_cls.__name__} stopped while starting:\n{self.logs(20)}"
                )
            if deadline is not None and progress.elapsed > deadline:
                raise _startup_timeout(self.app_cls, progress.elapsed)
            progress.tick()
            time.sleep(0.005)

    def _thread_main(self) -> None:
        current_ring.set(self.ring)
        loop = _new_event_loop()
        self._main = loop.create_task(self._serve())
        self._loop = loop
        try:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
        finally:
            loop.close()

    async def _serve(self) -> None:
        import uvicorn

        try:
            self._gen = await self._prepare(self.app_cls, self._device)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._setup_error = exc
            return
        config = uvicorn.Config(
            guard(self._dispatch, self.security),
            log_config=None,
            lifespan="off",
            interface="asgi3",
            access_log=False,
            timeout_graceful_shutdown=5,
            # uvicorn closes idle keep-alive connections after 5 s, exactly when httpx's
            # pool expires them: a request sent at that moment met the close (1 ReadError in
            # 30,000 soak requests). Clients now always let go first.
            timeout_keep_alive=KEEP_ALIVE_S,
            # The realtime layer enforces ``ws_max_size`` itself and answers an oversize
            # frame with fal's error frame; uvicorn's cap (a bare 1009 close) sits above.
            ws_max_size=4 * self.ws_max_size,
        )
        self._uvicorn = uvicorn.Server(config)
        try:
            await self._uvicorn.serve(sockets=[self._sock])
        finally:
            await self._teardown_all()

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One attribute read per request: a swap replaces ``_gen`` atomically, so a request
        # or session in flight finishes on the generation (handlers) it started on, and the
        # count tells a retiring generation when it may be torn down.
        yield_to_kernel()  # a cell the kernel is receiving or answering goes first
        gen = self._gen
        assert gen is not None
        ensure_log_routing()
        gen.active += 1
        try:
            await self._dispatch_to(gen.asgi, scope, receive, send)
        finally:
            gen.active -= 1

    async def _dispatch_to(self, asgi: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await asgi(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        sent = False

        async def send_recording(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                sent = True
            await send(message)

        try:
            await asgi(scope, receive, send_recording)
        except Exception:
            # Starlette re-raises a handler's exception after sending the 500 (already
            # logged to the ring). Passed on, uvicorn would drop the keep-alive connection
            # under the client's next request; the answer is complete, so it ends here.
            if not sent:
                raise
        finally:
            self._stats.record(time.perf_counter() - began, status)

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

    Safe by default (see ``falkit.security``): bound to 127.0.0.1; any other ``host`` prints
    a warning and requires ``Authorization: Key <key>`` on every request, with a key made
    for the server and shown once (``server.client`` sends it); ``auth`` is ``False`` to
    turn keys off, ``True`` to require one on loopback too, or the key itself. Browser
    pages of other origins are refused unless listed in ``cors_origins``; request bodies
    over ``max_body_size`` bytes (default 64 MiB, ``None``: no limit) get 413.
    """
    app_cls = _check_app_class(app_cls)
    _check_options(app_cls)
    with _registry_lock:
        old = _registry.get(app_cls.app_name)
        if old is not None and not old.running:
            old, _ = None, _registry.pop(app_cls.app_name)
        security = _security(old, host, auth, cors_origins, max_body_size)
        if old is not None and _same_place(old, port, host, ws_max_size, security):
            reason = "fresh requested" if fresh else restart_reason(old.app_cls, app_cls)
            if reason is None:
                old._swap(app_cls)
            else:
                old._restart(app_cls, reason)
            return old
        server = _start_new(
            app_cls, old, port=port, host=host, ws_max_size=ws_max_size, security=security
        )
        _registry[app_cls.app_name] = server
    _warn_if_exposed(server)
    for listener in list(_started_listeners):
        try:
            listener(server)
        except Exception:  # a listener's bug must not fail the serve that succeeded
            logging.getLogger("falkit.server").exception("a serve listener failed")
    return server


#: Called with each new ``Server`` (not a swap or an in-place restart: those keep theirs),
#: after it is registered: the playground uses it to follow an app served again.
_started_listeners: list[Callable[[Server], None]] = []


def _security(
    old: Server | None,
    host: str,
    auth: bool | str | None,
    cors_origins: Sequence[str] | None,
    max_body_size: int | None,
) -> SecuritySpec:
    if auth is None and old is not None and old.host == host and old.api_key is not None:
        auth = old.api_key  # serving again keeps the key already shown, not a new one
    try:
        return SecuritySpec.of(host, auth, cors_origins, max_body_size)
    except ValueError as exc:
        raise ServerError(str(exc)) from None


def _warn_if_exposed(server: Server) -> None:
    # Printed, not warnings.warn: the key must reach the user's eyes once, in the cell.
    if is_loopback(server.host):
        return
    if server.api_key is None:
        how = "with NO key (auth=False): anyone who can reach this machine can call it"
    else:
        how = (
            f"requests need the header 'Authorization: Key {server.api_key}' (shown once; "
            "server.client and the playground send it)"
        )
    print(
        f"falkit: WARNING {server.app_name} listens on {server.url}, reachable from the "
        f"network; {how}",
        file=sys.stderr,
    )


def _same_place(
    old: Server, port: int | None, host: str, ws_max_size: int | None, security: SecuritySpec
) -> bool:
    # uvicorn's own settings (socket, frame cap, guard) cannot change under a running server.
    return (
        port in (None, old.port)
        and host == old.host
        and ws_max_size in (None, old.ws_max_size)
        and security == old.security
    )


def _start_new(
    app_cls: type[App],
    old: Server | None,
    *,
    port: int | None,
    host: str,
    ws_max_size: int | None,
    security: SecuritySpec,
) -> Server:
    began = time.perf_counter()
    action = ""
    if old is not None and port in (None, old.port):
        # Same port, new socket settings: the old server must let go of the port first.
        port, action = old.port, "restarted: server settings changed"
        old.stop()
        old = None
    server = Server(
        app_cls, host=host, port=port or 0, ws_max_size=ws_max_size, security=security
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
