"""Clients for a falkit (or fal) server: ``Client`` (blocking) and ``AsyncClient``.
Tests, widgets and users all go through these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from .core import (
    WS_OPTIONS,
    BaseClient,
    Decoder,
    Encoder,
    SSEParser,
    raise_for_status,
    transport_errors,
)
from .realtime import AsyncRealtimeSession, RealtimeSession


class Client(BaseClient):
    """A blocking client: ``call``, ``stream``, ``websocket`` and ``realtime``.

    Example::

        client = falkit.Client("http://127.0.0.1:8000")
        client.call("/", {"prompt": "hi"})
    """

    def __init__(self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None):
        super().__init__(url, timeout=timeout, headers=headers)
        import httpx

        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)

    def call(self, path: str, data: Any = None) -> Any:
        """POST ``data`` as JSON to ``path`` and return the decoded JSON answer; a non-2xx
        answer raises ``RemoteError`` with its status and detail."""
        with transport_errors(self.url):
            response = self._http.post(path, json=self._body(data))
        return self._answer(response)

    def get(self, path: str) -> Any:
        """GET ``path`` (``/health``, ``/openapi.json``) and return the decoded JSON."""
        with transport_errors(self.url):
            response = self._http.get(path)
        return self._answer(response)

    def stream(self, path: str, data: Any = None) -> Iterator[Any]:
        """POST to a streaming endpoint and yield its server-sent events, decoded; a stream
        cut before its end raises ``ConnectionLost``."""
        with (
            transport_errors(self.url),
            self._http.stream("POST", path, json=self._body(data)) as response,
        ):
            if not response.is_success:
                response.read()
                raise_for_status(response)
            parser = SSEParser()
            for line in response.iter_lines():
                yield from parser.feed(line)
            yield from parser.flush()

    @contextmanager
    def websocket(self, path: str) -> Iterator[Any]:
        """A raw WebSocket (``websockets``' sync connection) to ``path``."""
        from websockets.sync.client import connect

        with connect(
            self._ws_url(path), additional_headers=self.headers, open_timeout=self.timeout
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

        url = self._realtime_url(path, max_buffering)
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


class AsyncClient(BaseClient):
    """The asyncio twin of ``Client`` (same methods, awaitable)."""

    def __init__(self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None):
        super().__init__(url, timeout=timeout, headers=headers)
        import httpx

        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers)

    async def call(self, path: str, data: Any = None) -> Any:
        with transport_errors(self.url):
            response = await self._http.post(path, json=self._body(data))
        return self._answer(response)

    async def get(self, path: str) -> Any:
        with transport_errors(self.url):
            response = await self._http.get(path)
        return self._answer(response)

    async def stream(self, path: str, data: Any = None) -> AsyncIterator[Any]:
        with transport_errors(self.url):
            async for event in self._stream(path, data):
                yield event

    async def _stream(self, path: str, data: Any) -> AsyncIterator[Any]:
        async with self._http.stream("POST", path, json=self._body(data)) as response:
            if not response.is_success:
                await response.aread()
                raise_for_status(response)
            parser = SSEParser()
            async for line in response.aiter_lines():
                for event in parser.feed(line):
                    yield event
            for event in parser.flush():
                yield event

    @asynccontextmanager
    async def websocket(self, path: str) -> AsyncIterator[Any]:
        from websockets.asyncio.client import connect

        async with connect(
            self._ws_url(path), additional_headers=self.headers, open_timeout=self.timeout
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

        url = self._realtime_url(path, max_buffering)
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
