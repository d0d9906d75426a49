"""Point the real ``fal_client`` package (``pip install fal-client``) at local falkit
servers, so code written for fal runs unchanged against the apps in your notebook::

    server = falkit.serve(MyApp)
    with falkit.compat.use_fal_client(server) as app_id:      # "local/my-app"
        fal_client.run(app_id, {"prompt": "hi"})
        for event in fal_client.stream(app_id, {"prompt": "hi"}): ...
        handle = fal_client.submit(app_id, {"prompt": "hi"}); handle.get()
        with fal_client.realtime(app_id) as rt: rt.send({...}); rt.recv()
        url = fal_client.upload_file("cat.png")                # served back locally

How: fal_client builds its URLs from module constants fixed at import
(``https://{FAL_RUN_HOST}/``, ``https://{FAL_QUEUE_RUN_HOST}/``, ``wss://...``), so its
environment variables cannot switch it to plain ``http``/``ws`` on loopback. While a
``use_fal_client`` block is open, those constants name a placeholder host, and fal_client's
HTTP transport and WebSocket connect (looked up by name on each call) send each request to
the server of the app it names, with that server's key; ``REST_URL`` and ``CDN_URL``
(tokens, uploads) go to the server entered last. Blocks nest and overlap: two servers served
at once are each reached by their own app id, from any thread, sync or async. Everything is
put back when the last block ends; ``FAL_KEY`` is set to a placeholder meanwhile when none is
set (fal_client refuses to run without one), or to the key of a server that needs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ..client import ws_url
from ..exceptions import MissingDependency

_PLACEHOLDER_KEY = "falkit-local:placeholder"


def _fal_client_module() -> Any:
    try:
        import fal_client.client as module
    except ImportError:
        raise MissingDependency(
            "fal_client is not installed; install it with `pip install fal-client`"
        ) from None
    return module


# fal_client's default clients cache their credentials and HTTP client on first use; the
# local session gets fresh ones, so neither a placeholder key leaks out afterwards nor a
# real key (or a pooled connection to fal) leaks in.
_CACHED = ("_auth", "_client", "_token_manager")


def _default_clients() -> list[Any]:
    import fal_client

    return [c for c in (fal_client.sync_client, fal_client.async_client) if c is not None]


def _take_cached(client: Any) -> dict[str, Any]:
    return {name: client.__dict__.pop(name) for name in _CACHED if name in client.__dict__}


def _close_quietly(http: Any) -> None:
    """Close the local session's pooled HTTP client; an async one is closed on the running
    loop (a kernel's, where it was made) or, with none running, on a fresh one."""
    with contextlib.suppress(Exception):
        if not hasattr(http, "aclose"):
            http.close()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(http.aclose())
        else:
            _closing.add(task := loop.create_task(http.aclose()))
            task.add_done_callback(_closing.discard)


_closing: set[Any] = set()  # strong references: the loop keeps only weak ones to tasks


@contextlib.contextmanager
def _fresh_default_clients() -> Iterator[None]:
    clients = _default_clients()
    saved = [_take_cached(client) for client in clients]
    try:
        yield
    finally:
        for client, before in zip(clients, saved, strict=True):
            local = _take_cached(client)
            if "_client" in local:
                _close_quietly(local["_client"])
            client.__dict__.update(before)


# -- routing: one placeholder host, each request to the server of the app it names ---------

_HOST = "falkit.local"  # never resolved: every request to it is routed first
_SWAPPED = ("RUN_URL_FORMAT", "QUEUE_URL_FORMAT", "REALTIME_URL_FORMAT", "REST_URL", "CDN_URL")
_HOOKS = ("BackupDomainTransport", "AsyncBackupDomainTransport")
_WS_HOOKS = ("_connect_sync_ws", "_connect_async_ws")


class _Routes:
    """The servers open ``use_fal_client`` blocks route to, by app name, and what the
    first block swapped in fal_client (put back by the last)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.servers: list[Any] = []  # in the order their blocks were entered
        self.saved: dict[str, Any] = {}
        self.saved_key: str | None = None  # the user's FAL_KEY, put back at the end

    def server_for(self, path: str) -> Any:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == [".fal", "queue"]:
            parts = parts[2:]
        with self.lock:
            for server in reversed(self.servers):
                if len(parts) >= 2 and parts[1] == server.app_name:
                    return server
            if not self.servers:
                raise RuntimeError("fal_client was routed to falkit outside use_fal_client")
            return self.servers[-1]

    def rewrite(self, url: str, headers: Any) -> str:
        """``url`` (on the placeholder host) as the real server's, ``headers`` given that
        server's key; other URLs unchanged."""
        parts = urlsplit(url)
        if parts.hostname != _HOST:
            return url
        server = self.server_for(parts.path)
        base = ws_url(server.url) if parts.scheme.startswith("ws") else server.url
        key = server.api_key
        for name in [k for k in headers if k.lower() == "authorization"]:
            del headers[name]
        if key:
            headers["Authorization"] = f"Key {key}"
        query = f"?{parts.query}" if parts.query else ""
        return f"{base}{parts.path}{query}"


_routes = _Routes()


def _routed(request: Any) -> Any:
    import httpx

    headers = dict(request.headers)
    url = _routes.rewrite(str(request.url), headers)
    if url != str(request.url):
        request.url = httpx.URL(url)
        request.headers = httpx.Headers({k: v for k, v in headers.items() if k.lower() != "host"})
        request.headers["Host"] = request.url.netloc.decode("ascii")
    return request


def _transports() -> tuple[type, type]:
    import httpx

    class RoutingTransport(httpx.BaseTransport):
        def __init__(self, **_: Any) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return self._inner.handle_request(_routed(request))

        def close(self) -> None:
            self._inner.close()

    class AsyncRoutingTransport(httpx.AsyncBaseTransport):
        def __init__(self, **_: Any) -> None:
            self._inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await self._inner.handle_async_request(_routed(request))

        async def aclose(self) -> None:
            await self._inner.aclose()

    return RoutingTransport, AsyncRoutingTransport


def _ws_hooks() -> tuple[Any, Any]:
    sync_connect, async_connect = (_routes.saved[name] for name in _WS_HOOKS)

    @contextlib.contextmanager
    def connect_sync(url: str, headers: dict[str, str] | None = None) -> Iterator[Any]:
        headers = dict(headers or {})
        with sync_connect(_routes.rewrite(url, headers), headers=headers) as ws:
            yield ws

    @contextlib.asynccontextmanager
    async def connect_async(url: str, headers: dict[str, str] | None = None) -> Any:
        headers = dict(headers or {})
        async with async_connect(_routes.rewrite(url, headers), headers=headers) as ws:
            yield ws

    return connect_sync, connect_async


def _point_rest_at(module: Any, server: Any) -> None:
    # Tokens and uploads go straight to the server (fal_client's CDN clients are plain
    # httpx clients, not routed): with that server's key as fal_client's credentials.
    module.REST_URL = f"{server.url}/.fal/rest"
    module.CDN_URL = f"{server.url}/.fal/cdn"
    if server.api_key:
        os.environ["FAL_KEY"] = server.api_key
    elif _routes.saved_key is None and not os.environ.get("FAL_KEY_ID"):
        os.environ["FAL_KEY"] = _PLACEHOLDER_KEY  # fal_client refuses to run without one
    elif _routes.saved_key is not None:
        os.environ["FAL_KEY"] = _routes.saved_key


def _enter(module: Any, server: Any) -> None:
    with _routes.lock:
        if not _routes.servers:
            missing = [n for n in (*_SWAPPED, *_HOOKS, *_WS_HOOKS) if not hasattr(module, n)]
            if missing:
                raise MissingDependency(
                    f"this fal_client has no {', '.join(missing)}: falkit needs fal-client "
                    ">= 1.0 (pip install -U fal-client)"
                )
            _routes.saved = {n: getattr(module, n) for n in (*_SWAPPED, *_HOOKS, *_WS_HOOKS)}
            _routes.saved_key = os.environ.get("FAL_KEY")
            module.RUN_URL_FORMAT = f"http://{_HOST}/"
            module.QUEUE_URL_FORMAT = f"http://{_HOST}/.fal/queue/"
            module.REALTIME_URL_FORMAT = f"ws://{_HOST}/"
            module.BackupDomainTransport, module.AsyncBackupDomainTransport = _transports()
            module._connect_sync_ws, module._connect_async_ws = _ws_hooks()
        _routes.servers.append(server)
        _point_rest_at(module, server)


def _leave(module: Any, server: Any) -> None:
    with _routes.lock:
        _routes.servers.remove(server)
        if _routes.servers:
            _point_rest_at(module, _routes.servers[-1])
            return
        for name, value in _routes.saved.items():
            setattr(module, name, value)
        _routes.saved = {}
        if _routes.saved_key is None:
            os.environ.pop("FAL_KEY", None)
        else:
            os.environ["FAL_KEY"] = _routes.saved_key


@contextlib.contextmanager
def use_fal_client(server: Any, *, owner: str = "local") -> Iterator[str]:
    """Route ``fal_client`` (run, stream, submit/status/result/cancel, realtime,
    ws_connect, upload*) to ``server`` (a running ``falkit.Server``) and yield the app id to
    call it by, ``"<owner>/<app-name>"``. Blocks for several servers may be open at once;
    everything is restored when the last one ends, even after an error."""
    module = _fal_client_module()
    _enter(module, server)
    try:
        with _fresh_default_clients():
            yield f"{owner}/{server.app_name}"
    finally:
        _leave(module, server)
