"""The log of one queued request: the lines its handler printed or logged while working on
it, in fal's shape (``{"message", "level", "source": "USER", "timestamp"}``), as fal's queue
status gives them with ``logs=1``.

A context variable says which request a line belongs to: the queue sets it around the
request's run, and a sync handler's worker thread gets a copy of the context, so a print
there lands in its own request. Lines reach ``note`` from the server's log routing
(``falkit.serving``), which sees every print and log record a handler makes; this module
only files them. Each log keeps its newest lines within ``MAX_LOG_BYTES`` (fal's status
returns a moving window too), and stops taking lines once its request is answered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

MAX_LOG_BYTES = 256 * 1024

# fal's levels (fal-js ``RequestLog``): prints are STDOUT/STDERR, records keep their level.
_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR"}

_current: ContextVar[RequestLog | None] = ContextVar("falkit_request_log", default=None)


def _timestamp(when: float) -> str:
    """ISO 8601 in UTC with milliseconds, as fal's log entries carry it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    return f"{stamp}.{int(when * 1000) % 1000:03d}Z"


class RequestLog:
    """A bounded, thread-safe list of one request's log entries, numbered from 0 so a
    reader can ask for the ones after those it has seen."""

    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes of message text kept
        self._entries: deque[tuple[int, dict[str, Any]]] = deque()
        self._next = 0
        self._closed = False
        self._lock = threading.Lock()

    def add(self, level: str, message: str, when: float | None = None) -> None:
        entry = {
            "message": message,
            "level": level,
            "source": "USER",
            "timestamp": _timestamp(time.time() if when is None else when),
        }
        with self._lock:
            if self._closed:
                return
            self._entries.append((self._next, entry))
            self._next += 1
            self.size += len(message)
            while self.size > self.max_bytes and len(self._entries) > 1:
                self.size -= len(self._entries.popleft()[1]["message"])

    def close(self) -> None:
        """The request is answered: later lines are not its own any more."""
        with self._lock:
            self._closed = True

    def entries(self) -> list[dict[str, Any]]:
        """The kept entries, oldest first."""
        return self.since(0)[0]

    def since(self, number: int) -> tuple[list[dict[str, Any]], int]:
        """The kept entries numbered ``number`` or later, and the number the next one
        will get (pass it next time to get only the newer ones)."""
        with self._lock:
            fresh = [dict(entry) for n, entry in self._entries if n >= number]
            return fresh, self._next


@contextmanager
def capturing(log: RequestLog) -> Iterator[None]:
    """Lines noted in this context (and in worker threads it starts) go to ``log``."""
    token = _current.set(log)
    try:
        yield
    finally:
        _current.reset(token)


def note(source: str, level: str, message: str, when: float | None = None) -> None:
    """File one log line made in the current context under its queued request, if any:
    ``source`` is ``"stdout"``, ``"stderr"`` or a logger name, ``level`` a logging level
    name. The server's log routing calls this for every line it keeps; it costs one
    context-variable lookup when no queued request is running."""
    log = _current.get()
    if log is None:
        return
    printed = source in ("stdout", "stderr")
    log.add(source.upper() if printed else _LEVELS.get(level, level), message, when)
