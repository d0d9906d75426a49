"""Cells first: a server inside a Jupyter kernel must not make the notebook sluggish.

A server in the kernel shares the interpreter with the kernel's own threads: one GIL and
one garbage collector. Under wrk load a trivial cell took ~100 ms at p99, against ~17 ms
with the same server in another process (benchmarks/kernel_responsiveness.py). Three
causes, three measures, all applied by ``install()`` when the first server starts in a
kernel (figures: medians of alternating runs, README "Benchmarks"):

1. **Garbage collection.** The kernel's heap is large (IPython, the user's objects: ~90k
   tracked objects before any model). At CPython's default ``gc`` threshold of 700, the
   objects of the requests in flight alone crossed it: the collector ran ~80-110 times
   a second under load and promoted live request objects until a full collection ran every
   couple of seconds, 55-90 ms each with the GIL held -- the p99 cells. The young
   generation's threshold is raised to 10,000 (CPython 3.13 itself moved it to 2,000):
   under the same load no collection ran in 6 s, and the server answered ~1.8x the
   requests. Only *when* cycles are collected changes, not what is collected.
2. **GIL hand-offs.** The GIL is handed over every 1 ms instead of 5 ms, so each of a
   cell's hand-offs between the kernel's threads waits less (p99 347 -> 216 ms, before
   the other two measures).
3. **The kernel's own work first.** While ipykernel handles a message -- from its
   ``pre_handler_hook`` to its ``post_handler_hook`` -- each server thread, at each new
   request, waits until the kernel is done, for at most ``PAUSE_S``. The cell's own code
   is favoured only for its first ``USER_GRACE_S`` (compiling it, a quick cell, showing
   its result): past that it may be waiting for the server itself (a client call,
   ``%fal bench``), and a server must not be slowed by the cell that measures it.

Values the user set (not the interpreter's defaults) are left alone. Outside a kernel
nothing is installed and a request pays one ``Event.is_set()``.
"""

from __future__ import annotations

import gc
import sys
import threading
from time import perf_counter
from typing import Any

#: The longest a request waits for the kernel to finish its work on one message.
PAUSE_S = 0.002
#: How long into a cell's own code the kernel is still favoured (compiling it, running a
#: quick cell, displaying its result); past it the cell competes like any thread.
USER_GRACE_S = 0.02

#: The GIL switch interval in a kernel (seconds; Python's default is 0.005).
SWITCH_INTERVAL = 0.001
#: The young generation's collection threshold in a kernel (CPython's default: 700).
GC_THRESHOLD = 10_000
_DEFAULT_GC_THRESHOLDS = {(700, 10, 10), (2000, 10, 0), (2000, 10, 10)}

# Cleared while ipykernel handles a message (its pre/post handler hooks).
_kernel_idle = threading.Event()
_kernel_idle.set()
_installed_on: Any = None
# Kernel threads change it, server threads read it: how deep in (possibly nested) user
# code the kernel is, and since when the outermost has been running (0.0 when none is).
_state = {"user_depth": 0, "user_since": 0.0}


def yield_to_kernel() -> None:
    """Called by a server thread at each request: waits (GIL released) while the kernel
    is handling a message, at most ``PAUSE_S``."""
    if _kernel_idle.is_set():
        return
    since = _state["user_since"]
    if since and perf_counter() - since > USER_GRACE_S:
        return  # the cell's own code has run a while: it may be waiting for this server
    _kernel_idle.wait(PAUSE_S)


def running_kernel() -> Any:
    """The ipykernel this code runs in (``None`` outside one), without importing IPython
    where nothing did."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None)


def install() -> bool:
    """Tune and hook the running IPython kernel (once); False outside a kernel."""
    global _installed_on
    kernel = running_kernel()
    if kernel is None or not hasattr(kernel, "pre_handler_hook"):
        return False
    if _installed_on is kernel:
        return True
    if sys.getswitchinterval() == 0.005:
        sys.setswitchinterval(SWITCH_INTERVAL)
    thresholds = gc.get_threshold()
    if thresholds in _DEFAULT_GC_THRESHOLDS:
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
    before, after = kernel.pre_handler_hook, kernel.post_handler_hook

    def pre_handler_hook() -> None:
        _kernel_idle.clear()
        before()

    def post_handler_hook() -> None:
        try:
            after()
        finally:
            _kernel_idle.set()

    kernel.pre_handler_hook = pre_handler_hook
    kernel.post_handler_hook = post_handler_hook
    shell = kernel.shell
    shell.events.register("pre_run_cell", _user_code_starts)
    shell.events.register("post_run_cell", _user_code_ends)
    _installed_on = kernel
    return True


def _user_code_starts(info: Any) -> None:
    if _state["user_depth"] == 0:
        _state["user_since"] = perf_counter()
    _state["user_depth"] += 1


def _user_code_ends(result: Any) -> None:
    _state["user_depth"] = max(0, _state["user_depth"] - 1)
    if _state["user_depth"] == 0:
        _state["user_since"] = 0.0
