"""The few fal platform endpoints that clients built for fal (``fal_client``, ``fal.apps``)
call besides an app's own routes, answered locally under ``/.fal/``:

* fal's queue API at ``/.fal/queue/<owner>/<app>/<path>`` (submit) and
  ``.../requests/<id>`` (result), ``/status`` (``?logs=1``), ``/status/stream`` (SSE)
  and ``/cancel`` (PUT), as fal's docs ("Asynchronous Inference") describe them;
* realtime tokens (``POST /.fal/rest/tokens/``): a local server needs none, so any
  caller gets a placeholder token, which the realtime route ignores.

``falkit.compat.use_fal_client`` points ``fal_client`` here. How the queue behaves:

* A queued request runs in the background through the app's stack below this layer, so
  the app's limits hold for it: while it waits for a slot it is ``IN_QUEUE`` with its
  ``queue_position``, then ``IN_PROGRESS``, then ``COMPLETED`` (``falkit.asgi.queue``).
  Status answers 202 until the request completes, then 200, as fal's does: ``fal.apps``
  takes a 200 to mean done.
* The handler sees the queue's request id as ``current_request.request_id`` and fal's
  ``x-fal-endpoint`` (``<owner>/<app>/<path>``); the caller's key and fal's platform
  headers (``X-Fal-Request-Timeout``, ...) are not passed on, as fal's gateway does not.
* ``logs=1`` gives the lines the handler printed or logged while working on the request
  (``falkit.asgi.requestlogs``), in fal's log shape; the SSE stream sends a status event
  at each change, with the lines new since the last one.
* A failed request is still ``COMPLETED``, with fal's ``error`` and ``error_type``; its
  result keeps the app's status code and body. An exception the app let escape answers
  through the app's own 500 handler (fal's body, JSON, the request id).
* ``start_timeout`` (``X-Fal-Request-Timeout``): a request not taken up in that many
  seconds leaves the queue unprocessed and answers fal's 504 with
  ``X-Fal-Request-Timeout-Type: user`` (which fal's clients do not retry).
* Cancel, as fal's: a waiting request leaves the queue unprocessed (its result: 499,
  ``client_cancelled``). A running one is told, never killed: its receive channel reports
  ``http.disconnect`` (what ``fal.toolkit``'s ``cancel_on_disconnect`` and Starlette's
  streaming answers watch), and the app's ``<path>/cancel`` route, if it has one, gets a
  POST with the same ``x-fal-request-id`` (fal's "Handle cancellations"). What the app
  answers stands: a ``RequestCancelledException`` it raises, or an answer cut short by
  the disconnect, is fal's 499; an app that ignores the signal completes as on fal.
  Answers: 202 ``CANCELLATION_REQUESTED``, 400 ``ALREADY_COMPLETED``, 404 ``NOT_FOUND``.
* ``?fal_webhook=URL``: the outcome is POSTed there in fal's body; loopback URLs only,
  any other is refused with a 400 (``falkit.asgi.webhooks``).

What is kept is bounded: at most ``MAX_PENDING`` unfinished requests (more are answered
429), and finished results and logs up to ``MAX_KEPT`` of them and ``MAX_KEPT_BYTES`` in
all, the oldest let go first (their lookups then answer 404, as an expired request does
on fal); a single result larger than that is not kept at all (its lookup answers 507).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from . import webhooks
from .limits import UNLIMITED
from .messages import header, origin, read_body, send_bytes, send_json
from .queue import (
    COMPLETED,
    IN_QUEUE,
    MAX_KEPT,
    MAX_KEPT_BYTES,
    MAX_PENDING,
    QueuedRequest,
    QueuedRequests,
    status_body,
    urls,
)
from .requestlogs import capturing

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_KEPT", "MAX_KEPT_BYTES", "MAX_PENDING", "FalGateway", "QueuedRequests"]

logger = logging.getLogger("falkit.server")

PREFIX = "/.fal"
QUEUE = PREFIX + "/queue/"
TOKENS = PREFIX + "/rest/tokens"
STREAM_POLL = 0.05  # seconds between looks at a streamed request's state
CANCELLED = "Request cancelled by the client."
_TOO_LARGE = {"detail": "the result is larger than the local queue keeps (MAX_KEPT_BYTES)"}

# Set by fal's gateway (or processed by it) and so never passed on from the caller.
_NOT_FORWARDED = frozenset(
    {
        b"authorization",
        b"x-fal-request-id",
        b"x-fal-endpoint",
        b"x-fal-caller-user-id",
        b"x-fal-request-timeout",
        b"x-fal-request-timeout-type",
        b"x-fal-queue-priority",
        b"x-fal-runner-hint",
        b"x-fal-no-retry",
        b"x-fal-retry-config",
        b"x-fal-store-io",
    }
)
# The connection's part of a scope: what a second request on the app (the cancel call)
# shares with the one it is about.
_CONNECTION_KEYS = ("type", "asgi", "http_version", "scheme", "server", "client", "root_path")


class _ResultTooLarge(Exception):
    """A queued request's answer outgrew what the queue keeps."""


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
        app_id = f"{parts[0]}/{parts[1]}"
        base = f"{origin(scope)}{QUEUE}{app_id}/requests"
        rest = parts[2:]
        if rest[:1] == ["requests"] and len(rest) >= 2:
            await self._lookup(scope, receive, send, base, rest[1], rest[2:])
        elif scope["method"] == "POST":
            await self._submit(scope, receive, send, base, app_id, "/" + "/".join(rest))
        else:
            await send_json(send, 405, {"detail": "Method Not Allowed"})

    # -- submit and run ------------------------------------------------------------------

    async def _submit(
        self, scope: Scope, receive: Receive, send: Send, base: str, app_id: str, path: str
    ) -> None:
        if self.requests.pending >= MAX_PENDING:
            await send_json(send, 429, {"detail": f"over {MAX_PENDING} queued requests"})
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        webhook = next((value for name, value in query if name == "fal_webhook"), None)
        timeout, problem = _start_timeout(scope)
        if webhook is not None and problem is None:
            problem = webhooks.problem(webhook)
        if problem is not None:
            await _refuse(send, 400, problem, "bad_request")
            return
        body, _ = await read_body(receive)
        entry = QueuedRequest(str(uuid.uuid4()), path, f"{app_id}/{path.lstrip('/')}", webhook)
        entry.scope = _inner_scope(scope, entry, [q for q in query if q[0] != "fal_webhook"])
        self.requests.add(entry)
        entry.task = asyncio.create_task(self._run(entry, body))
        # The request runs after its submit is answered: it holds the App instance it runs
        # on (the server's generation) until it ends, so a hot swap does not tear that
        # instance down under it. The hold is released however the task ends, even
        # cancelled before it started.
        hold = scope.get("falkit.hold")
        if hold is not None:
            release = hold()
            entry.task.add_done_callback(lambda _task: release())
        if timeout is not None:
            asyncio.get_running_loop().call_later(timeout, self._start_deadline, entry)
        position = self.requests.position(entry)
        answer = urls(base, entry.request_id) | {"gateway_request_id": entry.request_id}
        await send_json(send, 200, answer | {"status": IN_QUEUE, "queue_position": position})

    async def _run(self, entry: QueuedRequest, body: bytes) -> None:
        assert entry.scope is not None
        receive, collect = _channels(entry, body, self.requests.max_bytes)
        with capturing(entry.logs):
            try:
                await self.app(entry.scope, receive, collect)
            except _ResultTooLarge:
                entry.answer(507, _TOO_LARGE)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not entry.finished and task is not None and task.cancelling():
                    raise  # the server is stopping (QueuedRequests.aclose)
                if not entry.finished:  # not the queue's doing: the app's own cancellation
                    entry.answer(499, {"detail": CANCELLED})
            except Exception as exc:
                if not entry.finished:
                    await self._failed(entry, exc, receive, collect)
            else:
                if not (entry.finished or entry.complete):
                    if entry.cancel_requested:  # cut short by the cancel's disconnect
                        entry.answer(499, {"detail": CANCELLED})
                    elif not entry.status:  # the app returned without answering
                        entry.answer(500, {"detail": "Internal Server Error"})
            self._settle(entry)

    async def _failed(
        self, entry: QueuedRequest, exc: Exception, receive: Receive, send: Send
    ) -> None:
        if _is_cancellation(exc) or (entry.cancel_requested and _is_disconnect(exc)):
            entry.answer(499, {"detail": str(exc) or CANCELLED})
        elif not entry.status:
            await self._internal_error(entry, exc, receive, send)
        else:  # the answer had begun: it stays as it was cut
            logger.error("%s failed (request %s)", entry.path, entry.request_id, exc_info=exc)

    async def _internal_error(
        self, entry: QueuedRequest, exc: Exception, receive: Receive, send: Send
    ) -> None:
        """Answer as the app's 500 handler does (it sits outside this layer, so a queued
        request's exception reaches it only through here); fal's 500 without one."""
        assert entry.scope is not None
        handlers = getattr(entry.scope.get("app"), "exception_handlers", {})
        handler = handlers.get(500) or handlers.get(Exception)
        if handler is not None:
            from starlette.requests import Request

            try:
                response = handler(Request(entry.scope, receive), exc)
                if inspect.isawaitable(response):
                    response = await response
                await response(entry.scope, receive, send)
                return
            except Exception:
                logger.exception("the app's error handler failed (request %s)", entry.request_id)
        logger.error("%s failed (request %s)", entry.path, entry.request_id, exc_info=exc)
        rid = [(b"x-fal-request-id", entry.request_id.encode())]
        entry.answer(500, {"detail": "Internal Server Error"}, rid)

    def _settle(self, entry: QueuedRequest) -> None:
        """``entry``'s outcome is final: keep it, tell its webhook."""
        if entry.finished:
            return
        entry.finished = True
        entry.logs.close()
        entry.headers = [(k, v) for k, v in entry.headers if k.lower() != b"x-fal-request-id"]
        entry.headers.append((b"x-fal-request-id", entry.request_id.encode()))
        self.requests.finished(entry)
        if entry.webhook is not None:
            body = webhooks.payload(entry.request_id, entry.status, bytes(entry.body))
            self.requests.spawn(webhooks.deliver(entry.webhook, body))

    def _leave_queue(self, entry: QueuedRequest) -> None:
        """A request not yet taken up leaves the queue with the outcome already set."""
        self._settle(entry)
        if entry.task is not None:
            entry.task.cancel()  # it waits for a slot below; the wait ends, nothing runs

    def _start_deadline(self, entry: QueuedRequest) -> None:
        if entry.finished or entry.started:
            return  # start_timeout bounds the wait only, never the work
        logger.warning("request %s: not started within its start_timeout", entry.request_id)
        types = [(b"x-fal-error-type", b"request_timeout")]
        types.append((b"x-fal-request-timeout-type", b"user"))
        entry.answer(504, {"detail": "Request timed out", "error_type": "request_timeout"}, types)
        self._leave_queue(entry)

    # -- lookups -------------------------------------------------------------------------

    async def _lookup(
        self, scope: Scope, receive: Receive, send: Send, base: str, rid: str, tail: list[str]
    ) -> None:
        entry = self.requests.get(rid)
        if entry is not None and _lost(entry):
            self._settle(entry)
        method = scope["method"]
        if tail not in ([], ["status"], ["status", "stream"], ["cancel"]):
            await send_json(send, 404, {"detail": "Not Found"})
        elif method != ("PUT" if tail == ["cancel"] else "GET"):
            await send_json(send, 405, {"detail": "Method Not Allowed"})
        elif entry is None:
            missing = {"status": "NOT_FOUND"} if tail == ["cancel"] else {}
            await send_json(send, 404, {"detail": f"Request {rid} not found", **missing})
        elif tail == ["cancel"]:
            await self._cancel(send, entry)
        elif tail == ["status"]:
            position = self.requests.position(entry)
            logs = entry.logs.entries() if _flag(scope, "logs") else None
            code = 200 if entry.state == COMPLETED else 202
            await send_json(send, code, status_body(entry, base, position=position, logs=logs))
        elif tail:
            await self._stream(receive, send, entry, base, with_logs=_flag(scope, "logs"))
        elif not entry.finished:
            await send_json(send, 400, {"detail": "Request is still in progress"})
        else:
            await send_bytes(send, entry.status or 500, entry.headers, bytes(entry.body))

    async def _cancel(self, send: Send, entry: QueuedRequest) -> None:
        if entry.finished:
            await send_json(send, 400, {"status": "ALREADY_COMPLETED"})
            return
        if not entry.started:
            kind = [(b"x-fal-error-type", b"client_cancelled")]
            entry.answer(499, {"detail": CANCELLED, "error_type": "client_cancelled"}, kind)
            self._leave_queue(entry)
        elif not entry.cancel_requested:
            entry.cancel_requested = True
            entry.disconnected.set()
            self.requests.spawn(self._call_cancel_route(entry))
        await send_json(send, 202, {"status": "CANCELLATION_REQUESTED"})

    async def _call_cancel_route(self, entry: QueuedRequest) -> None:
        """fal's signal to a running request: ``POST <path>/cancel`` with its request id
        (an app without such a route answers 404, and the request runs on)."""
        assert entry.scope is not None
        path = entry.path.rstrip("/") + "/cancel"
        scope = {k: entry.scope[k] for k in _CONNECTION_KEYS if k in entry.scope}
        host = [(k, v) for k, v in entry.scope["headers"] if k == b"host"]
        scope |= {"method": "POST", "path": path, "raw_path": path.encode(), "query_string": b""}
        if "app" in entry.scope:
            scope["app"] = entry.scope["app"]
        # Not a request of its own: it must reach the app while the request it stops holds
        # the only slot (``max_multiplexing=1``), so the limiter lets it through.
        scope[UNLIMITED] = True
        scope["headers"] = [
            *host,
            (b"content-length", b"0"),
            (b"x-fal-request-id", entry.request_id.encode()),
            (b"x-fal-endpoint", f"{entry.endpoint.rstrip('/')}/cancel".encode()),
        ]

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(message: Message) -> None:
            return None

        with capturing(entry.logs):
            try:
                await self.app(scope, receive, discard)
            except Exception:
                logger.exception("%s for request %s failed", path, entry.request_id)

    async def _stream(
        self, receive: Receive, send: Send, entry: QueuedRequest, base: str, *, with_logs: bool
    ) -> None:
        """fal's ``/status/stream``: a status event now and at each change (state, queue
        position, new log lines), the last one ``COMPLETED``; ends early if the client
        leaves."""
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = asyncio.ensure_future(_disconnected(receive))
        shown: tuple[str, int] | None = None
        seen = 0
        try:
            while True:
                if _lost(entry):
                    self._settle(entry)
                state = (entry.state, self.requests.position(entry))
                fresh, upto = entry.logs.since(seen) if with_logs else (None, seen)
                if state != shown or fresh:
                    shown, seen = state, upto
                    event = status_body(entry, base, position=state[1], logs=fresh)
                    chunk = b"data: " + json.dumps(event).encode() + b"\n\n"
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if entry.state == COMPLETED:
                    break
                done, _ = await asyncio.wait({left}, timeout=STREAM_POLL)
                if done:
                    return  # the client left
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            left.cancel()
            if left.done() and not left.cancelled():
                left.exception()  # retrieved: a failed receive is the client leaving


def _channels(entry: QueuedRequest, body: bytes, max_bytes: int) -> tuple[Receive, Send]:
    """The receive and send channels a queued request runs with: the body once, then
    ``http.disconnect`` when it is cancelled; the answer collected into ``entry``."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            entry.begin()
            return {"type": "http.request", "body": body, "more_body": False}
        await entry.disconnected.wait()
        return {"type": "http.disconnect"}

    async def collect(message: Message) -> None:
        if entry.finished:
            return  # it left the queue (start_timeout): a late answer goes nowhere
        entry.begin()
        if message["type"] == "http.response.start":
            entry.status = message["status"]
            entry.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            entry.body += message.get("body", b"")
            entry.complete = not message.get("more_body", False)
            if len(entry.body) > max_bytes:
                raise _ResultTooLarge

    return receive, collect


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _lost(entry: QueuedRequest) -> bool:
    """Mark a request whose run ended without an outcome (the server stopped under it:
    ``QueuedRequests.aclose``, or a restart's new loop) as failed."""
    task = entry.task
    if entry.finished or task is None:
        return False
    if not task.done() and not task.get_loop().is_closed():
        return False
    kind = [(b"x-fal-error-type", b"runner_disconnected")]
    detail = "the server stopped while the request ran"
    entry.answer(503, {"detail": detail, "error_type": "runner_disconnected"}, kind)
    return True


def _inner_scope(scope: Scope, entry: QueuedRequest, query: list[tuple[str, str]]) -> Scope:
    """The scope ``entry`` runs with: its route's path, the caller's headers less those
    fal's gateway keeps, and fal's request id and endpoint headers."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _NOT_FORWARDED]
    headers.append((b"x-fal-request-id", entry.request_id.encode()))
    headers.append((b"x-fal-endpoint", entry.endpoint.encode()))
    inner = dict(scope, path=entry.path, raw_path=entry.path.encode(), headers=headers)
    inner["query_string"] = urlencode(query).encode()
    if isinstance(scope.get("state"), dict):
        inner["state"] = dict(scope["state"])  # its own, not the submit request's
    for key in ("endpoint", "path_params", "route"):
        inner.pop(key, None)
    return inner


def _is_disconnect(exc: BaseException) -> bool:
    from starlette.requests import ClientDisconnect

    return isinstance(exc, (ClientDisconnect, OSError))


def _is_cancellation(exc: BaseException) -> bool:
    # fal's RequestCancelledException (the fal SDK's, or falkit's copy), by name: neither
    # needs importing, and fal answers both with 499 ``{"detail": str(exc)}``.
    return any(cls.__name__ == "RequestCancelledException" for cls in type(exc).__mro__)


def _start_timeout(scope: Scope) -> tuple[float | None, str | None]:
    """``X-Fal-Request-Timeout`` (fal_client's ``start_timeout``) in seconds, or why it
    is refused."""
    value_of = header(scope, b"x-fal-request-timeout")
    if value_of is None:
        return None, None
    raw = value_of.decode("latin-1")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        return None, f"X-Fal-Request-Timeout must be a positive number of seconds, got {raw!r}"
    return value, None


def _flag(scope: Scope, name: str) -> bool:
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    return any(k == name and v.lower() in ("1", "true", "yes") for k, v in query)


async def _refuse(send: Send, status: int, detail: str, error_type: str) -> None:
    kind = [(b"x-fal-error-type", error_type.encode())]
    await send_json(send, status, {"detail": detail, "error_type": error_type}, kind)
