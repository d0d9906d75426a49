"""Clients for a falkit (or fal) server: ``Client`` (blocking) and ``AsyncClient``.
Tests, widgets and users all go through these."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from ._realtime_client import (
    WS_OPTIONS,
    AsyncRealtimeSession,
    Decoder,
    Encoder,
    RealtimeSession,
)
from .exceptions import ConnectionLost, RemoteError

if TYPE_CHECKING:
    # Imported where a client is made: with click and rich installed (jupyter brings
    # them), ``import httpx`` loads its CLI too, ~0.4 s of ``import falkit`` (-X importtime).
    import httpx

__all__ = ["AsyncClient", "AsyncRealtimeSession", "Client", "RealtimeSession"]


def _ws_url(base: str, path: str) -> str:
    return "ws" + base[len("http") :] + path if base.startswith("http") else base + path


def _realtime_url(url: str, max_buffering: int | None) -> str:
    if max_buffering is None:
        return url
    if not 1 <= max_buffering <= 60:
        raise ValueError("max_buffering must be between 1 and 60, as fal's clients require")
    return f"{url}?max_buffering={max_buffering}"


def _payload(data: Any) -> Any:
    if hasattr(data, "model_dump"):
        return data.model_dump(mode="json")
    return data


@contextmanager
def _transport_errors(url: str) -> Iterator[None]:
    """httpx's transport errors as falkit's ``ConnectionLost`` (translated here only)."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise ConnectionLost(
            f"no complete answer from {url}: {exc or type(exc).__name__} (is the server running?)"
        ) from exc


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    raise RemoteError(
        response.status_code,
        detail,
        url=str(response.url),
        request_id=response.headers.get("x-fal-request-id"),
    )


class _SSEParser:
    """Server-sent events, line by line: ``data:`` lines up to a blank line make one event,
    decoded as JSON when it is JSON (as fal_client's ``stream`` yields them)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> list[Any]:
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip())
            return []
        return self.flush() if not line else []

    def flush(self) -> list[Any]:
        if not self._data:
            return []
        text, self._data = "\n".join(self._data), []
        try:
            return [json.loads(text)]
        except ValueError:
            return [text]


class Client:
    """A blocking client: ``call``, ``stream``, ``websocket`` and ``realtime``.

    Example::

        client = falkit.Client("http://127.0.0.1:8000")
        client.call("/", {"prompt": "hi"})
    """

    def __init__(self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        import httpx

        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)

    def call(self, path: str, data: Any = None) -> Any:
        """POST ``data`` as JSON to ``path`` and return the decoded JSON answer; a non-2xx
        answer raises ``RemoteError`` with its status and detail."""
        with _transport_errors(self.url):
            response = self._http.post(path, json=_payload(data if data is not None else {}))
        _raise_for_status(response)
        return response.json()

    def get(self, path: str) -> Any:
        """GET ``path`` (``/health``, ``/openapi.json``) and return the decoded JSON."""
        with _transport_errors(self.url):
            response = self._http.get(path)
        _raise_for_status(response)
        return response.json()

    def stream(self, path: str, data: Any = None) -> Iterator[Any]:
        """POST to a streaming endpoint and yield its server-sent events, decoded; a stream
        cut before its end raises ``ConnectionLost``."""
        with (
            _transport_errors(self.url),
            self._http.stream("POST", path, json=_payload(data or {})) as response,
        ):
            if not response.is_success:
                response.read()
                _raise_for_status(response)
            parser = _SSEParser()
            for line in response.iter_lines():
                yield from parser.feed(line)
            yield from parser.flush()

    @contextmanager
    def websocket(self, path: str) -> Iterator[Any]:
        """A raw WebSocket (``websockets``' sync connection) to ``path``."""
        from websockets.sync.client import connect

        with connect(
            _ws_url(self.url, path), additional_headers=self.headers, open_timeout=self.timeout
        ) as ws:
            yield ws

    @contextmanager
    def realtime(
        self,
        path: str,
        *,
        encode_message: Encoder | None = None,
        decode_message: Decoder | None = None,
        throttle_interval: float | None = None,
        max_buffering: int | None = None,
    ) -> Iterator[RealtimeSession]:
        """A session on a ``@fal.realtime`` route: ``send(obj)`` / ``recv()`` / iteration,
        msgpack frames. ``encode_message``/``decode_message`` swap the codec (e.g.
        ``falkit.codec.encode_tensors``/``decode_tensors`` for arrays); ``throttle_interval``
        (seconds, as fal-js's ``throttleInterval``, off by default) keeps only the latest
        input per interval; ``max_buffering`` (1..60) asks the server to keep at most that
        many queued inputs, as fal_client's. An ``INTERNAL_ERROR`` frame raises
        ``RealtimeError``; fal's ``TIMEOUT`` frame ends the session quietly (``recv()``
        returns ``None``).

        Example::

            with client.realtime("/realtime") as rt:
                rt.send({"prompt": "hi"})
                print(rt.recv())
        """
        from websockets.sync.client import connect

        url = _realtime_url(_ws_url(self.url, path), max_buffering)
        with connect(
            url, additional_headers=self.headers, open_timeout=self.timeout, **WS_OPTIONS
        ) as ws:
            yield RealtimeSession(
                ws,
                encode_message=encode_message,
                decode_message=decode_message,
                throttle_interval=throttle_interval,
            )

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._http.is_closed

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of ``Client`` (same methods, awaitable)."""

    def __init__(self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        import httpx

        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers)

    async def call(self, path: str, data: Any = None) -> Any:
        with _transport_errors(self.url):
            response = await self._http.post(path, json=_payload(data if data is not None else {}))
        _raise_for_status(response)
        return response.json()

    async def get(self, path: str) -> Any:
        with _transport_errors(self.url):
            response = await self._http.get(path)
        _raise_for_status(response)
        return response.json()

    async def stream(self, path: str, data: Any = None) -> AsyncIterator[Any]:
        with _transport_errors(self.url):
            async for event in self._stream(path, data):
                yield event

    async def _stream(self, path: str, data: Any) -> AsyncIterator[Any]:
        async with self._http.stream("POST", path, json=_payload(data or {})) as response:
            if not response.is_success:
                await response.aread()
                _raise_for_status(response)
            parser = _SSEParser()
            async for line in response.aiter_lines():
                for event in parser.feed(line):
                    yield event
            for event in parser.flush():
                yield event

    @asynccontextmanager
    async def websocket(self, path: str) -> AsyncIterator[Any]:
        from websockets.asyncio.client import connect

        async with connect(
            _ws_url(self.url, path), additional_headers=self.headers, open_timeout=self.timeout
        ) as ws:
            yield ws

    @asynccontextmanager
    async def realtime(
        self,
        path: str,
        *,
        encode_message: Encoder | None = None,
        decode_message: Decoder | None = None,
        throttle_interval: float | None = None,
        max_buffering: int | None = None,
    ) -> AsyncIterator[AsyncRealtimeSession]:
        """The asyncio twin of ``Client.realtime`` (same options)."""
        from websockets.asyncio.client import connect

        url = _realtime_url(_ws_url(self.url, path), max_buffering)
        async with connect(
            url, additional_headers=self.headers, open_timeout=self.timeout, **WS_OPTIONS
        ) as ws:
            session = AsyncRealtimeSession(
                ws,
                encode_message=encode_message,
                decode_message=decode_message,
                throttle_interval=throttle_interval,
            )
            try:
                yield session
            finally:
                await session.close()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
