"""The threads a server's sync (``def``) realtime handlers run in (``Workers``), so that
a sync handler never runs on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
import typing
from collections.abc import Callable
from typing import Any

#: The most worker threads a server's sync realtime handlers run in at once: as many as
#: asyncio's default executor, which ran them before.
MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)


class Workers:
    """The threads sync realtime handlers run in: one set per event loop (server), started
    by its first session with a sync handler and stopped when the last one ends.

    A call is one ``SimpleQueue.put`` there and one ``call_soon_threadsafe`` back, where
    ``asyncio.to_thread`` made an executor work item, a thread-safe future and an asyncio
    future chained to it: a sync handler's message spends 46 us in the server against
    81 (one session, median). A thread is started when a call finds none idle, up to
    ``MAX_WORKERS`` (as the executor did): blocking handlers of that many sessions run at
    once. The threads are shared, not one per session: under many sessions a thread that
    finishes a call takes the next one waiting without sleeping, where a session's own
    thread had to be woken for each message (64 sessions, same run: 0.92x the bare echo
    shared, 0.63x one thread per session, 0.63x ``to_thread``). Only the handler's call
    runs here; decoding, validation and encoding stay on the loop, where the frame was
    just read: the whole step in the thread held the GIL longer against the loop's own
    work and took 60 us. Each call runs in a copy of its caller's context, as
    ``to_thread`` runs it (handler prints reach the server's log that way).

    What not blocking the loop costs by itself: the bare FastAPI echo of
    ``benchmarks/realtime.py`` with its handler in one thread fed as cheaply as Python allows
    answers 0.76-0.84x the round trips of the same echo on the loop; a sync handler here
    answers 0.82-0.99x that floor (one session, small messages, 2 cores)."""

    _of_loop: typing.ClassVar[dict[asyncio.AbstractEventLoop, Workers]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.lock = threading.Lock()  # guards ``idle``
        self.idle = 0  # threads free for a call not yet handed to one
        self.threads: list[threading.Thread] = []
        self.sessions = 0
        self.alive = 0
        self.stopped: asyncio.Future[None] = loop.create_future()

    @classmethod
    def enter(cls) -> Workers:
        """The running loop's workers, counting one more session that uses them."""
        loop = asyncio.get_running_loop()
        workers = cls._of_loop.get(loop)
        if workers is None:
            workers = cls._of_loop[loop] = cls(loop)
        workers.sessions += 1
        return workers

    async def leave(self) -> None:
        """One session fewer; the last one stops the threads and waits for them to end
        (a call still running, of a session cut off, finishes first)."""
        self.sessions -= 1
        if self.sessions:
            return
        del Workers._of_loop[self.loop]  # a session starting meanwhile gets fresh workers
        for _ in self.threads:
            self.jobs.put(None)
        if self.alive:
            # Shielded: a session cancelled here (its client's portal closing, the server
            # stopping) must not cancel the future the threads' exits settle.
            await asyncio.shield(self.stopped)
        for thread in self.threads:
            thread.join()  # each has nothing left to do but return

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` in a worker thread; the future has its result or exception."""
        future = self.loop.create_future()
        self.jobs.put((future, contextvars.copy_context(), fn, args))
        with self.lock:
            start = not self.idle and len(self.threads) < MAX_WORKERS
            if self.idle:
                self.idle -= 1  # that thread is this call's, even before it takes it
        if start:
            self._start()
        return future

    def _start(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"falkit-realtime-{len(self.threads)}", daemon=True
        )
        self.threads.append(thread)
        self.alive += 1
        thread.start()

    def _work(self) -> None:
        try:
            while self._do(self.jobs.get()):
                with self.lock:
                    self.idle += 1
        finally:
            # Without its loop (the server stopped meanwhile) nobody waits for this.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._exited)

    def _exited(self) -> None:
        self.alive -= 1
        if not self.alive:
            self.stopped.set_result(None)

    def _do(self, job: _Job | None) -> bool:
        # One frame per call: nothing of a finished call (its input, its output) stays
        # referenced while the thread waits for the next one.
        if job is None:
            return False
        future, context, fn, args = job
        try:
            result, error = context.run(fn, *args), None
        except BaseException as exc:  # handed to the session, as executors do
            result, error = None, exc
        try:
            self.loop.call_soon_threadsafe(_settle, future, result, error)
        except RuntimeError:  # the loop is closed: the session is gone
            return False
        return True


_Job = tuple["asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):  # a future refuses it (PEP 479's reason)
        future.set_exception(RuntimeError(f"handler raised StopIteration: {error}"))
    else:
        future.set_exception(error)
