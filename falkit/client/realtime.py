"""Client sessions on a ``@fal.realtime`` route (blocking and asyncio), as
``Client.realtime`` / ``AsyncClient.realtime`` open them.

As fal-js does, a ``TIMEOUT`` error frame ends the session quietly (``recv()`` returns
``None``, iteration stops) and ``INTERNAL_ERROR`` raises ``RealtimeError``. Sends can be
throttled like fal-js's ``throttleInterval``: within the interval only the latest input
is kept, and it goes out when the interval has passed (or before the next ``recv()``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .core import SKIP, BaseRealtimeSession, closed


class RealtimeSession(BaseRealtimeSession):
    """A blocking realtime session: ``send(obj)``, ``recv()``, iteration.

    ``recv()`` returns the next output, or ``None`` once the server ended the session
    (``TIMEOUT`` frame or a normal close); an ``INTERNAL_ERROR`` frame raises
    ``RealtimeError``."""

    def send(self, obj: Any) -> None:
        """Send one input (a dict or pydantic model), throttled when asked to."""
        frame = self._outgoing(obj)
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
                closed(exc)
                return None
            if output is not SKIP:
                return output
        return None

    def __iter__(self) -> Iterator[Any]:
        while (output := self.recv()) is not None:
            yield output

    def close(self) -> None:
        self._ws.close()


class AsyncRealtimeSession(BaseRealtimeSession):
    """The asyncio twin of ``RealtimeSession``; a throttled input is sent by a timer."""

    _timer: asyncio.Task[None] | None = None  # sends the input the throttle held back

    async def send(self, obj: Any) -> None:
        frame = self._outgoing(obj)
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
                closed(exc)
                return None
            if output is not SKIP:
                return output
        return None

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (output := await self.recv()) is not None:
            yield output

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._ws.close()
