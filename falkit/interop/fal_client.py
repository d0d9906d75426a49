"""Point the real ``fal_client`` package (``pip install fal-client``) at a local falkit
server, so code written for fal runs unchanged against the app in your notebook::

    server = falkit.serve(MyApp)
    with falkit.compat.use_fal_client(server) as app_id:      # "local/my-app"
        fal_client.run(app_id, {"prompt": "hi"})
        for event in fal_client.stream(app_id, {"prompt": "hi"}): ...
        handle = fal_client.submit(app_id, {"prompt": "hi"}); handle.get()
        with fal_client.realtime(app_id) as rt: rt.send({...}); rt.recv()

How: fal_client builds its URLs from module constants fixed at import
(``https://{FAL_RUN_HOST}/``, ``https://{FAL_QUEUE_RUN_HOST}/``, ``wss://...``), so the
``FAL_RUN_HOST`` environment variables cannot switch it to plain ``http``/``ws`` on
loopback. The helper swaps those constants (and ``REST_URL``, where realtime tokens come
from) for the server's URLs and puts them back on exit; it sets ``FAL_KEY`` to a
placeholder when none is set. The server answers fal's URL layout
``/<owner>/<app-name>/...``, the queue API and token requests (``falkit.asgi.gateway``).
The swap is process-wide: while it is active every ``fal_client`` call goes to the local
server, from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import Any

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


def _urls(base: str) -> dict[str, str]:
    base = base.rstrip("/")
    ws = ws_url(base)
    return {
        "RUN_URL_FORMAT": f"{base}/",
        "QUEUE_URL_FORMAT": f"{base}/.fal/queue/",
        "REALTIME_URL_FORMAT": f"{ws}/",
        "REST_URL": f"{base}/.fal/rest",
    }


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


@contextlib.contextmanager
def use_fal_client(server: Any, *, owner: str = "local") -> Iterator[str]:
    """Route ``fal_client`` (run, stream, submit/status/result/cancel, realtime) to
    ``server`` (a running ``falkit.Server``) and yield the app id to call it by,
    ``"<owner>/<app-name>"``. Everything is restored on exit, even after an error."""
    module = _fal_client_module()
    saved = {name: getattr(module, name) for name in _urls(server.url)}
    saved_key = os.environ.get("FAL_KEY")
    try:
        for name, value in _urls(server.url).items():
            setattr(module, name, value)
        if saved_key is None and not os.environ.get("FAL_KEY_ID"):
            # fal_client refuses to run without credentials; a local server needs none.
            os.environ["FAL_KEY"] = _PLACEHOLDER_KEY
        with _fresh_default_clients():
            yield f"{owner}/{server.app_name}"
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
        if saved_key is None:
            os.environ.pop("FAL_KEY", None)
