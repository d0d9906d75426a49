"""fal's per-app limits, honoured locally: ``max_multiplexing`` / ``max_concurrency``
bound the requests an app works on at once, ``request_timeout`` ends a slow request.

What fal does, and so what falkit does (fal's docs: "Scale your application", "Request
errors", "Concurrency limits"):

- A runner handles at most ``max_multiplexing`` requests at once (fal's default is 1) and an
  app has at most ``max_concurrency`` runners. Locally one process plays every runner, so
  the app works on at most ``max_multiplexing * max_concurrency`` requests at once (a missing
  factor counts as fal's default: multiplexing 1, runners unbounded). Requests over the
  limit are never refused: fal keeps them in its queue until a slot frees, so here they wait,
  first come first served. WebSocket and realtime sessions hold a slot while open, as a
  WebSocket connection holds a runner's slot on fal.
- ``request_timeout`` bounds the time a request is *worked on* (queue time excluded). An
  overrun answers fal's request error: status 504, body
  ``{"detail": "Request timed out", "error_type": "request_timeout"}`` and the header
  ``X-Fal-Error-Type: request_timeout``. The handler is cancelled and its slot freed at
  once: an ``async`` handler stops at its next ``await``; a sync handler's thread cannot be
  stopped by Python and runs on to its end in the background (its answer is dropped), so
  do not count on a timeout to free the GPU. WebSocket sessions are bounded by a realtime
  route's ``session_timeout`` instead.
- ``/health``, ``/openapi.json`` and ``/docs`` are never limited: they are not requests to
  the app's handlers.

Nothing here runs when none of the options is set: a request then pays no overhead at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import AppDefinitionError
from .messages import send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("falkit.server")

#: A scope key marking a call the queue makes on behalf of a request already holding a
#: slot (fal's ``<path>/cancel``): not limited again.
UNLIMITED = "falkit.unlimited"
TIMEOUT_STATUS = 504
TIMEOUT_BODY = {"detail": "Request timed out", "error_type": "request_timeout"}


@dataclass(frozen=True)
class LimitSpec:
    """The limits an App class asks for: at most ``max_in_flight`` requests at once
    (``None``: unbounded) and ``request_timeout`` seconds per HTTP request."""

    max_in_flight: int | None = None
    request_timeout: float | None = None

    @classmethod
    def of(cls, app_cls: type) -> LimitSpec:
        """The limits of ``app_cls``'s fal options (see the module docstring); a malformed
        option is ``AppDefinitionError``."""
        multiplexing = _positive(app_cls, "max_multiplexing")
        runners = _positive(app_cls, "max_concurrency")
        in_flight = None
        if runners is not None:
            in_flight = runners * (multiplexing or 1)
        elif multiplexing is not None:
            in_flight = multiplexing
        timeout = getattr(app_cls, "request_timeout", None)
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise AppDefinitionError(
                f"{app_cls.__name__}: request_timeout must be a positive number of "
                f"seconds, got {timeout!r}"
            )
        return cls(in_flight, timeout)

    @property
    def active(self) -> bool:
        return self.max_in_flight is not None or self.request_timeout is not None


def _positive(app_cls: type, name: str) -> int | None:
    value = getattr(app_cls, name, None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AppDefinitionError(
            f"{app_cls.__name__}: {name} must be a positive integer or None, got {value!r}"
        )
    return value


class RequestLimiter:
    """ASGI middleware enforcing a ``LimitSpec`` on the requests to an app's routes. It
    sits below fal's gateway and URL layout (``falkit.asgi.stack``): it sees every route
    request by its own path, whether it came directly, as ``/<owner>/<app>/<route>`` or
    through the queue."""

    def __init__(self, app: ASGIApp, spec: LimitSpec, route_paths: set[str]):
        self.app = app
        self.spec = spec
        self._paths = route_paths
        self._slots = (
            asyncio.Semaphore(spec.max_in_flight) if spec.max_in_flight is not None else None
        )
        self._overrun: set[asyncio.Task[None]] = set()

    def _limited(self, scope: Scope) -> bool:
        return (
            scope["type"] in ("http", "websocket")
            and scope["path"] in self._paths
            and not scope.get(UNLIMITED)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._limited(scope):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            await self._run(scope, receive, send, release=None)
            return
        await self._slots.acquire()
        await self._run(scope, receive, send, release=self._slots.release)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, release: Callable[[], None] | None
    ) -> None:
        timeout = self.spec.request_timeout if scope["type"] == "http" else None
        if timeout is None:
            try:
                await self.app(scope, receive, send)
            finally:
                if release is not None:
                    release()
            return
        await self._run_with_timeout(scope, receive, send, timeout, release)

    async def _run_with_timeout(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        timeout: float,
        release: Callable[[], None] | None,
    ) -> None:
        state = {"started": False, "timed_out": False}

        async def guarded_send(message: Message) -> None:
            if state["timed_out"]:
                return  # the client already has its 504; the late answer goes nowhere
            state["started"] = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        if release is not None:
            task.add_done_callback(lambda _t: release())
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            task.result()
            return
        state["timed_out"] = True
        logger.warning(
            "%s %s: request_timeout=%ss exceeded", scope.get("method"), scope["path"], timeout
        )
        # Not awaited: the client must get its 504 now, whatever the cancelled handler
        # does on its way out. The task is kept referenced until it ends.
        self._overrun.add(task)
        task.add_done_callback(self._forget)
        task.cancel()
        await _finish_timed_out(send, started=state["started"])

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._overrun.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "request finished with an error after its timeout", exc_info=task.exception()
            )


async def _finish_timed_out(send: Callable[[Message], Awaitable[None]], *, started: bool) -> None:
    if started:
        # Headers (and maybe part of a stream) are out: the status cannot change any more,
        # so the body ends here, cut short, as fal's gateway cuts a timed-out stream.
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send_json(send, TIMEOUT_STATUS, TIMEOUT_BODY, [(b"x-fal-error-type", b"request_timeout")])


def describe(spec: LimitSpec) -> str:
    """``2 at once, 30 s timeout`` for the card; ``""`` when no limit is set."""
    parts = []
    if spec.max_in_flight is not None:
        parts.append(f"{spec.max_in_flight} at once")
    if spec.request_timeout is not None:
        parts.append(f"{spec.request_timeout:g} s timeout")
    return ", ".join(parts)
