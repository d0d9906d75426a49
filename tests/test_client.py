"""Client streaming (SSE, as fal_client's ``stream`` yields it) over loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import falkit as fal


class Input(BaseModel):
    n: int


def sse(*events: object) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


class Streamer(fal.App):
    @fal.endpoint("/stream")
    async def stream(self, input: Input) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for i in range(input.n):
                yield sse({"i": i})
            yield "event: done\ndata: not json\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def test_stream_yields_decoded_events(serve) -> None:
    server = serve(Streamer)
    with server.client as client:
        assert list(client.stream("/stream", {"n": 3})) == [
            {"i": 0},
            {"i": 1},
            {"i": 2},
            "not json",
        ]
        # fal's URL layout answers too.
        events = list(client.stream(f"/me/{server.app_name}/stream", Input(n=1)))
        assert events == [{"i": 0}, "not json"]


def test_stream_error_is_remote_error_and_server_keeps_serving(serve) -> None:
    server = serve(Streamer)
    with server.client as client:
        with pytest.raises(fal.RemoteError) as info:
            list(client.stream("/stream", {"n": "many"}))
        assert info.value.status == 422
        assert len(list(client.stream("/stream", {"n": 2}))) == 3


@pytest.mark.anyio
async def test_async_stream(serve) -> None:
    server = serve(Streamer)
    async with fal.AsyncClient(server.url) as client:
        events = [e async for e in client.stream("/stream", {"n": 2})]
    assert events == [{"i": 0}, {"i": 1}, "not json"]
