"""``Server``: uvicorn in a daemon thread with its own event loop. Never on the kernel's
loop: a synchronous client call from a cell would deadlock against it.

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

This module: the thread, uvicorn and request dispatch. Making, swapping, restarting and
retiring generations is ``generations.Generations``, a component each server holds; the
registry of servers (``serve()``) is ``registry``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..app import App, assigned_device
from ..asgi import (
    DEFAULT_MAX_MESSAGE_SIZE,
    FileStore,
    LimitSpec,
    QueuedRequests,
    SecuritySpec,
    auth_headers,
    build_asgi,
)
from ..client import Client
from ..devices import DeviceSpec, describe_device, pick_device
from ..exceptions import PortInUseError, ServerError, SetupError
from .card import card_html, card_text
from .connections import ConnectionSpec
from .generations import Generations, resolve_device, setup_failed, startup_timeout_error
from .kernel import install as install_kernel_first
from .kernel import yield_to_kernel
from .logs import LogRing, current_ring
from .logs import ensure_routed as ensure_log_routing
from .logs import install as install_log_routing
from .proxy import proxy_root_path
from .startup import StartupProgress
from .stats import RequestStats

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ..routes import RouteSpec

_client_lock = threading.Lock()
#: uvicorn's frame cap over the server's ``ws_max_size``: realtime frames up to this far
#: over the limit get fal's error frame, larger ones a bare close 1009.
WS_HEADROOM = 64 * 1024


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


class Server:
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
        connections: ConnectionSpec | None = None,
        limits: LimitSpec | None = None,
        on_stop: Callable[[Server], None] | None = None,
    ) -> None:
        self.host = host
        self.security = security or SecuritySpec()
        self.connections = connections or ConnectionSpec()
        self.ws_max_size = ws_max_size or DEFAULT_MAX_MESSAGE_SIZE
        self.ring = LogRing()
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._queue = QueuedRequests()  # fal's queue: kept across swaps and restarts
        self._files = FileStore()  # fal's storage (uploads), likewise
        self.generations = Generations(
            app_cls,
            limits if limits is not None else LimitSpec.of(app_cls),
            ring=self.ring,
            build=self._build,
            running=lambda: self.running,
            lost=self.stop,
        )
        self._on_stop = on_stop
        self._uvicorn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._setup_error: BaseException | None = None
        self._stopped = threading.Event()
        self._stats = RequestStats()
        self._client: Client | None = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"falkit-{self.app_name}", daemon=True
        )

    def _build(self, instance: App, limits: LimitSpec) -> Any:
        # Behind JupyterHub/Binder the browser reaches this port under /proxy/PORT/: /docs
        # must load openapi.json from there.
        return build_asgi(
            instance,
            lifespan=False,
            security=self.security,
            limits=limits,
            queue=self._queue,
            files=self._files,
            ws_max_size=self.ws_max_size,
            root_path=proxy_root_path(self.port),
        )

    # -- public surface ----------------------------------------------------------------

    @property
    def app_cls(self) -> type[App]:
        """The App class served now (the latest one served under this name)."""
        return self.generations.app_cls

    @property
    def app_name(self) -> str:
        return self.app_cls.app_name

    @property
    def setup_seconds(self) -> float | None:
        """How long the last ``setup()`` took; ``None`` before it ended."""
        return self.generations.setup_seconds

    @property
    def last_action(self) -> str:
        """What serving last did (started, swapped, restarted ...), for the card."""
        return self.generations.last_action

    @last_action.setter
    def last_action(self, value: str) -> None:
        self.generations.last_action = value

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
        return self.generations.limits

    @property
    def _instance(self) -> App | None:
        return self.generations.instance

    @property
    def device(self) -> DeviceSpec:
        """The device the app's models live on: name, total and used memory (torch's view
        for a GPU, the machine's RAM for ``cpu``). Never imports torch itself."""
        instance = self._instance
        kind = assigned_device(instance) if instance is not None else None
        if kind is None and "torch" in sys.modules:
            kind = pick_device(self.app_cls)
        return describe_device(kind or self.generations.device or "cpu")

    @property
    def client(self) -> Client:
        """A ``falkit.Client`` for this server (sending its API key, if it has one). One
        client per server, reused, so its connections are pooled; closed on ``stop()``."""
        with _client_lock:  # threads (the playground's, a user's) must share one client
            client = self._client
            if client is None or client.closed:
                client = self._client = Client(self.url, headers=auth_headers(self.api_key))
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
        if self._on_stop is not None:
            self._on_stop(self)
        self._handle_exit()
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
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._stopped.set()
        self.generations.drop_all()

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> Server:
        install_log_routing()
        install_kernel_first()  # the kernel's tuning and hooks (see _kernelfirst)
        self.generations.device = resolve_device(self.app_cls)
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
                raise setup_failed(self.app_cls, self._setup_error) from self._setup_error
            if not self._thread.is_alive():
                raise SetupError(
                    f"{self.app_cls.__name__} stopped while starting:\n{self.logs(20)}"
                )
            if deadline is not None and progress.elapsed > deadline:
                raise startup_timeout_error(self.app_cls, progress.elapsed)
            progress.tick()
            time.sleep(0.005)

    def _thread_main(self) -> None:
        current_ring.set(self.ring)
        loop = _new_event_loop()
        self._main = loop.create_task(self._serve())
        self._loop = self.generations.loop = loop
        try:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
        finally:
            loop.close()

    async def _serve(self) -> None:
        import uvicorn

        try:
            await self.generations.prepare_first()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._setup_error = exc
            return
        # uvicorn's protocol (and with it the server stack) loads in the server's thread,
        # not on ``import falkit`` (benchmarks/startup.py).
        from .protocol import bounded_protocol

        config = uvicorn.Config(
            self._dispatch,
            log_config=None,
            lifespan="off",
            interface="asgi3",
            access_log=False,
            timeout_graceful_shutdown=5,
            http=bounded_protocol(self.connections),  # bounds before headers complete
            timeout_keep_alive=self.connections.keep_alive_timeout,  # type: ignore[arg-type]
            # The realtime layer enforces ``ws_max_size`` itself and answers an oversize
            # frame with fal's error frame; uvicorn's cap (a bare 1009 close) sits just
            # above, so no message much larger is ever buffered. No permessage-deflate: a
            # 60 KiB frame inflated to 60 MiB before any size check, and falkit's clients
            # never ask for it (it costs more than it saves on tensors and images).
            ws_max_size=self.ws_max_size + WS_HEADROOM,
            ws_per_message_deflate=False,
        )
        self._uvicorn = uvicorn.Server(config)
        try:
            await self._uvicorn.serve(sockets=[self._sock])
        finally:
            await self._queue.aclose()  # no queued request outlives the loop or teardown
            await self.generations.teardown_all()

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One attribute read per request: a swap replaces ``generations.current``
        # atomically, so a request or session in flight finishes on the generation
        # (handlers) it started on, and the count tells a retiring generation when it
        # may be torn down.
        yield_to_kernel()  # a cell the kernel is receiving or answering goes first
        gen = self.generations.current
        assert gen is not None
        ensure_log_routing()
        gen.active += 1
        # Work that outlives this call (a request through fal's queue, answered at its
        # submit) holds the generation too (``falkit.asgi.gateway``).
        scope["falkit.hold"] = gen.hold
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

    def _handle_exit(self) -> None:
        # fal calls ``handle_exit()`` when its runner is told to stop, before requests in
        # flight finish: the same moment here (``falkit serve`` reaches it on SIGTERM).
        instance = self._instance
        if instance is None or not self.running:
            return
        try:
            instance.handle_exit()
        except Exception:
            logging.getLogger("falkit.server").exception(
                "%s.handle_exit() failed", type(instance).__name__
            )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(card_text(self))

    def _repr_html_(self) -> str:
        return card_html(self)
