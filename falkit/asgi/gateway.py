"""The few fal platform endpoints that clients built for fal (``fal_client``) call besides
an app's own routes, answered locally under ``/.fal/``:

* the queue API (``fal_client.submit`` / ``status`` / ``result`` / ``cancel``) at
  ``/.fal/queue/<owner>/<app>/<path>`` and ``.../requests/<id>[/status|/cancel]``;
* realtime tokens (``POST /.fal/rest/tokens/``): a local server needs none, so any
  caller gets a placeholder token, which the realtime route ignores.

``falkit.compat.use_fal_client`` points ``fal_client`` here. Queued requests run at
once, in the background, through the app's ASGI stack (below this layer: the app's limits
hold for them). What is kept is bounded: at most ``MAX_PENDING`` unfinished requests (more
are answered 429), and finished results up to ``MAX_KEPT`` of them and ``MAX_KEPT_BYTES``
in all, the oldest let go first (their lookups then answer 404, as an expired request does
on fal); a single result larger than that is not kept at all (its lookup answers 507).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .messages import read_body, send_bytes, send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/.fal"
QUEUE = PREFIX + "/queue/"
TOKENS = PREFIX + "/rest/tokens"
MAX_KEPT = 1000
MAX_PENDING = 1000
MAX_KEPT_BYTES = 64 * 1024 * 1024
_TOO_LARGE = b'{"detail":"the result is larger than the local queue keeps (MAX_KEPT_BYTES)"}'


@dataclass
class _Request:
    """One queued request: its task, and once done the app's status, headers, body."""

    task: asyncio.Task[None] | None = None
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    finished: bool = False  # the result is complete (or the request failed)

    @property
    def done(self) -> bool:
        return self.finished or (self.task is not None and self.task.done())


class _ResultTooLarge(Exception):
    """A queued request's answer outgrew what the queue keeps."""


class QueuedRequests:
    """The queued requests of one server, oldest first, bounded as the module says."""

    def __init__(self, max_kept: int = MAX_KEPT, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.max_kept = max_kept
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Request] = OrderedDict()
        self.pending = 0
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, rid: str) -> _Request | None:
        return self._entries.get(rid)

    def add(self, rid: str, entry: _Request) -> None:
        self._entries[rid] = entry
        self.pending += 1

    def finished(self, entry: _Request) -> None:
        """``entry``'s result is complete: count it, and let the oldest results go."""
        self.pending -= 1
        self.kept_bytes += len(entry.body)
        finished = [rid for rid, e in self._entries.items() if e is not entry and e.done]
        for rid in finished:
            if self.kept_bytes <= self.max_bytes and len(self._entries) <= self.max_kept:
                break
            self.kept_bytes -= len(self._entries.pop(rid).body)


class FalGateway:
    """ASGI middleware answering ``/.fal/...``; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, requests: QueuedRequests | None = None) -> None:
        self.app = app
        # A server passes its own: queued requests outlive a hot swap's new stack.
        self.requests = requests if requests is not None else QueuedRequests()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
        elif path.rstrip("/") == TOKENS and scope["method"] == "POST":
            await send_json(send, 200, "falkit-local-token")
        elif path.startswith(QUEUE):
            await self._queue(scope, receive, send, path[len(QUEUE) :].strip("/").split("/"))
        else:
            await send_json(send, 404, {"detail": f"Path {path} not found"})

    async def _queue(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        if len(parts) < 2:
            await send_json(send, 404, {"detail": "expected /.fal/queue/<owner>/<app>/..."})
            return
        base = f"{_origin(scope)}{QUEUE}{parts[0]}/{parts[1]}/requests"
        rest = parts[2:]
        if rest[:1] == ["requests"] and len(rest) >= 2:
            await self._lookup(send, scope["method"], base, rest[1], rest[2:])
        elif scope["method"] == "POST":
            await self._submit(scope, receive, send, base, "/" + "/".join(rest))
        else:
            await send_json(send, 405, {"detail": "Method Not Allowed"})

    async def _submit(self, scope: Scope, receive: Receive, send: Send, base: str, path: str):
        if self.requests.pending >= MAX_PENDING:
            await send_json(send, 429, {"detail": f"over {MAX_PENDING} queued requests"})
            return
        body, _ = await read_body(receive)
        request_id = str(uuid.uuid4())
        entry = _Request()
        entry.task = asyncio.create_task(self._run(entry, scope, path, body))
        self.requests.add(request_id, entry)
        await send_json(send, 200, _urls(base, request_id) | {"status": "IN_QUEUE"})

    async def _run(self, entry: _Request, scope: Scope, path: str, body: bytes) -> None:
        inner = dict(scope, path=path, raw_path=path.encode(), query_string=b"")
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the "client" of a queued request never leaves
            raise AssertionError("unreachable")

        async def collect(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                entry.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                entry.body += message.get("body", b"")
                if len(entry.body) > self.requests.max_bytes:
                    raise _ResultTooLarge

        try:
            await self.app(inner, receive, collect)
        except _ResultTooLarge:
            entry.status, entry.body = 507, bytearray(_TOO_LARGE)
            entry.headers = [(b"content-type", b"application/json")]
        except Exception:
            if not entry.status:
                entry.status, entry.body = 500, bytearray(b'{"detail":"Internal Server Error"}')
        finally:
            entry.finished = True
            self.requests.finished(entry)

    async def _lookup(self, send: Send, method: str, base: str, rid: str, tail: list[str]):
        entry = self.requests.get(rid)
        if entry is None:
            await send_json(send, 404, {"detail": f"Request {rid} not found"})
        elif tail == ["status"]:
            await send_json(send, 200, _status(entry, base, rid))
        elif tail == ["cancel"] and method == "PUT":
            if entry.task is not None and not entry.done:
                entry.task.cancel()
            await send_json(send, 202, {"status": "CANCELLATION_REQUESTED"})
        elif not tail and not entry.done:
            await send_json(send, 400, {"detail": "Request is still in progress"})
        elif not tail:
            await send_bytes(send, entry.status or 500, entry.headers, bytes(entry.body))
        else:
            await send_json(send, 404, {"detail": "Not Found"})


def _status(entry: _Request, base: str, rid: str) -> dict[str, Any]:
    common = {"request_id": rid, "response_url": f"{base}/{rid}", "logs": None}
    if not entry.done:
        return common | {"status": "IN_PROGRESS"}
    return common | {"status": "COMPLETED", "metrics": {}}


def _urls(base: str, rid: str) -> dict[str, str]:
    url = f"{base}/{rid}"
    return {
        "request_id": rid,
        "response_url": url,
        "status_url": url + "/status",
        "cancel_url": url + "/cancel",
    }


def _origin(scope: Scope) -> str:
    headers = dict(scope.get("headers", []))
    host = headers.get(b"host", b"").decode("latin-1")
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}"
