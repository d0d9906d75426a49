"""What the cell shows while an App's ``setup()`` runs: the elapsed time, and the lines
setup prints or logs.

Setup runs on the server's thread, so its prints land in the server's log ring like any
handler's (see ``logs``). While the cell that started the server waits, it echoes those
new ring lines into itself, so a slow model load is visible where the user is looking; the
lines stay in the ring too. A ``tqdm.auto`` bar needs nothing from here: in a kernel it is
a widget, and ipykernel sends displays made on other threads to the cell that is running.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .logs import LogRing

# Fast setups show no progress line at all. Measured: a trivial App takes up to ~1 s to
# start on a loaded 2-core machine, and a line that comes and goes with load makes
# notebook outputs (and nbval) unstable; model loads worth watching take seconds.
SHOW_AFTER_S = 2.0
UPDATE_EVERY_S = 0.25
SCRIPT_NOTICE_AFTER_S = 5.0  # outside a kernel: one line, only for a really slow setup


def _kernel_display() -> Any:
    """IPython's ``display`` when a kernel is running, else ``None`` (no IPython import)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import display

    return display


class _Line:
    """A one-line display object (plain text in the notebook)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class StartupProgress:
    """Reports a starting App to the waiting cell; call ``tick()`` while waiting and
    ``close(outcome)`` once. Outside a kernel, one line goes to stderr if setup is slow."""

    def __init__(self, label: str, ring: LogRing) -> None:
        self.label = label
        self._ring = ring
        self._seen = ring.version
        self._began = time.monotonic()
        self._shown_at = 0.0
        self._display = _kernel_display()
        self._handle: Any = None
        self._announced = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def tick(self) -> None:
        self._echo_new_lines()
        now = time.monotonic()
        if self.elapsed < SHOW_AFTER_S or now - self._shown_at < UPDATE_EVERY_S:
            return
        self._shown_at = now
        self._show(f"{self.label}: setup running, {self.elapsed:.1f} s")

    def close(self, outcome: str) -> None:
        """Final line, e.g. ``ready after 2.1 s``; shown only if progress was shown."""
        self._echo_new_lines()
        if self._handle is not None:
            self._handle.update(_Line(f"{self.label}: {outcome}"))
        elif self._announced:
            sys.stderr.write(f"falkit: {self.label}: {outcome}\n")

    def _show(self, text: str) -> None:
        if self._display is None:
            if not self._announced and self.elapsed >= SCRIPT_NOTICE_AFTER_S:
                self._announced = True
                sys.stderr.write(f"falkit: {self.label}: setup running...\n")
            return
        if self._handle is None:
            self._handle = self._display(_Line(text), display_id=True)
        else:
            self._handle.update(_Line(text))

    def _echo_new_lines(self) -> None:
        version = self._ring.version
        if version == self._seen:
            return
        fresh = self._ring.entries()[-(version - self._seen) :]
        self._seen = version
        for entry in fresh:
            stream = sys.stderr if entry.level in ("ERROR", "WARNING", "CRITICAL") else sys.stdout
            stream.write(entry.message + "\n")
