"""Server-side timing of one HTTP request, split into ``decode`` (body read, JSON parse,
pydantic validation, and for a sync handler the hop to its worker thread), ``handler`` (the
App's method) and ``encode`` (the answer serialised), sent to the client in a
``Server-Timing`` header (milliseconds, as the W3C header says)::

    server-timing: decode;dur=0.081, handler;dur=0.012, encode;dur=0.054

Two pieces: ``timed(handler)`` marks when the handler starts and ends, and the
``ServerTiming`` middleware gives each request its marks and writes the header. Answers
that never reached a handler (422, 404) or that failed in it (500) carry no header.
Measured cost: see ``benchmarks/http_overhead.py`` (README, "Benchmarks").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"server-timing"

# A list per request: [request start, handler start, handler end]. The middleware sets it;
# the handler wrapper appends. A sync handler runs in a worker thread that gets a copy of
# the context (anyio copies it), and the copy holds the same list.
_marks: ContextVar[list[float] | None] = ContextVar("falkit_timing_marks", default=None)


def timed(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` wrapped to mark its start and end for ``ServerTiming``; FastAPI sees the
    same signature. Generators (streamed answers) are returned unwrapped: FastAPI looks
    through wrappers to detect them, and their "handler" time is the whole stream."""
    if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
        return handler
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            marks = _marks.get()
            if marks is not None:
                marks.append(perf_counter())
            try:
                return await handler(*args, **kwargs)
            finally:
                if marks is not None:
                    marks.append(perf_counter())

        return run_async

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        marks = _marks.get()
        if marks is not None:
            marks.append(perf_counter())
        try:
            return handler(*args, **kwargs)
        finally:
            if marks is not None:
                marks.append(perf_counter())

    return run


def header_value(marks: list[float], now: float) -> bytes:
    """The ``Server-Timing`` value for ``[start, handler start, handler end]`` at ``now``."""
    start, began, ended = marks[0], marks[1], marks[2]
    return b"decode;dur=%.3f, handler;dur=%.3f, encode;dur=%.3f" % (
        (began - start) * 1000,
        (ended - began) * 1000,
        (now - ended) * 1000,
    )


def parse(value: str) -> dict[str, float]:
    """``{"decode": 0.081, ...}`` (ms) from a ``Server-Timing`` header value; unknown or
    malformed entries are skipped."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, dur = param.strip().partition("=")
            if key == "dur":
                with contextlib.suppress(ValueError):
                    out[name] = float(dur)
    return out


class ServerTiming:
    """ASGI middleware adding the ``Server-Timing`` header to HTTP answers whose handler
    was wrapped with ``timed``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        marks = [perf_counter()]
        token = _marks.set(marks)

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start" and len(marks) == 3:
                value = header_value(marks, perf_counter())
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, value)]}
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            _marks.reset(token)
