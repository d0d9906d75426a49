"""fal's realtime protocol over real loopback sockets: modes, buffering, batching, timeouts,
error frames, order and the message size limit."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import msgpack
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

import falkit as fal
from falkit.asgi.realtime import realtime_mode


class In(BaseModel):
    i: int
    group: str = "a"

    def can_batch(self, other: In, n: int) -> bool:
        return other.group == self.group


class Out(BaseModel):
    i: int
    n: int = 1


def ws_url(server, path: str) -> str:
    return server.url.replace("http", "ws", 1) + path


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def read_until_close(ws) -> tuple[list, str | None]:
    """Every binary output (decoded) and the final text frame; asserts close 1000."""
    outputs, text = [], None
    while True:
        try:
            frame = ws.recv(10)
        except ConnectionClosedOK:
            break
        if isinstance(frame, bytes):
            outputs.append(msgpack.unpackb(frame))
        else:
            text = frame
    assert ws.close_code == 1000
    return outputs, text


TIMEOUT_FRAME = (
    '{"type":"x-fal-error","error":"TIMEOUT","reason":"no inputs, reconnect when needed!"}'
)


def error_reason(text: str) -> str:
    frame = json.loads(text)
    assert frame["type"] == "x-fal-error" and frame["error"] == "INTERNAL_ERROR"
    assert list(frame) == ["type", "error", "reason"]
    return frame["reason"]


class Modes(fal.App):
    @fal.realtime("/unary", session_timeout=0.3)
    def unary(self, input: In) -> Out:
        return Out(i=input.i * 2)

    @fal.realtime("/unary-buffered", buffering=2, session_timeout=0.3)
    async def unary_buffered(self, input: In) -> Out:
        return Out(i=input.i)

    @fal.realtime("/dict")
    async def as_dict(self, input: dict) -> dict:
        return {"got": input}

    @fal.realtime("/server-sync")
    def server_sync(self, input: In) -> Iterator[Out]:
        for k in range(input.i):
            yield Out(i=k)

    @fal.realtime("/server-async")
    async def server_async(self, input: In) -> AsyncIterator[Out]:
        for k in range(input.i):
            yield Out(i=k)

    @fal.realtime("/client", session_timeout=0.3)
    async def client_streaming(self, inputs: AsyncIterator[In]) -> Out:
        return Out(i=sum([x.i async for x in inputs]))

    @fal.realtime("/bidi", session_timeout=0.3)
    async def bidi(self, inputs: AsyncIterator[In]) -> AsyncIterator[Out]:
        async for x in inputs:
            yield Out(i=x.i + 100)

    @fal.realtime("/boom")
    def boom(self, input: In) -> Out:
        raise RuntimeError(f"boom {input.i}")


def test_modes_come_from_annotations() -> None:
    app = Modes()
    assert realtime_mode(app.unary) == "unary"
    assert realtime_mode(app.server_sync) == "server_streaming"
    assert realtime_mode(app.server_async) == "server_streaming"
    assert realtime_mode(app.client_streaming) == "client_streaming"
    assert realtime_mode(app.bidi) == "bidi"


def test_unary_idle_close_sends_fal_timeout_frame(serve) -> None:
    server = serve(Modes)
    with connect(ws_url(server, "/unary")) as ws:
        for i in range(3):
            ws.send(pack({"i": i}))
            assert msgpack.unpackb(ws.recv(5)) == {"i": 2 * i, "n": 1}
        outputs, text = read_until_close(ws)
    assert outputs == [] and text == TIMEOUT_FRAME


def test_buffered_unary_idle_close_too(serve) -> None:
    server = serve(Modes)
    with connect(ws_url(server, "/unary-buffered")) as ws:
        ws.send(pack({"i": 5}))
        outputs, text = read_until_close(ws)
    assert outputs == [{"i": 5, "n": 1}] and text == TIMEOUT_FRAME


def test_dict_in_dict_out(serve) -> None:
    server = serve(Modes)
    with server.client as client, client.realtime("/dict") as rt:
        rt.send({"x": [1, 2], "b": b"\x00\x01"})
        assert rt.recv(5) == {"got": {"x": [1, 2], "b": b"\x00\x01"}}


@pytest.mark.parametrize("path", ["/server-sync", "/server-async"])
def test_server_streaming_then_timeout_frame(serve, path: str) -> None:
    server = serve(Modes)
    with connect(ws_url(server, path)) as ws:
        ws.send(pack({"i": 4}))
        outputs, text = read_until_close(ws)
    assert [o["i"] for o in outputs] == [0, 1, 2, 3]
    assert text == TIMEOUT_FRAME


def test_client_streaming_sums_until_idle(serve) -> None:
    server = serve(Modes)
    with connect(ws_url(server, "/client")) as ws:
        for i in range(5):
            ws.send(pack({"i": i}))
        outputs, text = read_until_close(ws)
    assert outputs == [{"i": 10, "n": 1}] and text == TIMEOUT_FRAME


def test_bidi_answers_each_input(serve) -> None:
    server = serve(Modes)
    with server.client as client, client.realtime("/bidi") as rt:
        for i in range(3):
            rt.send(In(i=i))
            assert rt.recv(5) == {"i": 100 + i, "n": 1}
        assert rt.recv(5) is None  # TIMEOUT ends the session quietly


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("text", "text frames are not accepted"),
        (b"\xc1", "invalid msgpack frame"),
        (pack({"i": "not a number"}), "input does not fit In"),
        (pack({"i": 7}), "boom 7"),
    ],
)
def test_errors_are_fal_frames_then_close_1000(serve, frame, reason: str) -> None:
    server = serve(Modes)
    path = "/boom" if reason.startswith("boom") else "/unary"
    with connect(ws_url(server, path)) as ws:
        ws.send(frame)
        outputs, text = read_until_close(ws)
    assert outputs == [] and reason in error_reason(text)
    # The server keeps serving.
    with server.client as client, client.realtime("/unary") as rt:
        rt.send({"i": 1})
        assert rt.recv(5) == {"i": 2, "n": 1}


def test_client_raises_realtime_error(serve) -> None:
    server = serve(Modes)
    with server.client as client, client.realtime("/boom") as rt:
        rt.send({"i": 3})
        with pytest.raises(fal.RealtimeError) as info:
            rt.recv(5)
    assert info.value.error == "INTERNAL_ERROR" and info.value.reason == "boom 3"


class Gated(fal.App):
    """The first call blocks until the test opens the gate; calls are recorded."""

    gate = threading.Event()
    entered = threading.Event()
    calls: list[list[int]] = []

    @fal.endpoint("/open")
    def open_gate(self) -> dict:
        Gated.gate.set()
        return {"ok": True}

    @fal.realtime("/buffered", buffering=2)
    def buffered(self, input: In) -> Out:
        Gated.entered.set()
        Gated.gate.wait(10)
        Gated.calls.append([input.i])
        return Out(i=input.i)

    @fal.realtime("/batched", max_batch_size=3)
    def batched(self, input: In, *more: In) -> Out:
        Gated.entered.set()
        Gated.gate.wait(10)
        batch = [input, *more]
        Gated.calls.append([x.i for x in batch])
        return Out(i=batch[-1].i, n=len(batch))


@pytest.fixture
def gated(serve):
    Gated.gate.clear()
    Gated.entered.clear()
    Gated.calls = []
    server = serve(Gated)
    yield server
    Gated.gate.set()


def _send_while_gated(server, path: str, inputs: list[dict]) -> list[dict]:
    with server.client as client, client.realtime(path) as rt:
        rt.send(inputs[0])
        assert Gated.entered.wait(5)
        for item in inputs[1:]:
            rt.send(item)
        # The handler holds the first input; give the server time to read the rest.
        time.sleep(0.5)
        client.call("/open")
        outputs = []
        while len(outputs) < 10:
            try:
                outputs.append(rt.recv(1))
            except TimeoutError:
                break
        return outputs


def test_buffering_drops_the_oldest_inputs(gated) -> None:
    outputs = _send_while_gated(gated, "/buffered", [{"i": i} for i in range(6)])
    # 0 was taken before the gate; of 1..5 only the newest two fit the buffer.
    assert [o["i"] for o in outputs] == [0, 4, 5]


def test_client_max_buffering_overrides_the_route(gated) -> None:
    with gated.client as client, client.realtime("/batched", max_buffering=1) as rt:
        rt.send({"i": 0})
        assert Gated.entered.wait(5)
        for i in range(1, 5):
            rt.send({"i": i})
        time.sleep(0.5)
        client.call("/open")
        assert [rt.recv(5)["i"], rt.recv(5)["i"]] == [0, 4]
    with (
        gated.client as client,
        pytest.raises(ValueError, match="between 1 and 60"),
        client.realtime("/batched", max_buffering=0),
    ):
        pass


def test_batches_respect_max_batch_size_and_can_batch(gated) -> None:
    groups = ["a", "a", "a", "a", "a", "b", "b"]
    outputs = _send_while_gated(
        gated, "/batched", [{"i": i, "group": g} for i, g in enumerate(groups)]
    )
    assert Gated.calls == [[0], [1, 2, 3], [4], [5, 6]]
    assert [(o["i"], o["n"]) for o in outputs] == [(0, 1), (3, 3), (4, 1), (6, 2)]


class Blocking(fal.App):
    gate = threading.Event()

    @fal.endpoint("/open")
    def open_gate(self) -> dict:
        Blocking.gate.set()
        return {"ok": True}

    @fal.realtime("/wait")
    def wait(self, input: In) -> Out:
        return Out(i=int(Blocking.gate.wait(10)))


def test_sync_handler_does_not_block_the_event_loop(serve) -> None:
    Blocking.gate.clear()
    server = serve(Blocking)
    with server.client as client, client.realtime("/wait") as rt:
        rt.send({"i": 0})
        # Answered only if the loop is free while the handler waits for it.
        assert client.call("/open") == {"ok": True}
        assert rt.recv(5) == {"i": 1, "n": 1}


class Flood(fal.App):
    @fal.realtime("/flood")
    def flood(self, input: In) -> Iterator[dict]:
        for k in range(input.i):
            yield {"k": k, "pad": b"x" * 65536}


def test_outputs_keep_order_when_the_outgoing_queue_is_full(serve) -> None:
    server = serve(Flood)
    with connect(ws_url(server, "/flood"), max_size=None, compression=None) as ws:
        ws.send(pack({"i": 300}))
        time.sleep(0.5)  # a slow reader: socket buffers and the outgoing queue fill up
        outputs, text = read_until_close(ws)
    assert [o["k"] for o in outputs] == list(range(300))
    assert text == TIMEOUT_FRAME


def test_oversize_frame_gets_an_error_frame_and_the_server_keeps_serving(serve) -> None:
    server = serve(Modes, ws_max_size=1024)
    with connect(ws_url(server, "/dict"), compression=None) as ws:
        ws.send(pack({"blob": b"x" * 2000}))
        outputs, text = read_until_close(ws)
    assert outputs == [] and "exceeds the limit of 1024 bytes" in error_reason(text)
    with server.client as client, client.realtime("/dict") as rt:
        rt.send({"blob": b"x" * 500})
        assert rt.recv(5) == {"got": {"blob": b"x" * 500}}


class Echo(fal.App):
    seen: list[int] = []

    @fal.realtime("/echo")
    async def echo(self, input: In) -> Out:
        Echo.seen.append(input.i)
        return Out(i=input.i)


def test_throttled_sends_keep_only_the_latest(serve) -> None:
    Echo.seen = []
    server = serve(Echo)
    with server.client as client, client.realtime("/echo", throttle_interval=0.5) as rt:
        for i in range(5):
            rt.send({"i": i})
        assert rt.recv(5) == {"i": 0, "n": 1}
        assert rt.recv(5) == {"i": 4, "n": 1}  # held back, sent before this recv
    assert Echo.seen == [0, 4]


@pytest.mark.anyio
async def test_async_client_realtime_and_throttle(serve) -> None:
    Echo.seen = []
    server = serve(Echo)
    async with (
        fal.AsyncClient(server.url) as client,
        client.realtime("/echo", throttle_interval=0.2) as rt,
    ):
        for i in range(4):
            await rt.send({"i": i})
        # The timer sends the latest input on its own.
        assert await rt.recv() == {"i": 0, "n": 1}
        assert await rt.recv() == {"i": 3, "n": 1}
    assert Echo.seen == [0, 3]


@pytest.mark.anyio
async def test_async_client_error_and_timeout(serve) -> None:
    server = serve(Modes)
    async with fal.AsyncClient(server.url) as client:
        async with client.realtime("/boom") as rt:
            await rt.send({"i": 1})
            with pytest.raises(fal.RealtimeError, match="boom 1"):
                await rt.recv()
        async with client.realtime("/bidi") as rt:
            await rt.send({"i": 1})
            assert [o async for o in rt] == [{"i": 101, "n": 1}]


def test_bad_frame_on_the_buffered_path_answers_queued_inputs_first(gated) -> None:
    with gated.client as client, client.realtime("/batched") as rt:
        rt.send({"i": 1})
        assert Gated.entered.wait(5)
        rt.send({"i": "bad"})
        time.sleep(0.3)
        client.call("/open")
        assert rt.recv(5) == {"i": 1, "n": 1}
        with pytest.raises(fal.RealtimeError, match="input does not fit In"):
            rt.recv(5)


def test_client_leaving_mid_stream_is_quiet_and_the_server_keeps_serving(serve) -> None:
    server = serve(Flood)
    with connect(ws_url(server, "/flood"), max_size=None, compression=None) as ws:
        ws.send(pack({"i": 100_000}))
        assert msgpack.unpackb(ws.recv(5))["k"] == 0
    with server.client as client, client.realtime("/flood") as rt:
        rt.send({"i": 2})
        assert [o["k"] for o in rt] == [0, 1]  # iteration ends at fal's TIMEOUT frame
    time.sleep(0.2)
    assert "Traceback" not in server.logs()


def test_openapi_carries_fals_protocol_extension(serve) -> None:
    server = serve(Gated)
    with server.client as client:
        spec = client.get("/openapi.json")
    protocol = spec["paths"]["/batched"]["x-fal-protocol"]
    assert protocol == {
        "type": "realtime",
        "operationId": "batched",
        "config": {"buffering": None, "sessionTimeout": None, "maxBatchSize": 3},
        "contentType": "application/msgpack",
        "realtimeMode": "unary",
    }
    assert spec["paths"]["/buffered"]["x-fal-protocol"]["config"]["buffering"] == 2
    assert {"In", "Out"} <= set(spec["components"]["schemas"])
    assert "/batched" in spec["x-fal-order-paths"]


def test_fal_realtime_stays_the_decorator_after_serving(serve) -> None:
    serve(Echo)
    # Importing the falkit.realtime module must not rebind the package's decorator.
    assert fal.realtime.__module__ == "falkit" and callable(fal.realtime)


class Batcher(fal.App):
    @fal.realtime("/batch", max_batch_size=4, session_timeout=2)
    def batch(self, *inputs: In) -> dict:
        time.sleep(0.002)  # slower than the client sends
        return {"seen": [x.i for x in inputs]}


def test_unbuffered_batching_flood_loses_nothing_and_keeps_order(serve) -> None:
    # Without ``buffering`` nothing may be dropped: past UNBUFFERED_LIMIT waiting inputs
    # the server stops reading (backpressure) instead of queueing without bound.
    server = serve(Batcher)
    count = 400
    payload = "x" * 16_384
    with connect(ws_url(server, "/batch"), max_size=None, compression=None) as ws:
        sender = threading.Thread(
            target=lambda: [ws.send(pack({"i": i, "group": payload})) for i in range(count)]
        )
        sender.start()
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < count and time.monotonic() < deadline:
            frame = ws.recv(10)
            assert isinstance(frame, bytes), frame
            batch = msgpack.unpackb(frame)["seen"]
            assert 1 <= len(batch) <= 4
            seen.extend(batch)
        sender.join(10)
    assert seen == list(range(count))


class Frame(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    pixels: np.ndarray
    label: str = ""


class Tensors(fal.App):
    @fal.realtime("/frames")
    def frames(self, input: Frame) -> dict:
        return {"n": int(input.pixels.size)}


def test_openapi_survives_models_with_tensor_fields(serve) -> None:
    server = serve(Tensors)
    spec = server.client.get("/openapi.json")
    frame = spec["components"]["schemas"]["Frame"]
    assert "not expressible in JSON Schema" in frame["properties"]["pixels"]["description"]
    assert frame["properties"]["label"]["type"] == "string"
    assert spec["paths"]["/frames"]["x-fal-protocol"]["type"] == "realtime"
