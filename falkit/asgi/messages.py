"""The few raw ASGI moves the middlewares share: read a whole body, replay what was read,
and answer with JSON or with bytes already made."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]


async def read_body(receive: Receive, *, limit: int | None = None) -> tuple[bytes, list[Message]]:
    """The request body, and every message read for it (to replay). Stops at a disconnect
    with the body read so far, and once more than ``limit`` bytes are in (the body then
    returned is longer than ``limit``: the caller refuses it)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body", False) or (limit is not None and size > limit):
            break
    return b"".join(chunks), messages


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of request header ``name`` (lower case, as ASGI gives names), or ``None``."""
    return next((value for key, value in scope["headers"] if key == name), None)


def origin(scope: Scope) -> str:
    """``scheme://host[:port]`` the client reached this server at (its ``Host``, else the
    socket's address)."""
    host = (header(scope, b"host") or b"").decode("latin-1")
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}"


def replay(messages: list[Message], then: Receive) -> Receive:
    """A receive channel that gives ``messages`` (already read) first, then ``then``'s."""
    pending = list(messages)

    async def receive() -> Message:
        # After the buffered body, the real channel: a streaming response listens on it for
        # the client's disconnect.
        return pending.pop(0) if pending else await then()

    return receive


async def send_bytes(
    send: Send, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> None:
    """A complete answer: ``headers`` (any ``content-length`` replaced by the body's)."""
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    kept.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete JSON answer (compact, as FastAPI renders it)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    await send_bytes(send, status, [(b"content-type", b"application/json"), *headers], body)
