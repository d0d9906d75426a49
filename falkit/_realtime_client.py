"""Client sessions on a ``@fal.realtime`` route (blocking and asyncio), as
``Client.realtime`` / ``AsyncClient.realtime`` open them.

As fal-js does, a ``TIMEOUT`` error frame ends the session quietly (``recv()`` returns
``None``, iteration stops) and ``INTERNAL_ERROR`` raises ``RealtimeError``. Sends can be
throttled like fal-js's ``throttleInterval``: within the interval only the latest input
is kept, and it goes out when the interval has passed (or before the next ``recv()``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from . import codec
from .exceptions import RealtimeError

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]

#: Connect options shared by both sessions: no size cap on outputs (fal_client sets none),
#: and no per-message deflate: it costs more than it saves on tensors and images.
WS_OPTIONS: dict[str, Any] = {"max_size": None, "compression": None}


def payload(data: Any) -> Any:
    """A pydantic model as a dict (tensors kept native); anything else unchanged."""
    return data.model_dump() if hasattr(data, "model_dump") else data


class _Throttle:
    """Keeps at most one pending frame; says when a frame may go out."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval or 0.0
        self.last = float("-inf")
        self.pending: bytes | None = None

    def offer(self, frame: bytes) -> bytes | None:
        """The frame to send now, or None when it must wait (replacing an older one)."""
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.pending = now, None
            return frame
        self.pending = frame
        return None

    def due_in(self) -> float:
        return max(0.0, self.last + self.interval - time.monotonic())

    def take(self) -> bytes | None:
        frame, self.pending = self.pending, None
        if frame is not None:
            self.last = time.monotonic()
        return frame


class _Frames:
    """Turns received frames into outputs; remembers that the session ended."""

    def __init__(self, decode: Decoder | None) -> None:
        self.decode = decode or codec.decode
        self.ended = False

    def read(self, message: str | bytes) -> Any:
        if isinstance(message, (bytes, bytearray, memoryview)):
            return self.decode(bytes(message))
        frame = json.loads(message)
        if not (isinstance(frame, dict) and frame.get("type", "").startswith("x-fal-")):
            return frame
        if frame["type"] == "x-fal-error":
            self.ended = True
            if frame.get("error") == "TIMEOUT":
                return None
            raise RealtimeError(frame.get("error", ""), frame.get("reason", ""))
        return _SKIP  # x-fal-message (timings): metadata, skipped as fal_client does


_SKIP = object()


def _closed(exc: Exception) -> None:
    from websockets.exceptions import ConnectionClosedOK

    if not isinstance(exc, ConnectionClosedOK):
        raise RealtimeError("CONNECTION_CLOSED", str(exc)) from exc


class RealtimeSession:
    """A blocking realtime session: ``send(obj)``, ``recv()``, iteration.

    ``recv()`` returns the next output, or ``None`` once the server ended the session
    (``TIMEOUT`` frame or a normal close); an ``INTERNAL_ERROR`` frame raises
    ``RealtimeError``."""

    def __init__(
        self,
        ws: Any,
        *,
        encode_message: Encoder | None = None,
        decode_message: Decoder | None = None,
        throttle_interval: float | None = None,
    ) -> None:
        self._ws = ws
        self._encode = encode_message or codec.encode
        self._frames = _Frames(decode_message)
        self._throttle = _Throttle(throttle_interval)

    def send(self, obj: Any) -> None:
        """Send one input (a dict or pydantic model), throttled when asked to."""
        frame = self._throttle.offer(self._encode(payload(obj)))
        if frame is not None:
            self._ws.send(frame)

    def flush(self) -> None:
        """Send the input held back by throttling, if any."""
        frame = self._throttle.take()
        if frame is not None:
            self._ws.send(frame)

    def recv(self, timeout: float | None = None) -> Any:
        """The next output; ``None`` when the session has ended."""
        from websockets.exceptions import ConnectionClosed

        if self._throttle.pending is not None:
            time.sleep(self._throttle.due_in())
            self.flush()
        while not self._frames.ended:
            try:
                output = self._frames.read(self._ws.recv(timeout))
            except ConnectionClosed as exc:
                _closed(exc)
                return None
            if output is not _SKIP:
                return output
        return None

    def __iter__(self) -> Iterator[Any]:
        while (output := self.recv()) is not None:
            yield output

    def close(self) -> None:
        self._ws.close()


class AsyncRealtimeSession:
    """The asyncio twin of ``RealtimeSession``; a throttled input is sent by a timer."""

    def __init__(
        self,
        ws: Any,
        *,
        encode_message: Encoder | None = None,
        decode_message: Decoder | None = None,
        throttle_interval: float | None = None,
    ) -> None:
        self._ws = ws
        self._encode = encode_message or codec.encode
        self._frames = _Frames(decode_message)
        self._throttle = _Throttle(throttle_interval)
        self._timer: asyncio.Task[None] | None = None

    async def send(self, obj: Any) -> None:
        frame = self._throttle.offer(self._encode(payload(obj)))
        if frame is not None:
            await self._ws.send(frame)
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._send_later())

    async def _send_later(self) -> None:
        await asyncio.sleep(self._throttle.due_in())
        await self.flush()

    async def flush(self) -> None:
        frame = self._throttle.take()
        if frame is not None:
            await self._ws.send(frame)

    async def recv(self) -> Any:
        from websockets.exceptions import ConnectionClosed

        while not self._frames.ended:
            try:
                output = self._frames.read(await self._ws.recv())
            except ConnectionClosed as exc:
                _closed(exc)
                return None
            if output is not _SKIP:
                return output
        return None

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (output := await self.recv()) is not None:
            yield output

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._ws.close()
