"""Per-server log rings. Handler prints and log records made on a server's thread (or in
tasks and worker threads it spawned) land in that server's ring, not in whichever notebook
cell happens to be running: a context variable set on the server thread says which ring."""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from ..asgi import note_request_log

current_ring: contextvars.ContextVar[LogRing | None] = contextvars.ContextVar(
    "falkit_log_ring", default=None
)


@dataclass(frozen=True)
class LogEntry:
    """One line of a server's log."""

    time: float
    source: str  # "stdout", "stderr" or a logger name
    level: str
    message: str

    def format(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"{stamp} {self.level:<7} {self.source}: {self.message}"


class LogRing:
    """A bounded, thread-safe buffer of a server's recent log lines."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._partial: dict[str, str] = {}
        self.version = 0  # bumped on every append, so viewers can poll cheaply

    def append(self, source: str, level: str, message: str) -> None:
        entry = LogEntry(time.time(), source, level, message.rstrip("\n"))
        with self._lock:
            self._entries.append(entry)
            self.version += 1
        note_request_log(source, level, entry.message, entry.time)  # a queued request's log

    def write(self, source: str, text: str) -> None:
        """Stream text (prints): complete lines become entries, the rest waits."""
        level = "ERROR" if source == "stderr" else "INFO"
        with self._lock:
            buffered = self._partial.pop(source, "") + text
        *lines, rest = buffered.split("\n")
        for line in lines:
            self.append(source, level, line)
        if rest:
            with self._lock:
                self._partial[source] = rest

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self.entries())

    def text(self, last: int | None = None) -> str:
        entries = self.entries()
        return "\n".join(e.format() for e in entries[-last if last else 0 :])


class _RoutedStream(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes from a server's context go to its ring,
    everything else to the stream that was there before."""

    def __init__(self, source: str, fallback: TextIO) -> None:
        self._source = source
        self._fallback = fallback

    def write(self, text: str) -> int:
        ring = current_ring.get()
        if ring is None:
            return self._fallback.write(text)
        ring.write(self._source, text)
        return len(text)

    def flush(self) -> None:
        if current_ring.get() is None:
            self._fallback.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


class _RingHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and getattr(record.exc_info[1], "__falkit_logged__", False):
            return  # already in the ring, logged where it was caught
        ring = current_ring.get()
        try:
            if ring is not None:
                ring.append(record.name, record.levelname, self.format(record))
            elif record.levelno >= logging.WARNING:
                sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_install_lock = threading.Lock()
_handler = _RingHandler()
_handler.setFormatter(logging.Formatter("%(message)s"))


def ensure_routed() -> None:
    """Cheap per-request check: re-wrap sys.stdout/sys.stderr if something (``%%capture``,
    ``redirect_stdout``, a test's capture) swapped them since ``install()``."""
    if not (isinstance(sys.stdout, _RoutedStream) and isinstance(sys.stderr, _RoutedStream)):
        install()


def install() -> None:
    """Route prints and logs made in server contexts to their rings (idempotent; re-wraps
    sys.stdout/sys.stderr if something replaced them since)."""
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _RoutedStream) and stream is not None:
                setattr(sys, name, _RoutedStream(name, stream))
        # uvicorn's records (tracebacks included) go to the ring of the server that made
        # them, not to the root logger, which would print them into the running cell.
        # User code's logging reaches the ring through the routed sys.stderr.
        for name in ("uvicorn", "falkit.server"):
            logger = logging.getLogger(name)
            if _handler not in logger.handlers:
                logger.addHandler(_handler)
            logger.propagate = False
