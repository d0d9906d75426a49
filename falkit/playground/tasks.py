"""Background work for the widgets: named daemon threads that stop on request. Widget
callbacks run on the kernel's shell thread; anything that waits (a request, a socket
read, polling) runs here so the kernel stays free."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

JOIN_SECONDS = 5.0


class Task:
    """One background thread named ``falkit-playground-<what>`` (the test suite's leak
    check looks for that prefix) with a ``stopping`` event it should poll."""

    def __init__(self, what: str, target: Callable[[Task], Any]) -> None:
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._target = target
        self._thread = threading.Thread(
            target=self._run, name=f"falkit-playground-{what}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target(self)
        except BaseException as exc:  # kept for the widget (and tests) to show, not lost
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the work to finish; True when it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = JOIN_SECONDS) -> None:
        self.stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
