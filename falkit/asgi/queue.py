"""fal's queue, kept locally: a ``QueuedRequest`` per submitted request, ``QueuedRequests``
holding a server's requests in the order they came, and the status documents fal's queue
answers with (fal's docs, "Asynchronous Inference"). I/O-free: ``gateway`` runs the
requests and speaks HTTP.

A request is ``IN_QUEUE`` until the app takes it up (with ``max_multiplexing`` /
``max_concurrency`` set, until a slot frees: the limits sit below the queue), with its
``queue_position`` the number of requests submitted before it still waiting; then
``IN_PROGRESS``; then ``COMPLETED``, whether it succeeded or not: a failed request's
status carries ``error`` and ``error_type``, and its result keeps the app's status code.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .requestlogs import RequestLog
from .timing import parse as parse_server_timing

if TYPE_CHECKING:
    from starlette.types import Scope

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"
MAX_KEPT = 1000
MAX_PENDING = 1000
MAX_KEPT_BYTES = 64 * 1024 * 1024
JSON_HEADERS = [(b"content-type", b"application/json")]

# error_type by status when the answer names none: fal's "Request errors" table.
_ERROR_TYPES = {499: "client_cancelled", 500: "runner_server_error", 504: "request_timeout"}


@dataclass(eq=False)
class QueuedRequest:
    """One queued request: where it goes, how far it got, and once answered the app's
    status, headers and body."""

    request_id: str
    path: str  # the route's own path
    endpoint: str  # fal's ``x-fal-endpoint``: ``<owner>/<app>/<route>``
    webhook: str | None = None
    scope: Scope | None = None  # the scope it runs with, once made
    task: asyncio.Task[None] | None = None
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the app's answer came to its end
    finished: bool = False  # the outcome is final (kept, or let go)
    cancel_requested: bool = False
    logs: RequestLog = field(default_factory=RequestLog)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _began: bool = False

    def begin(self) -> None:
        """The app took the request up (it read the body, or answered)."""
        self._began = True

    @property
    def started(self) -> bool:
        # The limiter below holds a waiting request before routing; Starlette's router,
        # reached only with a slot, records the matched endpoint in the scope it was given.
        # That covers handlers that never read a body.
        if not self._began and self.scope is not None and "endpoint" in self.scope:
            self._began = True
        return self._began

    @property
    def state(self) -> str:
        if self.finished:
            return COMPLETED
        return IN_PROGRESS if self.started else IN_QUEUE

    @property
    def size(self) -> int:
        return len(self.body) + self.logs.size

    def answer(self, status: int, data: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Make the outcome a JSON answer of the queue's own (the app's answer, if any
        came, is replaced)."""
        self.status = status
        self.headers = [*JSON_HEADERS, *headers]
        self.body = bytearray(json.dumps(data, separators=(",", ":")).encode())
        self.complete = True

    def failure(self) -> tuple[str | None, str | None]:
        """``(error, error_type)`` as fal's status reports a failed request, or
        ``(None, None)`` for one that succeeded."""
        if self.status < 400:
            return None, None
        try:
            data = json.loads(self.body)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        detail = data.get("detail")
        error = detail if isinstance(detail, str) and detail else None
        header = dict(self.headers).get(b"x-fal-error-type", b"").decode("latin-1")
        error_type = data.get("error_type") or header or _ERROR_TYPES.get(self.status)
        return error or f"Invalid status code: {self.status}", error_type

    def metrics(self) -> dict[str, Any]:
        """fal's ``metrics``: ``inference_time``, the seconds the app worked on the request
        (from its ``Server-Timing``; ``None`` when it never reached a handler)."""
        timing = dict(self.headers).get(b"server-timing")
        if timing is None:
            return {"inference_time": None}
        spans = parse_server_timing(timing.decode("latin-1"))
        return {"inference_time": round(sum(spans.values()) / 1000, 6)}


def urls(base: str, request_id: str) -> dict[str, str]:
    """The URLs fal's submit answer gives for a request (``base`` ends in ``/requests``)."""
    url = f"{base}/{request_id}"
    return {
        "request_id": request_id,
        "response_url": url,
        "status_url": url + "/status",
        "cancel_url": url + "/cancel",
    }


def status_body(
    entry: QueuedRequest, base: str, *, position: int, logs: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """fal's status document for ``entry``; ``logs`` is ``None`` unless asked for."""
    body: dict[str, Any] = {"status": entry.state, **urls(base, entry.request_id)}
    if entry.state == IN_QUEUE:
        return body | {"queue_position": position}
    body["logs"] = logs
    if entry.state == COMPLETED:
        body["metrics"] = entry.metrics()
        error, error_type = entry.failure()
        if error is not None:
            body |= {"error": error, "error_type": error_type}
    return body


class QueuedRequests:
    """The queued requests of one server, oldest first. At most ``MAX_PENDING`` unfinished
    (``pending``); finished ones are kept up to ``max_kept`` of them and ``max_bytes`` of
    results and logs in all, the oldest let go first."""

    def __init__(self, max_kept: int = MAX_KEPT, max_bytes: int = MAX_KEPT_BYTES) -> None:
        self.max_kept = max_kept
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, QueuedRequest] = OrderedDict()
        self._waiting: OrderedDict[str, QueuedRequest] = OrderedDict()
        self.pending = 0
        self.kept_bytes = 0
        self._background: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str) -> QueuedRequest | None:
        return self._entries.get(request_id)

    def add(self, entry: QueuedRequest) -> None:
        self._entries[entry.request_id] = entry
        self._waiting[entry.request_id] = entry
        self.pending += 1

    def position(self, entry: QueuedRequest) -> int:
        """How many requests submitted before ``entry`` still wait for the app."""
        ahead = 0
        for rid, other in list(self._waiting.items()):
            if other is entry:
                return ahead
            if other.finished or other.started:
                del self._waiting[rid]
            else:
                ahead += 1
        return ahead

    def finished(self, entry: QueuedRequest) -> None:
        """``entry``'s outcome is final: count it, and let the oldest results go."""
        self.pending -= 1
        self._waiting.pop(entry.request_id, None)
        self.kept_bytes += entry.size
        done = [rid for rid, e in self._entries.items() if e is not entry and e.finished]
        for rid in done:
            if self.kept_bytes <= self.max_bytes and len(self._entries) <= self.max_kept:
                break
            self.kept_bytes -= self._entries.pop(rid).size

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` (a webhook, a cancel call) in the background until ``aclose``."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._background.discard)

    async def aclose(self, timeout: float = 5.0) -> None:
        """The server is stopping: cancel the queued requests still running on this loop
        and the queue's background work, and wait up to ``timeout`` seconds for them to
        end, so that none outlives the loop (or the App's ``teardown()``). A sync handler's
        thread cannot be stopped: its request is let go."""
        loop = asyncio.get_running_loop()
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        tasks += self._background
        running = [t for t in tasks if not t.done() and t.get_loop() is loop]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=timeout)
