"""fal's realtime protocol on a WebSocket: binary msgpack frames in and out, errors as
``x-fal-error`` text frames followed by close 1000."""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from . import codec
from .exceptions import ProtocolError
from .routes import RouteSpec

if TYPE_CHECKING:
    from fastapi import WebSocket

logger = logging.getLogger("falkit.server")


class ErrorFrame(TypedDict):
    """The text frame fal sends before closing a realtime session on an error."""

    type: Literal["x-fal-error"]
    error: Literal["INTERNAL_ERROR", "TIMEOUT"]
    reason: str


def error_frame(error: Literal["INTERNAL_ERROR", "TIMEOUT"], reason: str) -> ErrorFrame:
    return {"type": "x-fal-error", "error": error, "reason": reason}


def input_model(handler: Callable[..., Any], spec: RouteSpec) -> Any:
    """The pydantic model inputs are validated into: ``input_modal`` or the annotation of
    the handler's first parameter (``None`` when it has none)."""
    if spec.input_modal is not None:
        return spec.input_modal
    params = list(inspect.signature(handler).parameters.values())
    if not params:
        return None
    hints = typing.get_type_hints(handler)
    return hints.get(params[0].name)


def to_wire(output: Any) -> Any:
    """A handler's output as msgpack-able data: pydantic models become dicts."""
    if hasattr(output, "model_dump"):
        return output.model_dump()
    if isinstance(output, dict):
        return output
    raise TypeError(f"Expected a dict or pydantic model as output, got {type(output)}")


def _validate(model: Any, data: Any) -> Any:
    if model is None or not hasattr(model, "model_validate"):
        return data
    try:
        return model.model_validate(data)
    except Exception as exc:
        raise ProtocolError(f"input does not fit {model.__name__}: {exc}") from exc


async def _call(handler: Callable[..., Any], arg: Any) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(arg)
    # Sync handlers run in a worker thread: the event loop keeps serving other sessions.
    return await asyncio.to_thread(handler, arg)


def realtime_endpoint(handler: Callable[..., Any], spec: RouteSpec) -> Callable[[WebSocket], Any]:
    """The WebSocket endpoint serving ``handler`` (a bound method) over fal's protocol."""
    from fastapi import WebSocket, WebSocketDisconnect

    model = input_model(handler, spec)

    async def session(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await asyncio.wait_for(websocket.receive(), spec.session_timeout)
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("bytes")
                if frame is None:
                    raise ProtocolError("text frames are not accepted: send binary msgpack")
                output = await _call(handler, _validate(model, codec.decode(frame)))
                await websocket.send_bytes(codec.encode(to_wire(output)))
        except WebSocketDisconnect:
            return
        except asyncio.TimeoutError:
            await _close_with(
                websocket, error_frame("TIMEOUT", "no inputs, reconnect when needed!")
            )
        except Exception as exc:
            if not isinstance(exc, ProtocolError):
                logger.exception("realtime handler %s failed", spec.method)
            await _close_with(websocket, error_frame("INTERNAL_ERROR", str(exc)))

    # This module uses string annotations; FastAPI needs the real class to inject it.
    session.__annotations__["websocket"] = WebSocket
    return session


async def _close_with(websocket: WebSocket, frame: ErrorFrame) -> None:
    import json

    await websocket.send_text(json.dumps(frame, separators=(",", ":")))
    await websocket.close(1000)
