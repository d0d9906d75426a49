"""fal's realtime protocol on a WebSocket: binary msgpack frames in and out, errors as
``x-fal-error`` text frames followed by close 1000.

The mode comes from the handler's annotations, as in fal's SDK:

* unary: ``def h(self, input: In) -> Out``; inputs wait in a queue of ``buffering``
  (oldest dropped when full) and up to ``max_batch_size`` are passed at once
  (``h(self, *batch)``, cut short by the input's ``can_batch(other, n)``).
* server-streaming: the handler returns a sync or async iterator of outputs for one input.
* client-streaming: the first parameter is an ``AsyncIterator[In]``; one output.
* bidi: an ``AsyncIterator[In]`` in and an async iterator of outputs out.

When a session ends without an error (no input within ``session_timeout``, or a streaming
handler finished) fal sends a ``TIMEOUT`` error frame before closing; so does falkit.
Where fal can reorder outputs (a full outgoing queue makes it send around the queue),
falkit sends from the task that produces them: outputs always leave in order.

A sync (``def``) handler never runs on the event loop: each call runs in one of the
server's realtime worker threads (``Workers``, in ``workers.py``).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import functools
import inspect
import json
import logging
import typing
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .. import codec
from ..exceptions import ProtocolError
from ..routes import RouteSpec
from .workers import Workers

if TYPE_CHECKING:
    from fastapi import WebSocket

logger = logging.getLogger("falkit.server")

Mode = Literal["unary", "server_streaming", "client_streaming", "bidi"]

#: Largest realtime frame accepted by default (bytes); ``serve(..., ws_max_size=...)``
#: changes it per server. Larger frames get an ``INTERNAL_ERROR`` frame.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_TIMEOUT_REASON = "no inputs, reconnect when needed!"
_ASYNC_ITERATORS = (
    typing.AsyncIterator,
    typing.AsyncGenerator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
)
_SYNC_ITERATORS = (
    typing.Iterator,
    typing.Iterable,
    typing.Generator,
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
)
_DONE = object()


class ErrorFrame(TypedDict):
    """The text frame fal sends before closing a realtime session."""

    type: Literal["x-fal-error"]
    error: Literal["INTERNAL_ERROR", "TIMEOUT"]
    reason: str


def error_frame(error: Literal["INTERNAL_ERROR", "TIMEOUT"], reason: str) -> ErrorFrame:
    """An ``x-fal-error`` frame (sent as compact JSON text, as Starlette's ``send_json``)."""
    return {"type": "x-fal-error", "error": error, "reason": reason}


# -- annotations -> mode and models ------------------------------------------------------


def _unwrap(annotation: Any, kinds: tuple[Any, ...]) -> Any:
    """The item type when ``annotation`` is one of the iterator ``kinds``, else None."""
    if annotation is None:
        return None
    if annotation in kinds:
        return Any
    if typing.get_origin(annotation) in kinds:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _signature_types(handler: Callable[..., Any]) -> tuple[Any, Any]:
    params = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    hints = typing.get_type_hints(handler)
    first = hints.get(params[0].name) if params else None
    return first, hints.get("return")


def realtime_mode(handler: Callable[..., Any]) -> Mode:
    """The session mode fal derives from ``handler``'s annotations."""
    arg, ret = _signature_types(handler)
    streams_in = _unwrap(arg, _ASYNC_ITERATORS) is not None
    streams_out = _unwrap(ret, _ASYNC_ITERATORS) is not None
    if streams_in:
        return "bidi" if streams_out else "client_streaming"
    if streams_out or _unwrap(ret, _SYNC_ITERATORS) is not None:
        return "server_streaming"
    return "unary"


def input_model(handler: Callable[..., Any], spec: RouteSpec) -> Any:
    """The model inputs are validated into: ``input_modal``, else the (stream item)
    annotation of the handler's first parameter; ``None`` passes decoded data as is."""
    if spec.input_modal is not None:
        return spec.input_modal
    arg, _ = _signature_types(handler)
    item = _unwrap(arg, _ASYNC_ITERATORS)
    model = item if item is not None else arg
    return None if model is Any else model


def output_model(handler: Callable[..., Any], spec: RouteSpec) -> Any:
    """The model outputs are documented as: ``output_modal``, else the (stream item)
    return annotation; ``None`` when it is ``Any`` or missing."""
    if spec.output_modal is not None:
        return spec.output_modal
    _, ret = _signature_types(handler)
    item = _unwrap(ret, _ASYNC_ITERATORS)
    if item is None:
        item = _unwrap(ret, _SYNC_ITERATORS)
    model = item if item is not None else ret
    return None if model is Any else model


def to_wire(output: Any) -> Any:
    """A handler's output as msgpack-able data: pydantic models become dicts."""
    if isinstance(output, dict):
        return output
    if hasattr(output, "model_dump"):
        # Not mode="json": tensors and bytes stay native for the msgpack codec.
        return output.model_dump()
    raise TypeError(f"Expected a dict or pydantic model as output, got {type(output)}")


# -- one session -------------------------------------------------------------------------


class _SessionEnd(Exception):
    """The client went away, or sent nothing within ``session_timeout``."""


class Session:
    """One realtime connection: reads and validates inputs, runs the handler in its mode,
    and writes its outputs in order."""

    def __init__(
        self, websocket: WebSocket, handler: Callable[..., Any], spec: RouteSpec, model: Any
    ) -> None:
        self.ws = websocket
        self.handler = handler
        self.workers: Workers | None = None
        # ``handler`` as an awaitable call, decided once per session: a sync one runs in
        # a worker thread, and only the call does (see ``Workers``).
        sync = not inspect.iscoroutinefunction(handler)
        self.call = functools.partial(self.in_thread, handler) if sync else handler
        self.spec = spec
        self.buffering = _client_buffering(websocket) or spec.buffering
        self.model = model
        # Decided once per session, not per message: whether inputs are validated, and
        # the disconnect exception of the server's WebSocket.
        self.validate = model.model_validate if hasattr(model, "model_validate") else None
        from starlette.websockets import WebSocketDisconnect

        self.disconnect = WebSocketDisconnect
        self.decode = spec.decode_message or codec.decode
        self.encode = spec.encode_message or codec.encode
        self.max_size = _max_message_size(websocket)

    # -- inputs --

    async def receive(self) -> Any:
        """The next validated input; ``_SessionEnd`` on disconnect or idle timeout."""
        timeout = self.spec.session_timeout
        try:
            # No wait_for without a timeout: one coroutine frame fewer per message.
            message = await (
                self.ws.receive()
                if timeout is None
                else asyncio.wait_for(self.ws.receive(), timeout)
            )
        except (asyncio.TimeoutError, self.disconnect):
            raise _SessionEnd from None
        if message["type"] == "websocket.disconnect":
            raise _SessionEnd
        frame = message.get("bytes")
        if frame is None:
            raise ProtocolError("text frames are not accepted: send binary msgpack frames")
        if len(frame) > self.max_size:
            raise ProtocolError(
                f"message of {len(frame)} bytes exceeds the limit of {self.max_size} bytes; "
                "raise it with falkit.serve(..., ws_max_size=...)"
            )
        return self._validate(self.decode(frame))

    def _validate(self, data: Any) -> Any:
        if self.validate is None:
            return data
        try:
            return self.validate(data)
        except Exception as exc:
            raise ProtocolError(f"input does not fit {self.model.__name__}: {exc}") from exc

    async def inputs(self) -> AsyncIterator[Any]:
        """Inputs as an async iterator (client-streaming and bidi); ends like fal's."""
        while True:
            try:
                item = await self.receive()
            except _SessionEnd:
                return
            yield item

    # -- outputs --

    async def emit(self, output: Any) -> None:
        """Send one output; ``_SessionEnd`` once the client is gone.

        Outputs are sent by the one task that produces them, so they leave in order by
        construction. fal hands them to an emitter task through a bounded queue and, when
        that queue is full, sends around it, which can reorder outputs. The transport's
        own write buffer still overlaps sending with the handler's next step."""
        frame = self.encode(to_wire(output))
        try:
            await self.ws.send_bytes(frame)
        except (OSError, RuntimeError) as exc:  # uvicorn's ClientDisconnected is an OSError
            raise _SessionEnd from exc

    # -- the sync handler's threads --

    def in_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` in a worker thread; the future has its result or exception."""
        workers = self.workers
        if workers is None:
            workers = self.workers = Workers.enter()
        return workers.run(fn, *args)

    # -- the whole session --

    async def run(self, mode: Mode) -> None:
        await self.ws.accept()
        try:
            await self._serve(mode)
        finally:
            if self.workers is not None:
                await self.workers.leave()

    async def _serve(self, mode: Mode) -> None:
        try:
            await _MODES[mode](self)
        except (_SessionEnd, self.disconnect):
            return
        except Exception as exc:
            if not isinstance(exc, ProtocolError):
                logger.exception("realtime handler %s failed", self.spec.method)
            await self._close_with(error_frame("INTERNAL_ERROR", str(exc)))
            return
        await self._close_with(error_frame("TIMEOUT", _TIMEOUT_REASON))

    async def _close_with(self, frame: ErrorFrame) -> None:
        # The client may already be gone; nothing is left to tell it then.
        with contextlib.suppress(Exception):
            await self.ws.send_text(json.dumps(frame, separators=(",", ":")))
            await self.ws.close(1000)


def _client_buffering(websocket: WebSocket) -> int | None:
    """The ``max_buffering`` a client asked for in the URL (1..60; fal_client and fal-js
    send it, and fal applies it in its gateway). Locally it becomes the session's
    ``buffering``: the oldest queued inputs beyond it are dropped."""
    value = websocket.query_params.get("max_buffering", "")
    if not value.isdigit() or not 1 <= int(value) <= 60:
        return None
    return int(value)


def _max_message_size(websocket: WebSocket) -> int:
    state = getattr(websocket.app, "state", None)
    return getattr(state, "ws_max_size", None) or DEFAULT_MAX_MESSAGE_SIZE


def _next_or_done(iterator: typing.Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def _outputs(session: Session, result: Any) -> AsyncIterator[Any]:
    """Iterate a handler's sync or async iterator; sync steps run in a worker thread."""
    if hasattr(result, "__aiter__"):
        async with _closing(result):
            async for item in result:
                yield item
        return
    if isinstance(result, dict) or not hasattr(result, "__iter__"):
        raise TypeError(f"Expected an iterator of outputs, got {type(result)}")
    iterator = iter(result)
    while (item := await session.in_thread(_next_or_done, iterator)) is not _DONE:
        yield item


# -- modes -------------------------------------------------------------------------------


async def _unary(session: Session) -> None:
    """Inputs are read in the background into a queue of ``buffering`` (oldest dropped);
    the handler takes batches from it until the client goes idle or away."""
    if session.buffering is None and session.spec.max_batch_size == 1:
        await _unary_inline(session)
        return
    queue: deque[Any] = deque(maxlen=session.buffering)
    ready, room = asyncio.Event(), asyncio.Event()
    reader = asyncio.create_task(_read_into(session, queue, ready, room))
    try:
        while True:
            if not queue:
                if reader.done():
                    reader.result()
                    return
                ready.clear()
                await ready.wait()
                continue
            batch = _take_batch(queue, session.spec.max_batch_size)
            room.set()
            await session.emit(await session.call(*batch))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, _SessionEnd):
            await reader


async def _unary_inline(session: Session) -> None:
    """Unbuffered, unbatched unary: nothing is ever dropped or grouped, so inputs are read
    in the same task, sparing a task switch per message against the reader/queue path;
    inputs that arrive meanwhile wait in uvicorn's bounded queue, then in TCP."""
    while True:
        try:
            item = await session.receive()
        except _SessionEnd:
            return
        await session.emit(await session.call(item))


# Without ``buffering`` nothing may be dropped, so a client sending faster than the handler
# is slowed down instead: past this many waiting inputs the reader stops reading, and
# uvicorn's bounded queue and TCP push back on the client. Measured before: a flood of
# 64 KiB frames grew the server by 117 MiB in 5 s.
UNBUFFERED_LIMIT = 64


async def _read_into(
    session: Session, queue: deque[Any], ready: asyncio.Event, room: asyncio.Event
) -> None:
    try:
        while True:
            if queue.maxlen is None and len(queue) >= UNBUFFERED_LIMIT:
                room.clear()
                await room.wait()
                continue
            queue.append(await session.receive())
            ready.set()
    except _SessionEnd:
        return
    finally:
        ready.set()


def _take_batch(queue: deque[Any], max_batch_size: int) -> list[Any]:
    first = queue.popleft()
    batch = [first]
    can_batch = getattr(first, "can_batch", None)
    while queue and len(batch) < max_batch_size:
        if can_batch is not None and not can_batch(queue[0], len(batch)):
            break
        batch.append(queue.popleft())
    return batch


async def _server_streaming(session: Session) -> None:
    try:
        first = await session.receive()
    except _SessionEnd:
        return  # fal closes with its TIMEOUT frame here too
    if inspect.isasyncgenfunction(session.handler):
        result = session.handler(first)
    else:
        result = await session.call(first)
    await _emit_all(session, _outputs(session, result))


async def _client_streaming(session: Session) -> None:
    if not inspect.iscoroutinefunction(session.handler):
        raise TypeError("client-streaming realtime handlers must be `async def`")
    result = await session.handler(session.inputs())
    if hasattr(result, "__aiter__"):
        raise TypeError("Expected a single output for client-streaming realtime")
    await session.emit(result)


async def _bidi(session: Session) -> None:
    handler = session.handler
    if inspect.isasyncgenfunction(handler):
        result = handler(session.inputs())
    elif inspect.iscoroutinefunction(handler):
        result = await handler(session.inputs())
    else:
        raise TypeError("bidirectional realtime handlers must be `async def`")
    if not hasattr(result, "__aiter__"):
        raise TypeError("Expected an async iterator output for bidirectional realtime")
    await _emit_all(session, result)


def _closing(iterator: Any) -> Any:
    """Close an async generator when the session stops early (client gone, error), so its
    ``finally`` blocks run now, not whenever the loop shuts down."""
    if hasattr(iterator, "aclose"):
        return contextlib.aclosing(iterator)
    return contextlib.nullcontext()


async def _emit_all(session: Session, outputs: Any) -> None:
    async with _closing(outputs):
        async for output in outputs:
            await session.emit(output)


_MODES: dict[Mode, Callable[[Session], Awaitable[None]]] = {
    "unary": _unary,
    "server_streaming": _server_streaming,
    "client_streaming": _client_streaming,
    "bidi": _bidi,
}


def realtime_endpoint(handler: Callable[..., Any], spec: RouteSpec) -> Callable[[WebSocket], Any]:
    """The WebSocket endpoint serving ``handler`` (a bound method) over fal's protocol."""
    from fastapi import WebSocket

    mode = realtime_mode(handler)
    model = input_model(handler, spec)

    async def session(websocket: WebSocket) -> None:
        await Session(websocket, handler, spec, model).run(mode)

    # This module uses string annotations; FastAPI needs the real class to inject it.
    session.__annotations__["websocket"] = WebSocket
    return session
