"""The real ``fal_client`` package (from PyPI) against a local falkit server, through
``falkit.compat.use_fal_client``: run, stream, submit/status/result/cancel, realtime."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator

import pytest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import falkit as fal
from falkit import codec
from falkit.compat import use_fal_client

fal_client = pytest.importorskip("fal_client")
import fal_client.client as fal_client_module  # noqa: E402


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str


GATE = {"entered": threading.Event(), "open": threading.Event()}


class FalClientApp(fal.App):
    app_name = "fal-client-app"

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt.upper())

    @fal.endpoint("/slow")
    async def slow(self, input: Input) -> Output:
        await asyncio.sleep(0.3)
        return Output(output=input.prompt[::-1])

    @fal.endpoint("/stream")
    async def stream(self, input: Input) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for ch in input.prompt:
                yield f"data: {json.dumps({'ch': ch})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @fal.realtime("/realtime", session_timeout=2)
    def realtime(self, input: Input) -> Output:
        return Output(output=input.prompt * 2)

    @fal.realtime("/gated")
    def gated(self, input: Input) -> Output:
        GATE["entered"].set()
        GATE["open"].wait(10)
        return Output(output=input.prompt)

    @fal.realtime("/boom")
    def boom(self, input: Input) -> Output:
        raise ValueError("no " + input.prompt)

    @fal.realtime(
        "/tensor", encode_message=codec.encode_tensors, decode_message=codec.decode_tensors
    )
    def tensor(self, input: dict) -> dict:
        return {"sum": input["x"].sum().item(), "twice": input["x"] * 2}


@pytest.fixture
def app_id(serve):
    server = serve(FalClientApp)
    with use_fal_client(server) as app_id:
        yield app_id


def test_run(app_id: str) -> None:
    assert app_id == "local/fal-client-app"
    assert fal_client.run(app_id, {"prompt": "hi"}) == {"output": "HI"}
    assert fal_client.run(app_id, {"prompt": "abc"}, path="/slow") == {"output": "cba"}


def test_run_error_is_fal_client_http_error(app_id: str) -> None:
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_client.run(app_id, {"wrong": 1})
    assert info.value.status_code == 422
    assert fal_client.run(app_id, {"prompt": "ok"}) == {"output": "OK"}


def test_stream(app_id: str) -> None:
    assert list(fal_client.stream(app_id, {"prompt": "abc"})) == [
        {"ch": "a"},
        {"ch": "b"},
        {"ch": "c"},
    ]


def test_submit_status_result(app_id: str) -> None:
    handle = fal_client.submit(app_id, {"prompt": "queue"}, path="/slow")
    assert isinstance(handle.status(), fal_client.InProgress)
    assert handle.get() == {"output": "eueuq"}
    assert isinstance(handle.status(), fal_client.Completed)
    assert fal_client.result(app_id, handle.request_id) == {"output": "eueuq"}
    assert fal_client.subscribe(app_id, {"prompt": "sub"}) == {"output": "SUB"}


def test_cancel_and_unknown_request(app_id: str) -> None:
    handle = fal_client.submit(app_id, {"prompt": "never"}, path="/slow")
    handle.cancel()
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_client.result(app_id, "no-such-request")
    assert info.value.status_code == 404


def test_realtime(app_id: str) -> None:
    with fal_client.realtime(app_id) as rt:
        for word in ["a", "bc"]:
            rt.send({"prompt": word})
            assert rt.recv() == {"output": word * 2}


def test_realtime_error_frame(app_id: str) -> None:
    with fal_client.realtime(app_id, path="/boom") as rt:
        rt.send({"prompt": "way"})
        with pytest.raises(fal_client_module.RealtimeError) as info:
            rt.recv()
    assert info.value.error == "INTERNAL_ERROR" and info.value.reason == "no way"


def test_realtime_tensors_with_fal_clients_hooks(app_id: str) -> None:
    np = pytest.importorskip("numpy")
    with fal_client.realtime(
        app_id,
        path="/tensor",
        encode_message=codec.encode_tensors,
        decode_message=codec.decode_tensors,
    ) as rt:
        rt.send({"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
        out = rt.recv()
    assert out["sum"] == 15.0
    assert out["twice"].dtype == np.float32 and out["twice"].shape == (2, 3)


@pytest.mark.anyio
async def test_async_run_and_realtime(app_id: str) -> None:
    assert await fal_client.run_async(app_id, {"prompt": "x"}) == {"output": "X"}
    async with fal_client.realtime_async(app_id) as rt:
        await rt.send({"prompt": "y"})
        assert await rt.recv() == {"output": "yy"}
    # fal_client's default async client is never closed by fal_client itself; its pool
    # belongs to this test's loop, so it is closed here rather than after the loop is gone.
    await (await fal_client.async_client._client).aclose()


def test_use_fal_client_restores_everything(serve) -> None:
    before = (fal_client_module.RUN_URL_FORMAT, fal_client_module.REALTIME_URL_FORMAT)
    key = os.environ.get("FAL_KEY")
    server = serve(FalClientApp)
    with pytest.raises(RuntimeError), use_fal_client(server) as app_id:
        assert before[0] != fal_client_module.RUN_URL_FORMAT  # routed to falkit meanwhile
        assert fal_client.run(app_id, {"prompt": "r"}) == {"output": "R"}
        raise RuntimeError("leave the block with an error")
    assert before == (fal_client_module.RUN_URL_FORMAT, fal_client_module.REALTIME_URL_FORMAT)
    assert os.environ.get("FAL_KEY") == key


def test_default_clients_get_fresh_credentials_and_give_them_back(serve) -> None:
    sync = fal_client.sync_client
    sentinel = object()
    sync.__dict__["_auth"] = sentinel  # as if fal_client had been used against fal before
    try:
        server = serve(FalClientApp)
        with use_fal_client(server) as app_id:
            assert "_auth" not in sync.__dict__
            assert fal_client.run(app_id, {"prompt": "k"}) == {"output": "K"}
            assert sync.__dict__["_client"].headers["authorization"].startswith("Key falkit-local")
        assert sync.__dict__.get("_auth") is sentinel
        assert "_client" not in sync.__dict__  # the local session's HTTP client is closed
    finally:
        sync.__dict__.pop("_auth", None)


def test_realtime_max_buffering_drops_the_oldest(app_id: str) -> None:
    GATE["entered"].clear()
    GATE["open"].clear()
    try:
        with fal_client.realtime(app_id, path="/gated", max_buffering=1) as rt:
            rt.send({"prompt": "0"})
            assert GATE["entered"].wait(5)
            for i in range(1, 5):
                rt.send({"prompt": str(i)})
            time.sleep(0.5)  # let the server read them while the handler holds "0"
            GATE["open"].set()
            assert [rt.recv()["output"], rt.recv()["output"]] == ["0", "4"]
    finally:
        GATE["open"].set()
