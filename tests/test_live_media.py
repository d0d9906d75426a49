"""The playground's live source without a browser: frames offered as the page offers them
(``LiveSource.receive``, the comm's handler) or looped from the kernel, sent to real
servers on loopback. Throttling, buffering, the encoding per field type, hot swaps and
clean shutdown; one test sends frames over a real kernel's comm with binary buffers."""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated

import numpy as np
import pytest
import torch
from _support import poller, threads_named
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

import falkit as fal
from falkit import codec
from falkit.playground import LiveSource, Playground, playground
from falkit.playground.charts import histogram
from falkit.playground.media import (
    MediaField,
    encode_frame,
    encode_wav,
    find_image,
    media_fields,
)


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="JPEG")
    return out.getvalue()


until = poller(15.0)
live_threads = functools.partial(threads_named, "falkit-playground-live")


def page_frame(live: LiveSource, seq: int, data: bytes, mime: str = "image/jpeg", **extra):
    """What the page's module sends over the comm, handed to the comm's handler."""
    live.receive({"kind": "frame", "seq": seq, "mime": mime, **extra}, [memoryview(data)])


@pytest.fixture
def open_live(serve) -> Iterator[Callable[..., LiveSource]]:
    """``open_live(App, path)`` serves the app, opens its playground on ``path`` and
    returns that route's live source; everything is closed after the test."""
    opened: list[Playground] = []

    def _open(app_cls: type[fal.App], path: str) -> LiveSource:
        pg = playground(serve(app_cls))
        opened.append(pg)
        live = pg.open_route(path).live
        assert live is not None
        return live

    yield _open
    for pg in opened:
        pg.close()
    assert until(lambda: not live_threads(), 10), live_threads()


# -- which fields, and how a frame is encoded for each ------------------------------------


class Tensors(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    image: torch.Tensor
    mask: np.ndarray | None = None
    audio: bytes = b""
    prompt: str = "a cat"  # a plain string: no media name, not a media field
    photo_url: str = ""
    picture: Annotated[bytes, Field(json_schema_extra={"contentMediaType": "audio/wav"})] = b""


def test_media_fields_are_found_by_name_or_media_type_and_typed_by_annotation():
    assert media_fields(Tensors) == [
        MediaField("image", "image", "torch"),
        MediaField("mask", "image", "numpy"),
        MediaField("audio", "audio", "bytes"),
        MediaField("photo_url", "image", "data_uri"),
        MediaField("picture", "audio", "bytes"),
    ]
    assert MediaField("x", "image", "torch").encoder is codec.encode_tensors
    assert MediaField("x", "image", "bytes").encoder is codec.encode


def test_a_frame_is_encoded_as_the_field_takes_it():
    frame = jpeg((10, 200, 30), size=24)
    assert encode_frame(MediaField("f", "image", "bytes"), frame, "image/jpeg") == frame
    uri = encode_frame(MediaField("f", "image", "data_uri"), frame, "image/jpeg")
    assert uri.startswith("data:image/jpeg;base64,/9j/")
    array = encode_frame(MediaField("f", "image", "numpy"), frame, "image/jpeg")
    assert array.shape == (24, 24, 3) and array.dtype == np.uint8 and array[..., 1].mean() > 150
    tensor = encode_frame(MediaField("f", "image", "torch"), frame, "image/jpeg")
    assert tensor.shape == (3, 24, 24) and tensor.dtype == torch.uint8
    assert torch.equal(tensor.permute(1, 2, 0), torch.from_numpy(array))

    tone = np.sin(np.linspace(0, 40, 1600)).astype(np.float32) * 0.5
    clip = encode_wav(tone)
    assert encode_frame(MediaField("a", "audio", "bytes"), clip, "audio/wav") == clip
    samples = encode_frame(MediaField("a", "audio", "numpy"), clip, "audio/wav")
    assert samples.dtype == np.float32 and np.abs(samples - tone).max() < 1e-3
    assert encode_frame(MediaField("a", "audio", "torch"), clip, "audio/wav").shape == (1600,)


def test_output_images_are_found_in_every_form_a_handler_returns():
    frame = jpeg()
    assert find_image({"image": frame}) == (frame, "image/jpeg")
    uri = "data:image/jpeg;base64," + __import__("base64").b64encode(frame).decode()
    assert find_image([{"url": uri, "content_type": "image/jpeg"}]) == (frame, "image/jpeg")
    data, mime = find_image({"out": torch.rand(3, 16, 16)})
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size == (16, 16)
    assert find_image({"out": np.zeros((20, 30, 3), np.uint8)}) is not None
    assert find_image({"label": "cat", "scores": np.zeros(10)}) is None


def test_the_histogram_marks_p50_and_p99():
    svg = histogram([1.0, 2.0, 2.0, 3.0, 50.0])
    assert svg.startswith("<svg") and "p50" in svg and "p99" in svg and "(log)" in svg
    assert histogram([1.0]) == ""


# -- frames into a route ------------------------------------------------------------------


class Raw(BaseModel):
    image: bytes
    tag: str = "t"


class TypedApp(fal.App):
    """One route per encoding; each answers what its handler was given."""

    @fal.realtime("/bytes")
    def as_bytes(self, input: Raw) -> dict:
        return {
            "type": type(input.image).__name__,
            "size": Image.open(io.BytesIO(input.image)).size,
            "tag": input.tag,
        }

    @fal.realtime("/uri")
    def as_uri(self, input: FrameUri) -> dict:
        return {"type": type(input.image_url).__name__, "head": input.image_url[:23]}

    @fal.realtime(
        "/tensor", encode_message=codec.encode_tensors, decode_message=codec.decode_tensors
    )
    def as_tensor(self, input: FrameTensor) -> dict:
        return {
            "shape": list(input.image.shape),
            "dtype": str(input.image.dtype),
            "image": input.image,
        }

    @fal.realtime(
        "/array", encode_message=codec.encode_tensors, decode_message=codec.decode_tensors
    )
    def as_array(self, input: FrameArray) -> dict:
        return {"shape": list(input.frame.shape), "dtype": str(input.frame.dtype)}

    @fal.realtime("/text")
    def no_media(self, input: Words) -> dict:
        return {"words": input.words}


class FrameUri(BaseModel):
    image_url: str


class FrameTensor(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    image: torch.Tensor


class FrameArray(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    frame: np.ndarray


class Words(BaseModel):
    words: str


def test_each_field_type_reaches_the_handler_as_it_expects(serve):
    pg = playground(serve(TypedApp))
    try:
        live = pg.open_route("/bytes").live
        live.form.fields["tag"].set("from the form")  # the other fields: the console's form
        live.throttle.value = 0
        live.loop([jpeg(size=40)])
        assert live.wait_outputs(3)
        assert live.last_output == {"type": "bytes", "size": [40, 40], "tag": "from the form"}
        live.stop()
        assert live.why == "stopped"

        for path, expected in [
            ("/uri", {"type": "str", "head": "data:image/jpeg;base64,"}),
            ("/array", {"shape": [40, 40, 3], "dtype": "uint8"}),
        ]:
            live = pg.open_route(path).live
            live.loop([jpeg(size=40)])
            assert live.wait_outputs(1), live.summary()
            assert live.last_output == expected
            live.stop()

        live = pg.open_route("/tensor").live
        live.loop([jpeg(size=40)])
        assert live.wait_outputs(1), live.summary()
        out = live.last_output
        assert out["shape"] == [3, 40, 40] and out["dtype"] == "torch.uint8"
        assert isinstance(out["image"], torch.Tensor)  # outputs come back through the codec
        assert find_image(out) is not None  # and the tensor is shown as a picture
    finally:
        pg.close()
    assert not live_threads()


def test_a_route_without_a_media_field_has_no_live_source(serve):
    pg = playground(serve(TypedApp))
    try:
        assert pg.open_route("/text").live is None
        assert pg.open_route("/bytes").live is not None
    finally:
        pg.close()


class EchoApp(fal.App):
    @fal.realtime("/echo")
    def echo(self, input: Raw) -> dict:
        return {"got": input.image.decode()}

    @fal.realtime("/slow")
    def slow(self, input: Raw) -> dict:
        time.sleep(0.6)  # far longer than offering ten frames takes
        return {"got": input.image.decode()}


def got(live: LiveSource) -> list[str]:
    return [o["got"] for o in live.outputs]


def test_throttle_sends_only_the_latest_frame_per_interval(open_live):
    live = open_live(EchoApp, "/echo")
    live.throttle.value = 3000  # long enough that ten frames offered at once fall inside
    live.start("camera")  # the page's own start: frames then come over the comm
    page_frame(live, 0, b"frame-0")
    assert live.wait_outputs(1)
    for seq in range(1, 10):
        page_frame(live, seq, f"frame-{seq}".encode(), rtt=[12.5])
    assert live.wait_outputs(2)
    assert got(live) == ["frame-0", "frame-9"]
    summary = live.summary()
    assert summary["dropped"] == 8 and summary["sent"] == 2
    assert summary["page_p50_ms"] == 12.5  # round trips the page measured reach the stats
    live.stop()

    live.throttle.value = 0  # throttle off: every frame goes when the route has room
    live.start("camera")
    for seq in range(5):
        page_frame(live, seq, f"f{seq}".encode())
        assert live.wait_outputs(seq + 1)
    assert got(live) == ["f0", "f1", "f2", "f3", "f4"] and live.summary()["dropped"] == 0


def test_buffering_keeps_in_flight_within_what_the_server_queues(open_live):
    live = open_live(EchoApp, "/slow")
    live.throttle.value = 0
    live.buffering.value = 1  # fal's max_buffering: one queued input
    live.in_flight.value = 5  # more than the server would keep: capped at 1 + 1
    live.start("camera")
    assert until(lambda: live.view.window == 2)
    for seq in range(2):  # two in flight: the first being answered, one queued
        page_frame(live, seq, f"frame-{seq}".encode())
        assert until(lambda n=seq + 1: live.summary()["sent"] == n)
    for seq in range(2, 10):  # the window is full: each replaces the one waiting to go
        page_frame(live, seq, f"frame-{seq}".encode())
    assert live.wait_outputs(3)
    assert got(live) == ["frame-0", "frame-1", "frame-9"]  # the freshest after the two
    assert live.summary()["dropped"] == 7
    live.stop()


# -- ending the stream ----------------------------------------------------------------------

SESSIONS: dict[str, int] = {"opened": 0, "closed": 0}


class SessionApp(fal.App):
    """A bidi route that counts the sessions it saw open and close."""

    @fal.realtime("/live")
    async def live(self, inputs: AsyncIterator[Raw]) -> AsyncIterator[dict]:
        SESSIONS["opened"] += 1
        try:
            async for frame in inputs:
                yield {"size": len(frame.image)}
        finally:
            SESSIONS["closed"] += 1


@pytest.fixture
def sessions() -> Iterator[dict[str, int]]:
    SESSIONS.update(opened=0, closed=0)
    yield SESSIONS


def test_stopping_closes_the_session_on_the_server(open_live, sessions):
    live = open_live(SessionApp, "/live")
    live.loop([jpeg()])
    assert live.wait_outputs(5)
    assert live.view.window == 0  # a streaming route: outputs are not matched to frames
    assert sessions == {"opened": 1, "closed": 0}
    live.stop()
    assert until(lambda: sessions["closed"] == 1)
    assert not live_threads() and not live.view.running

    live.view.running = True  # the page's Start button sets this
    page_frame(live, 1, b"x" * 10)
    assert live.wait_outputs(1) and live.last_output == {"size": 10}
    live.view.running = False  # and its Stop, or a camera it could not open
    assert until(lambda: sessions["closed"] == 2)
    assert until(lambda: not live_threads())


def test_stopping_the_server_or_closing_the_playground_ends_the_stream(serve, sessions):
    server = serve(SessionApp)
    pg = playground(server)
    live = pg.open_route("/live").live
    live.loop([jpeg()])
    assert live.wait_outputs(3)
    server.stop()
    assert until(lambda: not live.streaming and not live.view.running)
    assert live.why != "stopped"  # it says the server ended it
    assert until(lambda: not live_threads())
    pg.close()

    pg = playground(serve(SessionApp))
    live = pg.open_route("/live").live
    live.loop([jpeg()])
    assert live.wait_outputs(3)
    pg.close()
    assert not live_threads()
    assert until(lambda: sessions["closed"] == 2)


def swap_app(version: int, extra_route: bool = False) -> type[fal.App]:
    class Swapped(fal.App):
        app_name = "swapped"

        @fal.realtime("/live")
        def live(self, input: Raw) -> dict:
            return {"version": version}

        if extra_route:

            @fal.endpoint("/extra")
            def extra(self, input: Raw) -> dict:
                return {}

    return Swapped


def test_a_hot_swap_keeps_the_stream_running_on_the_new_handlers(serve):
    server = serve(swap_app(1))
    pg = playground(server)
    try:
        live = pg.open_route("/live").live
        live.throttle.value = 20
        live.loop([jpeg()])
        assert until(lambda: live.last_output == {"version": 1})
        assert serve(swap_app(2)) is server  # the same routes: the stream reconnects itself
        assert until(lambda: live.last_output == {"version": 2})
        assert live.streaming

        assert serve(swap_app(3, extra_route=True)) is server  # new routes: new consoles
        assert until(lambda: "/extra" in pg.routes.buttons)
        assert until(lambda: pg.console.live is live)  # handed to the new console
        assert until(lambda: live.last_output == {"version": 3}) and live.streaming
        assert live.widget in pg.console.widget.children
    finally:
        pg.close()
    assert until(lambda: not live_threads())


# -- the real comm ------------------------------------------------------------------------

KERNEL_APP = """
import falkit as fal
from pydantic import BaseModel

class Raw(BaseModel):
    image: bytes

class CommApp(fal.App):
    @fal.realtime("/echo")
    def echo(self, input: Raw) -> dict:
        return {"image": input.image[::-1][::-1], "n": len(input.image)}

server = fal.serve(CommApp)
pg = fal.playground(server)
live = pg.open_route("/echo").live
live.throttle.value = 0
live.start("camera")
print(live.view.model_id)
"""


@pytest.mark.timeout(120)
def test_frames_travel_over_a_real_kernels_comm_as_binary_buffers():
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(60)
        out: list[str] = []
        hook = lambda m: out.append(m["content"].get("text", ""))  # noqa: E731
        reply = kc.execute_interactive(KERNEL_APP, output_hook=hook, timeout=60)
        assert reply["content"]["status"] == "ok", out
        model_id = "".join(out).strip().splitlines()[-1]
        frame = jpeg(size=64)
        outputs = []
        for seq in range(3):
            content = {"kind": "frame", "seq": seq, "mime": "image/jpeg", "rtt": []}
            msg = kc.session.msg(
                "comm_msg",
                {"comm_id": model_id, "data": {"method": "custom", "content": content}},
            )
            kc.session.send(kc.shell_channel.socket, msg, buffers=[frame])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                m = kc.get_iopub_msg(timeout=30)
                data = m["content"].get("data", {}) if m["msg_type"] == "comm_msg" else {}
                if data.get("content", {}).get("kind") == "output":
                    outputs.append((data["content"], m["buffers"]))
                    break
        assert [c["seq"] for c, _ in outputs] == [0, 1, 2]
        assert all(c["mime"] == "image/jpeg" and bytes(b[0]) == frame for c, b in outputs)
        out.clear()
        code = "live.stop(); pg.close(); server.stop(); print(json.dumps(live.summary()))"
        kc.execute_interactive("import json\n" + code, output_hook=hook, timeout=60)
        summary = json.loads("".join(out).strip().splitlines()[-1])
        assert summary["received"] == 3 and summary["ended"] == "stopped"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
