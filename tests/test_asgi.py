"""HTTP behaviour of a served App, over real loopback sockets: fal's error bodies, health,
OpenAPI, docs, streaming and fal's URL layout."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import falkit as fal
from falkit.asgi import build_asgi


class Input(BaseModel):
    prompt: str = Field(description="what to echo")
    times: int = 1


class Output(BaseModel):
    output: str


class EchoApp(fal.App):
    def setup(self):
        self.suffix = "!"

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt * input.times + self.suffix)

    @fal.endpoint("/async")
    async def generate_async(self, input: Input) -> Output:
        return Output(output=input.prompt.upper())

    @fal.endpoint("/dict")
    def as_dict(self, input: Input) -> dict:
        return {"length": len(input.prompt)}

    @fal.endpoint("/fail")
    def fail(self, input: Input) -> Output:
        raise RuntimeError("secret kernel detail")

    @fal.endpoint("/stream")
    def stream(self, input: Input) -> StreamingResponse:
        def events():
            for i in range(input.times):
                yield f"data: {json.dumps({'i': i, 'prompt': input.prompt})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def echo(serve):
    server = serve(EchoApp)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield server, http


def test_post_endpoints_sync_async_and_dict(echo):
    _, http = echo
    assert http.post("/", json={"prompt": "ab", "times": 2}).json() == {"output": "abab!"}
    assert http.post("/async", json={"prompt": "ab"}).json() == {"output": "AB"}
    assert http.post("/dict", json={"prompt": "abc"}).json() == {"length": 3}


@pytest.mark.parametrize(
    ("body", "headers", "loc"),
    [
        (b"{not json", {"content-type": "application/json"}, ["body", 1]),
        (b'{"prompt": 5}', {"content-type": "application/json"}, ["body", "prompt"]),
        (b'{"times": 2}', {"content-type": "application/json"}, ["body", "prompt"]),
        (
            b'{"prompt": "x", "times": "many"}',
            {"content-type": "application/json"},
            ["body", "times"],
        ),
    ],
)
def test_bad_bodies_are_422_with_fals_detail_list_and_server_keeps_serving(
    echo, body, headers, loc
):
    _, http = echo
    response = http.post("/", content=body, headers=headers)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == loc
    assert http.post("/", json={"prompt": "ok"}).json() == {"output": "ok!"}


def test_unknown_path_is_fals_404(echo):
    _, http = echo
    response = http.post("/nope", json={})
    assert response.status_code == 404
    assert response.json() == {"detail": "Path /nope not found"}


def test_handler_exception_is_500_without_leaking_and_traceback_in_logs(echo):
    server, http = echo
    response = http.post("/fail", json={"prompt": "x"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "secret kernel detail" not in response.text
    request_id = response.headers["x-fal-request-id"]
    assert f"POST /fail failed (request {request_id})" in server.logs()
    assert "RuntimeError: secret kernel detail" in server.logs()
    with pytest.raises(fal.RemoteError) as info:
        server.client.call("/fail", {"prompt": "x"})
    assert info.value.request_id and info.value.request_id != request_id
    assert f"(request {info.value.request_id})" in server.logs()
    assert http.post("/", json={"prompt": "after"}).json() == {"output": "after!"}


def test_health_openapi_and_docs(echo):
    _, http = echo
    assert http.get("/health").json() == {"version": "unknown"}  # fal's health body
    spec = http.get("/openapi.json").json()
    assert {"/", "/async", "/dict", "/fail", "/stream"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/"]
    assert "swagger" in http.get("/docs").text.lower()


def test_custom_health_is_served(serve):
    class Healthy(fal.App):
        def health(self):
            return {"ok": True, "model": "loaded"}

    server = serve(Healthy)
    assert httpx.get(server.url + "/health").json() == {"ok": True, "model": "loaded"}


def test_streaming_response_passes_through_as_sse(echo):
    server, _ = echo
    events = list(server.client.stream("/stream", {"prompt": "p", "times": 3}))
    assert events == [{"i": 0, "prompt": "p"}, {"i": 1, "prompt": "p"}, {"i": 2, "prompt": "p"}]


@pytest.mark.parametrize("owner", ["fal-ai", "someone", "me"])
def test_routes_answer_under_fals_url_layout(echo, owner):
    _, http = echo
    assert http.post(f"/{owner}/echo-app", json={"prompt": "a"}).json() == {"output": "a!"}
    assert http.post(f"/{owner}/echo-app/", json={"prompt": "b"}).json() == {"output": "b!"}
    assert http.post(f"/{owner}/echo-app/dict", json={"prompt": "ab"}).json() == {"length": 2}
    assert http.post(f"/{owner}/other-app/dict", json={"prompt": "ab"}).status_code == 404


def test_build_asgi_in_process_runs_lifespan():
    from fastapi.testclient import TestClient

    with TestClient(build_asgi(EchoApp())) as client:
        assert client.post("/", json={"prompt": "in-process"}).json() == {"output": "in-process!"}
