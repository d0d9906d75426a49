"""``LiveSource``: live media into a realtime route, next to its JSON console. The camera,
the microphone or a sketch pad in the page (``LiveView``), or a list or folder of images
looped from the kernel, each frame sent as the route's media field through
``Client.realtime`` (``LiveStream``), with the outputs shown live: images in the page as
a video, anything else as a rolling log, and frames/s, drops and round trips with a
latency histogram.

Frames go page -> kernel over the widget's comm (binary buffers), kernel -> server over
loopback, so this works wherever the page can reach the kernel, not the server's port.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as W

from .. import codec
from ..exceptions import FormError
from . import charts, media, render
from .context import Context
from .form import SchemaForm
from .live_stream import LiveStream, SessionSpec
from .live_view import LiveView, frame_message, round_trips
from .tasks import Task

_SOURCES = {
    "image": [("camera", "camera"), ("sketch pad", "sketch"), ("looped images", "loop")],
    "audio": [("microphone", "microphone"), ("looped clips", "loop")],
}
_FILES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".wav"}
_PAINT_EVERY_S = 0.25  # stats and log redraws, not per frame (a frame can come every ms)
_LOG_LINES = 40
_KEPT_OUTPUTS = 32
_POLL_S = 0.1
_DEFAULT_INTERVAL_MS = 128  # fal-js's default throttleInterval


class LiveSource:
    """Live media for one realtime route whose input model has a media field (see
    ``falkit.playground.media``). ``start("camera")`` / ``start("sketch")`` /
    ``start("microphone")`` capture in the page; ``loop(images)`` sends a list (or folder)
    of images from the kernel, with no page needed; ``stop()`` ends the stream and closes
    the session; ``summary()`` has the figures.

    Example::

        live = falkit.playground(server).open_route("/filter").live
        live.loop(["a.jpg", "b.jpg"])
        live.wait_outputs(20)
        live.stop()
    """

    def __init__(self, ctx: Context, spec: Any, form: SchemaForm, fields: list[media.MediaField]):
        self.ctx, self.spec, self.form, self.fields = ctx, spec, form, fields
        self.view = LiveView()
        self.stream = LiveStream(
            self._plan,
            self,
            interval=_DEFAULT_INTERVAL_MS / 1000,
            generation=lambda: self.ctx.server.app_cls,
        )
        self.outputs: deque[Any] = deque(maxlen=_KEPT_OUTPUTS)  # the latest, newest last
        self.why = ""
        self._frames: list[tuple[bytes, str]] = []
        self._repeat = True
        self._feeder: Task | None = None
        self._log: deque[str] = deque(maxlen=_LOG_LINES)
        self._painted = 0.0
        self._lock = threading.Lock()  # the feeder slot; never held while joining a thread
        self._log_lock = threading.Lock()
        self._build_widgets()
        self.view.on_msg(lambda _widget, content, buffers: self.receive(content, buffers))
        self.view.observe(self._on_running, names="running")

    @classmethod
    def for_route(cls, ctx: Context, spec: Any, form: SchemaForm) -> LiveSource | None:
        """The live source of a realtime route, or None when its input has no media field."""
        fields = media.media_fields(media.input_model(ctx.server.app_cls, spec))
        return cls(ctx, spec, form, fields) if fields else None

    def _build_widgets(self) -> None:
        field = self.fields[0]
        self.field = W.Dropdown(
            options=[f.name for f in self.fields], value=field.name, description="field"
        )
        self.field.layout.display = None if len(self.fields) > 1 else "none"
        self.source = W.Dropdown(options=_SOURCES[field.kind], layout=W.Layout(width="160px"))
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.throttle = W.BoundedIntText(
            value=_DEFAULT_INTERVAL_MS, min=0, max=10_000, description="throttle ms",
            tooltip="one frame per interval, the latest (fal-js's throttleInterval); 0: off",
        )  # fmt: skip
        self.in_flight = W.BoundedIntText(
            value=2, min=1, max=61, description="in flight", tooltip="frames sent, not answered"
        )
        self.buffering = W.BoundedIntText(
            value=0, min=0, max=60, description="max_buffering",
            tooltip="inputs the server may queue (fal's max_buffering); 0: the route's own",
        )  # fmt: skip
        for box in (self.throttle, self.in_flight, self.buffering):
            box.layout.width = "190px"
        self.state = W.HTML("<i>stopped</i>")
        self.stats = W.HTML()
        self.log = W.HTML(layout=W.Layout(max_height="200px", overflow="auto"))
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.throttle.observe(lambda _: self._set_interval(), names="value")
        self.field.observe(lambda _: self._pick_field(), names="value")
        for widget, name in (
            (self.start_button, "start"), (self.stop_button, "stop"), (self.source, "source"),
            (self.stats, "stats"), (self.log, "log"), (self.state, "state"),
        ):  # fmt: skip
            widget.add_class(f"falkit-live-{name}")  # stable hooks for browser tests, CSS
        title = W.HTML(self._title())
        self.widget = W.VBox(
            [
                title,
                W.HBox([self.source, self.start_button, self.stop_button, self.state]),
                W.HBox([self.throttle, self.in_flight, self.buffering, self.field]),
                self.view,
                self.stats,
                self.log,
            ],
            layout=W.Layout(border="1px dashed #ccc", padding="4px", margin="4px 0"),
        )

    def _title(self) -> str:
        field = self._field()
        return (
            f"<b>live source</b> → field <code>{html.escape(field.name)}</code> "
            f"({field.kind}, sent as {field.encoding.replace('_', ' ')})"
        )

    def _field(self) -> media.MediaField:
        return next((f for f in self.fields if f.name == self.field.value), self.fields[0])

    def _pick_field(self) -> None:
        self.source.options = _SOURCES[self._field().kind]
        self.widget.children[0].value = self._title()

    def _set_interval(self) -> None:
        self.stream.interval = self.throttle.value / 1000
        self.view.interval_ms = self.throttle.value

    # -- starting and stopping --

    @property
    def streaming(self) -> bool:
        return self.stream.running

    def start(self, source: str | None = None) -> None:
        """Start streaming from ``source`` (``camera``, ``microphone``, ``sketch``, or
        ``loop`` after ``loop()``), or from the one picked in the dropdown."""
        if source is not None:
            self.source.value = source
        if self.source.value == "loop" and not self._frames:
            self.state.value = "<i>nothing to loop yet: call <code>live.loop(images)</code></i>"
            return
        self.view.error = ""
        self.view.source = self.source.value
        if self.view.running:
            self._begin()  # already marked running (a page start racing this one)
        self.view.running = True

    def loop(self, items: Iterable[Any] | str | Path, *, repeat: bool = True) -> None:
        """Send ``items`` from the kernel, one frame per throttle interval (or as fast as
        the route answers with the throttle off), over and over unless ``repeat=False``:
        image or WAV bytes, paths, PIL images or image arrays, or a folder of such files."""
        if isinstance(items, (str, Path)) and Path(items).is_dir():
            items = sorted(p for p in Path(items).iterdir() if p.suffix.lower() in _FILES)
        frames = [media.as_frame(item) for item in items]  # type: ignore[union-attr]
        if not frames:
            raise ValueError("loop() needs at least one image (or audio clip)")
        self.stop()
        self._frames, self._repeat = frames, repeat
        self.start("loop")

    def stop(self) -> None:
        """End the stream: the page releases the camera or microphone, the session closes."""
        self.view.running = False
        self._end()

    def _on_running(self, change: dict[str, Any]) -> None:
        # Set by start()/stop(), by the page (its own start, or a camera it could not
        # open), or by the stream when it ended.
        if change["new"]:
            self._begin()
        else:
            self._end()

    def _begin(self) -> None:
        with self._lock:
            if self.stream.running:
                return
            self._set_interval()
            self.why = ""
            self.outputs.clear()
            self.stream.start()
            if self.view.source == "loop" and self._frames:
                self._feeder = Task("live-loop", self._feed)
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.state.value = "<i>connecting...</i>"

    def _end(self) -> None:
        with self._lock:
            feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.stop()
        self.stream.stop()
        self.start_button.disabled, self.stop_button.disabled = False, True
        self._paint(force=True)

    def _feed(self, task: Task) -> None:
        sent = 0
        while not task.stopping.is_set() and (self._repeat or sent < len(self._frames)):
            if self.stream.wants_frame(_POLL_S):
                data, mime = self._frames[sent % len(self._frames)]
                self.stream.offer(sent, data, mime)
                sent += 1

    def close(self) -> None:
        """Stop, then close the widgets (the page's view goes, and with it any capture)."""
        self.stop()
        self.view.close()
        self.widget.close()

    # -- what the page sends --

    def receive(self, content: Any, buffers: Any) -> None:
        """A message from the page over the widget's comm (``LiveView`` documents them)."""
        self.stream.add_page_latencies(round_trips(content))
        frame = frame_message(content, buffers)
        if frame is None:
            return
        if self.stream.running:
            self.stream.offer(*frame)
        else:  # not streaming (yet, or any more): the page must not wait for it
            self.view.ack(frame[0], True)

    # -- one session --

    def _plan(self) -> SessionSpec:
        server = self.ctx.server
        spec = next((s for s in server.routes if s.path == self.spec.path), None)
        if spec is None or spec.kind != "realtime":
            raise LookupError(f"{self.spec.path} is no longer a realtime route")
        fields = media.media_fields(media.input_model(server.app_cls, spec))
        field = next((f for f in fields if f.name == self._field().name), None)
        if field is None:
            raise LookupError(f"the input of {spec.path} has no media field {self._field().name!r}")
        buffering = self.buffering.value or None
        window = None
        if media.answers_each_input(server.app_cls, spec):
            queue = buffering or spec.buffering
            # No more in flight than the server keeps: every drop then happens (and is
            # counted) here, none unseen in the server's queue.
            window = min(self.in_flight.value, queue + 1) if queue else self.in_flight.value

        def make_input(data: bytes, mime: str) -> Any:
            return {**self._rest(field.name), field.name: media.encode_frame(field, data, mime)}

        def open_session() -> Any:
            return self.ctx.client.realtime(
                spec.path,
                encode_message=field.encoder,
                decode_message=codec.decode_tensors,
                max_buffering=buffering,
            )

        return SessionSpec(open_session, make_input, window)

    def _rest(self, name: str) -> dict[str, Any]:
        """The other fields of the input, as the console's form holds them now."""
        form = self.form
        if form.raw_mode.value:
            body = form.value()
            if not isinstance(body, dict):
                raise FormError("the request body must be a JSON object to carry a frame")
            return {k: v for k, v in body.items() if k != name}
        return {n: f.value() for n, f in form.fields.items() if n != name and f.included()}

    # -- what the stream reports (its Sink) --

    def opened(self, window: int | None) -> None:
        self.view.window = window or 0
        self.view.reset()
        where = html.escape(self.spec.path)
        self.state.value = f"<b style='color:#1a7f37'>streaming</b> to <code>{where}</code>"

    def taken(self, seq: int, dropped: bool) -> None:
        # Only a page waits for acks, and where outputs are matched to frames (window > 0)
        # only for drops: the output frees the slot, one message fewer per frame.
        if self.view.source != "loop" and (dropped or not self.view.window):
            self.view.ack(seq, dropped)

    def output(self, seq: int, value: Any, latency_ms: float) -> None:
        self.outputs.append(value)
        image = media.find_image(value)
        self.view.show_output(seq, image)
        if image is None:
            with self._log_lock:
                self._log.append(render.pretty(value).replace("\n", " "))
        self._paint()

    def note(self, text: str) -> None:
        with self._log_lock:
            self._log.append(f"! {text}")
        self._paint()

    def ended(self, why: str) -> None:
        self.why = why
        color = "#777" if why == "stopped" else "#cf222e"
        self.state.value = f"<b style='color:{color}'>{html.escape(why)}</b>"
        self.view.running = False  # the page stops capturing; _on_running ends the rest
        self._paint(force=True)

    # -- figures --

    def summary(self) -> dict[str, Any]:
        """Counts, frames/s, round trips (p50/p99 ms, kernel to server and, when a page
        sent the frames, page to page) and why the stream last ended."""
        return {**self.stream.stats.summary(), "ended": self.why}

    @property
    def last_output(self) -> Any:
        """The newest output (None before the first)."""
        return self.outputs[-1] if self.outputs else None

    @property
    def received(self) -> int:
        return self.stream.stats.received

    def wait_outputs(self, count: int, timeout: float = 30.0) -> bool:
        """True once ``count`` outputs arrived in this stream (scripts and tests; bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received >= count:
                return True
            time.sleep(0.02)
        return self.received >= count

    def log_text(self) -> str:
        with self._log_lock:
            return "\n".join(self._log)

    def _paint(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._painted < _PAINT_EVERY_S:
            return
        self._painted = now
        stats = self.stream.stats
        page = list(stats.page_ms)
        self.stats.value = stats_html(self.summary()) + charts.histogram(
            (page or list(stats.latencies_ms))[-500:]
        )
        with self._log_lock:
            lines = list(self._log)
        self.log.value = (
            "<pre style='margin:0;font-size:90%'>" + html.escape("\n".join(lines)) + "</pre>"
            if lines
            else ""
        )


def stats_html(summary: dict[str, Any]) -> str:
    """One line of a stream's figures: frames/s, counts, drops, round trips."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    text = (
        f"<b>{summary['fps']:.1f} frames/s</b> · {summary['received']} outputs of "
        f"{summary['sent']} sent · {summary['dropped']} dropped"
    )
    if summary["page_p50_ms"] is not None:
        text += (
            f" · round trip in the page p50 {ms(summary['page_p50_ms'])}, "
            f"p99 {ms(summary['page_p99_ms'])}"
        )
    text += f" · kernel↔server p50 {ms(summary['p50_ms'])}, p99 {ms(summary['p99_ms'])} "
    return f"<span class='falkit-live-figures'>{text}</span>"
