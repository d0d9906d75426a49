"""``self.current_request`` (fal's ``RequestContext``) over a real server: set for HTTP
requests through either of falkit's paths (the short one and FastAPI's), in sync handlers'
worker threads too; empty in ``setup()`` and in realtime sessions; a request id made for
the request when the client sent none, and the same id on its 500 answer."""

from __future__ import annotations

import json

import httpx
from pydantic import BaseModel

import falkit as fal
from falkit.app import NO_REQUEST


class Ask(BaseModel):
    crash: bool = False


def describe(app: fal.App) -> dict:
    ctx = app.current_request
    return {
        "request_id": ctx.request_id,
        "endpoint": ctx.endpoint,
        "lifecycle": ctx.lifecycle_preference,
        "custom": ctx.headers.get("x-custom"),
    }


class Aware(fal.App):
    def setup(self):
        self.during_setup = self.current_request

    @fal.endpoint("/")
    def sync_path(self, input: Ask) -> dict:  # the short path, in a worker thread
        if input.crash:
            print(f"failing request {self.current_request.request_id}")
            raise RuntimeError("asked to crash")
        return describe(self)

    @fal.endpoint("/query")
    async def fastapi_path(self, input: Ask, n: int = 1) -> dict:  # FastAPI's handler
        return describe(self) | {"n": n}

    @fal.endpoint("/setup")
    def setup_context(self, input: Ask) -> dict:
        return {"same": self.during_setup is NO_REQUEST}

    @fal.realtime("/rt")
    async def realtime(self, input: Ask) -> dict:
        return {"empty": self.current_request is NO_REQUEST}


def test_handlers_see_their_request(serve):
    server = serve(Aware)
    headers = {
        "x-fal-request-id": "req-123",
        "x-fal-endpoint": "owner/aware/",
        "x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": "60"}),
        "x-custom": "yes",
    }
    with httpx.Client(base_url=server.url, timeout=10) as client:
        sync = client.post("/", json={}, headers=headers).json()
        fastapi_path = client.post("/query?n=2", json={}, headers=headers).json()
        fal_layout = client.post("/owner/aware/", json={}, headers=headers).json()
        bare = [client.post("/", json={}).json() for _ in range(2)]
        bad_lifecycle = client.post(
            "/", json={}, headers={"x-fal-object-lifecycle-preference": "{not json"}
        ).json()
        in_setup = client.post("/setup", json={}).json()
    expected = {
        "request_id": "req-123",
        "endpoint": "owner/aware/",
        "lifecycle": {"expiration_duration_seconds": "60"},
        "custom": "yes",
    }
    assert sync == expected
    assert fastapi_path == expected | {"n": 2}
    assert fal_layout == expected
    # no id sent: one is made per request
    ids = [b["request_id"] for b in bare]
    assert all(ids) and ids[0] != ids[1]
    assert bare[0]["endpoint"] is None and bare[0]["lifecycle"] is None
    assert bad_lifecycle["lifecycle"] is None
    assert in_setup == {"same": True}
    with server.client.realtime("/rt") as session:
        session.send({})
        assert session.recv(timeout=10) == {"empty": True}


def test_a_500_carries_the_id_its_handler_saw(serve):
    server = serve(Aware)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in ("/", "/owner/aware/"):  # fal's URL layout copies the scope
            failed = client.post(path, json={"crash": True})
            assert failed.status_code == 500
            rid = failed.headers["x-fal-request-id"]
            assert f"failing request {rid}" in server.logs()
            assert f"(request {rid})" in server.logs()
        # the server goes on answering
        assert client.post("/", json={}).status_code == 200
