"""``LiveStream``: frames from a live source sent to a realtime route, as fal-js sends them
(the latest frame per throttle interval), through one ``Client.realtime`` session at a time.

No widgets here. A frame is offered into a one-slot mailbox (a newer frame replaces one not
yet sent: counted as dropped); one thread sends it when the throttle interval has passed
and fewer than ``window`` frames are unanswered, another reads the outputs. On a route
that answers every input once (fal's unary mode) outputs are matched to frames in order;
the window is kept within what the server would queue (``max_buffering`` + 1), so no frame
is dropped unseen on the server and every drop is counted here. When the served class
changes (a hot swap), the stream drains, closes its session and opens a new one, which the
server gives the new handlers; any other end closes the session and reports why.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..exceptions import RealtimeError
from ..serving import percentile
from .tasks import Task

_POLL_S = 0.1  # how soon a waiting sender notices a stop or a swap
_RECV_POLL_S = 0.2
_DRAIN_S = 2.0  # a swap waits this long at most for the frames in flight to be answered
_FPS_SPAN_S = 2.0


@dataclass(frozen=True)
class SessionSpec:
    """What one session needs: how to open it, how a frame (bytes, mime) becomes an input,
    and how many frames may be unanswered (``None``: outputs are not matched to frames,
    as on a streaming route, so none is waited for)."""

    open: Callable[[], AbstractContextManager[Any]]
    input: Callable[[bytes, str], Any]
    window: int | None


class Sink(Protocol):
    """Who hears what a stream does (the live source panel)."""

    def opened(self, window: int | None) -> None: ...
    def taken(self, seq: int, dropped: bool) -> None: ...
    def output(self, seq: int, value: Any, latency_ms: float) -> None: ...
    def note(self, text: str) -> None: ...
    def ended(self, why: str) -> None: ...


@dataclass
class _Frame:
    seq: int
    data: bytes
    mime: str


class LiveStats:
    """Counters and recent round trips of a stream (bounded memory)."""

    def __init__(self, window: int = 4096) -> None:
        self.offered = self.sent = self.received = self.dropped = 0
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.page_ms: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=256)

    def record(self, now: float, latency_ms: float) -> None:
        self.received += 1
        self.latencies_ms.append(latency_ms)
        self._times.append(now)

    def fps(self) -> float:
        """Outputs per second over the two seconds up to the latest output (so a stopped
        stream keeps its last rate)."""
        if not self._times:
            return 0.0
        times = [t for t in self._times if t >= self._times[-1] - _FPS_SPAN_S]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts, frames/s, and p50/p99 round trips in ms (kernel to server, and page
        to page when a page measured them)."""
        kernel, page = sorted(self.latencies_ms), sorted(self.page_ms)

        def pct(values: list[float], q: float) -> float | None:
            found = percentile(values, q)
            return None if found is None else round(found, 2)

        return {
            "offered": self.offered,
            "sent": self.sent,
            "received": self.received,
            "dropped": self.dropped,
            "fps": round(self.fps(), 2),
            "p50_ms": pct(kernel, 0.5),
            "p99_ms": pct(kernel, 0.99),
            "page_p50_ms": pct(page, 0.5),
            "page_p99_ms": pct(page, 0.99),
        }


class LiveStream:
    """Sends offered frames to a route; ``start()``, ``offer()``, ``stop()``. ``plan`` is
    asked for a ``SessionSpec`` each time a session opens; ``generation`` names the served
    class (a new value: the app was hot-swapped)."""

    def __init__(
        self,
        plan: Callable[[], SessionSpec],
        sink: Sink,
        *,
        interval: float = 0.128,
        generation: Callable[[], object] = lambda: None,
    ) -> None:
        self.interval = interval
        self.stats = LiveStats()
        self._plan = plan
        self._sink = sink
        self._generation = generation
        self._cond = threading.Condition()
        self._mailbox: _Frame | None = None
        self._inflight: deque[tuple[int, float]] = deque()
        self._window: int | None = None
        self._last_sent = float("-inf")
        self._reader_why = ""
        self._session_now: Any = None
        self._task: Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and self._task.alive

    def start(self) -> None:
        """Open a session and send frames as they are offered (no-op when running)."""
        if self.running:
            return
        self.stats = LiveStats()
        self._task = Task("live", self._run)

    def stop(self) -> None:
        """Close the session and end the threads (bounded wait)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.stopping.set()
        with self._cond:
            self._cond.notify_all()
            session = self._session_now
        if session is not None and task.alive:
            # A send blocked by a server pushing back (a streaming route, no window)
            # returns once the socket closes.
            session.close()
        task.stop()

    def offer(self, seq: int, data: bytes, mime: str) -> None:
        """A new frame; it replaces one still waiting to be sent (that one is dropped)."""
        with self._cond:
            old, self._mailbox = self._mailbox, _Frame(seq, data, mime)
            self.stats.offered += 1
            self.stats.dropped += old is not None
            self._cond.notify_all()
        if old is not None:
            self._sink.taken(old.seq, True)

    def wants_frame(self, timeout: float) -> bool:
        """Wait until a frame offered now would go out at once; True when it would (a
        source that can make frames on demand paces itself by this, dropping none)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._mailbox is not None or self._wait_s() > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    return False
                self._cond.wait(min(left, self._wait_s() or _POLL_S, _POLL_S))
            return self.running

    def add_page_latencies(self, values_ms: list[float]) -> None:
        """Round trips a page measured (frame sent to output shown), for the stats."""
        with self._cond:
            self.stats.page_ms.extend(float(v) for v in values_ms)

    # -- the sending thread --

    def _run(self, task: Task) -> None:
        why = "stopped"
        try:
            while not task.stopping.is_set():
                why = self._session(task, self._generation())
                if task.stopping.is_set():
                    why = "stopped"
                if why != "swapped":
                    break
        finally:
            with self._cond:  # a frame still waiting at a stop was never due: not a drop
                self._mailbox, self._window = None, None
                self._inflight.clear()
            self._sink.ended(why)

    def _session(self, task: Task, generation: object) -> str:
        entered = False
        try:
            spec = self._plan()
            with spec.open() as session:
                entered = True
                return self._stream(task, session, spec, generation)
        except Exception as exc:  # a refused connect, a failed send or sink: shown
            return f"{'closed after an error' if entered else 'could not open a session'}: {exc}"
        return "stopped"  # the session's context swallowed an error

    def _stream(self, task: Task, session: Any, spec: SessionSpec, generation: object) -> str:
        with self._cond:
            self._window, self._reader_why = spec.window, "session ended by the server"
            self._inflight.clear()
            self._session_now = session
        reader = Task("live-recv", lambda t: self._read(t, session))
        try:
            self._sink.opened(spec.window)
            why = self._pump(task, session, spec, reader, generation)
            if why == "swapped":
                self._drain(reader)
            return why
        finally:
            with self._cond:
                self._session_now = None
            session.close()  # wakes the reader at once
            reader.stop()

    def _pump(
        self, task: Task, session: Any, spec: SessionSpec, reader: Task, generation: object
    ) -> str:
        while True:
            with self._cond:
                frame = self._next_frame(task, reader, generation)
                if isinstance(frame, str):
                    return frame
                self._last_sent = now = time.perf_counter()
                if self._window is not None:
                    self._inflight.append((frame.seq, now))
            self._sink.taken(frame.seq, False)
            try:
                body = spec.input(frame.data, frame.mime)
            except Exception as exc:  # a frame that will not decode, a form that will not read
                self._unsend(frame.seq)
                self._sink.note(f"frame {frame.seq} not sent: {exc}")
                continue
            try:
                session.send(body)
            except Exception:
                if reader.wait(1.0):  # the server ended the session: say why it did
                    return self._reader_why
                raise
            with self._cond:
                self.stats.sent += 1

    def _next_frame(self, task: Task, reader: Task, generation: object) -> _Frame | str:
        while True:
            if task.stopping.is_set():
                return "stopped"
            if not reader.alive:
                return self._reader_why
            if self._generation() is not generation:
                return "swapped"
            wait = self._wait_s()
            if wait <= 0 and self._mailbox is not None:
                frame, self._mailbox = self._mailbox, None
                return frame
            self._cond.wait(min(wait or _POLL_S, _POLL_S))

    def _wait_s(self) -> float:
        """Seconds until a frame may go out (0: now); the lock is held."""
        if self._window is not None and len(self._inflight) >= self._window:
            return _POLL_S
        return max(0.0, self._last_sent + self.interval - time.perf_counter())

    def _unsend(self, seq: int) -> None:
        with self._cond:
            if (seq, self._last_sent) in self._inflight:
                self._inflight.remove((seq, self._last_sent))
            self.stats.dropped += 1
            self._cond.notify_all()

    def _drain(self, reader: Task) -> None:
        deadline = time.monotonic() + _DRAIN_S
        with self._cond:
            while self._inflight and reader.alive and time.monotonic() < deadline:
                self._cond.wait(_POLL_S)
            self.stats.dropped += len(self._inflight)
            self._inflight.clear()

    # -- the reading thread --

    def _read(self, task: Task, session: Any) -> None:
        try:
            while not task.stopping.is_set():
                try:
                    output = session.recv(timeout=_RECV_POLL_S)
                except TimeoutError:
                    continue
                if output is None:
                    break
                self._on_output(output)
        except RealtimeError as exc:
            self._reader_why = f"{exc.error}: {exc.reason}"
        except Exception as exc:  # an output that will not decode: the session ends, shown
            self._reader_why = f"closed after an error: {exc}"
        finally:
            with self._cond:
                self._cond.notify_all()

    def _on_output(self, output: Any) -> None:
        now = time.perf_counter()
        with self._cond:
            if self._window is not None and self._inflight:
                seq, sent = self._inflight.popleft()
            else:  # streaming outputs: timed from the latest frame
                seq, sent = -1, self._last_sent
            latency = (now - sent) * 1000
            self.stats.record(now, latency)
            self._cond.notify_all()
        self._sink.output(seq, output, latency)
