"""The short path for JSON-body endpoints (``falkit.asgi.fastroute``) answers exactly what
FastAPI's own handler answers: same status, same headers, same bytes, for good input, bad
input and failing handlers. Each case goes through two builds of the same App, one with the
short path and one without, and through a real server once to see it taken on the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, field_validator

import falkit as fal
from falkit.asgi import build_asgi
from falkit.asgi.fastroute import FastRoute


class Inner(BaseModel):
    x: int
    tags: list[str] = []


class Input(BaseModel):
    prompt: str
    steps: int = 4
    scale: float = 1.0
    seed: int | None = None
    inner: Inner | None = None
    alias_field: str = Field("a", alias="aliasField")

    @field_validator("steps")
    @classmethod
    def positive(cls, v: int) -> int:
        if v < 0:
            raise ValueError("steps must be >= 0")
        return v


class Output(BaseModel):
    text: str
    steps: int
    scale: float
    renamed: str = Field(alias="Renamed")


class Extended(Output):
    secret: str = "not in the response model"


def _out(inp: Input) -> Output:
    return Output(text=inp.prompt, steps=inp.steps, scale=inp.scale, Renamed=inp.alias_field)


class Subject(fal.App):
    @fal.endpoint("/model")
    def model(self, input: Input) -> Output:
        if input.prompt == "http-error":
            raise HTTPException(status_code=418, detail="teapot")
        if input.prompt == "crash":
            raise RuntimeError("boom")
        if input.prompt == "bad-output":
            return {"text": 1}  # type: ignore[return-value]
        if input.prompt == "subclass":
            return Extended(text="s", steps=1, scale=1.0, Renamed="r")
        if input.prompt == "response":
            return PlainTextResponse("plain", status_code=201)  # type: ignore[return-value]
        return _out(input)

    @fal.endpoint("/async")
    async def run_async(self, input: Input) -> Output:
        if input.prompt == "crash":
            raise RuntimeError("boom")
        return _out(input)

    @fal.endpoint("/plain")
    def plain(self, input: Input):
        # no response model: FastAPI's jsonable_encoder path
        if input.prompt == "nan":
            return {"value": float("nan")}
        return {"echo": input.model_dump(), "list": [input.prompt] * 2}

    @fal.endpoint("/dict")
    def as_dict(self, input: dict) -> dict:
        return {"keys": sorted(input)}

    @fal.endpoint("/query")
    def with_query(self, input: Input, n: int = 1) -> Output:  # not eligible: a query param
        return _out(input)


@pytest.fixture(scope="module")
def apps() -> Iterator[tuple[Any, Any, asyncio.Runner]]:
    instance = Subject()
    fast = build_asgi(instance, lifespan=False)
    plain = build_asgi(instance, lifespan=False)
    for route in plain.router.routes:
        if isinstance(route, APIRoute) and isinstance(route.app, FastRoute):
            route.app = route.app.fastapi_app
    with asyncio.Runner() as runner:
        yield fast, plain, runner


def test_the_short_path_is_taken_only_where_the_body_decides_everything(apps):
    fast, plain, _ = apps
    kinds = {r.path: type(r.app) for r in fast.router.routes if isinstance(r, APIRoute)}
    assert kinds["/model"] is FastRoute
    assert kinds["/async"] is FastRoute
    assert kinds["/plain"] is FastRoute
    assert kinds["/dict"] is FastRoute
    assert kinds["/query"] is not FastRoute
    assert kinds["/health"] is not FastRoute  # GET
    assert not any(isinstance(r.app, FastRoute) for r in plain.router.routes if hasattr(r, "app"))


async def _call(app: Any, path: str, body: bytes, content_type: str | None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post(path, content=body, headers=headers)


VARYING = {"x-fal-request-id", "server-timing"}  # random id; durations


def _same(apps: Any, path: str, body: bytes, content_type: str | None = "application/json"):
    fast, plain, runner = apps
    a = runner.run(_call(fast, path, body, content_type))
    b = runner.run(_call(plain, path, body, content_type))
    assert (a.status_code, a.content) == (b.status_code, b.content), (path, body)
    ha = [(k, v) for k, v in a.headers.multi_items() if k not in VARYING]
    hb = [(k, v) for k, v in b.headers.multi_items() if k not in VARYING]
    assert ha == hb, (path, body)
    assert ("server-timing" in a.headers) == ("server-timing" in b.headers)
    return a


PATHS = ["/model", "/async", "/plain", "/dict"]

CASES = [
    (b'{"prompt": "hi"}', "application/json"),
    (b'{"prompt": "hi", "aliasField": "z", "inner": {"x": 3, "tags": ["a"]}}', None),
    (b'{"prompt": "hi", "steps": "7", "scale": 2}', "application/json; charset=utf-8"),
    (b'{"prompt": "hi"}', "APPLICATION/JSON"),
    (b'{"prompt": "hi"}', "application/vnd.api+json"),  # FastAPI's: not the short path
    (b'{"prompt": "hi"}', "text/plain"),
    (b'{"prompt": "hi"}', None),  # no content type at all
    (b"", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b'"text"', "application/json"),
    (b"{", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b'{"prompt": "\\ud800"}', "application/json"),  # a lone surrogate echoed back
    (b'{"prompt": "hi", "scale": NaN}', "application/json"),
    (b'{"prompt": "hi", "steps": -1}', "application/json"),  # the model's validator
    (b'{"prompt": 5}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),  # too deep for json.loads
    (b'{"prompt": "http-error"}', "application/json"),
    (b'{"prompt": "crash"}', "application/json"),
    (b'{"prompt": "bad-output"}', "application/json"),
    (b'{"prompt": "subclass"}', "application/json"),
    (b'{"prompt": "response"}', "application/json"),
    (b'{"prompt": "nan"}', "application/json"),
]


@pytest.mark.parametrize("path", [*PATHS, "/query"])
@pytest.mark.parametrize(("body", "content_type"), CASES)
def test_the_same_answer_as_fastapi(apps, path, body, content_type):
    _same(apps, path, body, content_type)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
input_like = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=10) | json_values,
        "steps": st.integers(-3, 10) | json_values,
        "scale": st.floats() | json_values,
        "seed": st.none() | st.integers() | json_values,
        "inner": st.fixed_dictionaries({"x": st.integers() | json_values}) | json_values,
        "aliasField": st.text(max_size=5) | json_values,
    },
)


@settings(
    deadline=None,  # timings vary on a loaded machine; none are asserted
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the apps are stateless
)
@given(value=input_like | json_values, path=st.sampled_from(PATHS))
@example(value={"prompt": "ok", "steps": 2}, path="/model")
def test_the_same_answer_for_generated_bodies(apps, value, path):
    _same(apps, path, json.dumps(value).encode())


def test_served_on_the_wire_with_server_timing(serve):
    server = serve(Subject)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ok = client.post("/model", json={"prompt": "hi", "steps": 2})
        bad = client.post("/model", json={"steps": 2})
        again = client.post("/async", json={"prompt": "again"})
    assert ok.status_code == 200
    assert ok.json() == {"text": "hi", "steps": 2, "scale": 1.0, "Renamed": "a"}
    assert [p.split(";")[0] for p in ok.headers["server-timing"].split(", ")] == [
        "decode",
        "handler",
        "encode",
    ]
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "prompt"]
    assert again.status_code == 200 and again.json()["text"] == "again"
