"""The App class model: route collection, names, options and definition errors."""

from __future__ import annotations

import pytest
from fastapi import WebSocket
from pydantic import BaseModel

import falkit
import falkit as fal
from falkit import AppDefinitionError


class Input(BaseModel):
    prompt: str


def test_app_name_is_fals_kebab_case_of_the_class_name():
    class MyGoodApp(fal.App):
        pass

    class Custom(fal.App, name="my-custom"):
        pass

    class Explicit(fal.App):
        app_name = "explicit-name"

    assert MyGoodApp.app_name == "my-good-app"
    assert Custom.app_name == "my-custom"
    assert Explicit.app_name == "explicit-name"


def test_subclass_gets_its_own_name_and_inherits_routes():
    class Base(fal.App):
        @fal.endpoint("/base")
        def base(self, input: Input) -> dict:
            return {}

    class Child(Base):
        @fal.endpoint("/child")
        def child(self, input: Input) -> dict:
            return {}

    assert Child.app_name == "child"
    assert [r.path for r in Child.routes()] == ["/base", "/child"]
    assert [r.path for r in Base.routes()] == ["/base"]


def test_fal_options_as_attributes_and_class_keywords():
    class Opts(fal.App, keep_alive=300, max_concurrency=4, regions=["us-east"]):
        machine_type = "GPU-H100"
        requirements = ["torch"]

    options = Opts.options()
    assert options["keep_alive"] == 300
    assert options["max_concurrency"] == 4
    assert options["machine_type"] == "GPU-H100"
    assert options["requirements"] == ["torch"]
    assert Opts.host_kwargs == {"regions": ["us-east"]}


def test_route_kinds_and_realtime_options_are_recorded():
    class Kinds(fal.App):
        @fal.endpoint("/")
        def http(self, input: Input) -> dict:
            return {}

        @fal.endpoint("/ws", is_websocket=True)
        async def ws(self, websocket: WebSocket) -> None:
            pass

        @fal.realtime("/rt", buffering=3, max_batch_size=2, session_timeout=1.5)
        def rt(self, input: Input) -> dict:
            return {}

    by_path = {r.path: r for r in Kinds.routes()}
    assert {p: r.kind for p, r in by_path.items()} == {
        "/": "http",
        "/ws": "websocket",
        "/rt": "realtime",
    }
    rt = by_path["/rt"]
    assert (rt.buffering, rt.max_batch_size, rt.session_timeout, rt.method) == (3, 2, 1.5, "rt")
    assert rt.is_websocket and not by_path["/"].is_websocket


def test_two_routes_on_one_path_name_both_methods():
    with pytest.raises(AppDefinitionError, match=r"'first' and 'second'.*'/same'"):

        class Clash(fal.App):
            @fal.endpoint("/same")
            def first(self, input: Input) -> dict:
                return {}

            @fal.realtime("/same")
            def second(self, input: Input) -> dict:
                return {}


def test_websocket_endpoint_must_be_async():
    with pytest.raises(AppDefinitionError, match="must be `async def`"):

        class NotAsync(fal.App):
            @fal.endpoint("/ws", is_websocket=True)
            def ws(self, websocket: WebSocket) -> None:
                pass


def test_websocket_endpoint_must_take_a_websocket():
    with pytest.raises(AppDefinitionError, match=r"websocket: fastapi\.WebSocket"):

        class NoSocket(fal.App):
            @fal.endpoint("/ws", is_websocket=True)
            async def ws(self, data: dict) -> None:
                pass


def test_overriding_init_is_refused_with_advice():
    with pytest.raises(AppDefinitionError, match="setup"):

        class WithInit(fal.App):
            def __init__(self):
                super().__init__()


def test_decorating_twice_and_bad_paths_are_refused():
    with pytest.raises(ValueError, match="multiple routes"):

        @fal.endpoint("/a")
        @fal.endpoint("/b")
        def twice(self, input: Input) -> dict:
            return {}

    with pytest.raises(ValueError, match="starting with '/'"):
        fal.endpoint("no-slash")
    with pytest.raises(ValueError, match="max_batch_size"):
        fal.realtime("/rt", max_batch_size=0)


def test_public_names_are_exported_sorted():
    assert falkit.__all__ == sorted(falkit.__all__)
    for name in falkit.__all__:
        assert hasattr(falkit, name), name
    for name in ("App", "endpoint", "realtime", "serve", "Client", "AsyncClient", "Server"):
        assert name in falkit.__all__
