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

    class snake_case_app(fal.App):
        pass

    assert MyGoodApp.app_name == "my-good-app"
    assert Custom.app_name == "my-custom"
    assert Explicit.app_name == "explicit-name"
    assert snake_case_app.app_name == "snake-case-app"


@pytest.mark.parametrize(
    ("class_name", "app_name"),
    [
        ("SDXLModel", "s-d-x-l-model"),  # every capital starts a word, as on fal
        ("GPT4App", "g-p-t-app"),
        ("myApp", "app"),
        ("_private_app", "private-app"),
        ("my__app", "my-app"),
        ("sdxl_v2", "sdxl-v2"),
        ("app123", "app123"),
        ("x", "x"),
    ],
)
def test_default_app_names_follow_fals_rules(class_name, app_name):
    assert falkit.app.to_app_name(class_name) == app_name
    assert type(class_name, (fal.App,), {}).app_name == app_name


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
    assert options["regions"] == ["us-east"]
    # As on fal: every class keyword, and the host options the class sets, reach
    # host_kwargs over fal's defaults; the deployment's own options stay out.
    host = Opts.host_kwargs
    assert host["regions"] == ["us-east"] and host["keep_alive"] == 300
    assert host["max_concurrency"] == 4 and host["resolver"] == "uv"
    assert "requirements" not in host and "machine_type" not in host


def test_host_kwargs_are_built_as_fals():
    class Vars(fal.App, resolver="pip"):
        request_timeout = 11
        startup_timeout = 22
        scaling_delay = 33
        max_multiplexing = 7
        secrets = []
        data_mounts = ["/data/.cache"]
        skip_retry_conditions = ["timeout"]
        _scheduler = "kubernetes"  # a key of fal's defaults, set as an attribute
        _not_a_host_option = "example"
        num_gpus = 1
        app_auth = "public"

    host = Vars.host_kwargs
    assert host["request_timeout"] == 11 and host["startup_timeout"] == 22
    assert host["scaling_delay"] == 33 and host["max_multiplexing"] == 7
    assert host["secrets"] == [] and host["data_mounts"] == ["/data/.cache"]
    assert host["skip_retry_conditions"] == ["timeout"]
    assert host["_scheduler"] == "kubernetes" and host["resolver"] == "pip"
    assert host["_scheduler_options"] == {"storage_region": "us-east"}
    for absent in ("_not_a_host_option", "num_gpus", "app_auth", "metrics_port"):
        assert absent not in host, absent
    assert host["health_check_config"] is None

    class Child(Vars):
        request_timeout = 5

    assert Child.host_kwargs["request_timeout"] == 5
    assert Child.host_kwargs["data_mounts"] == ["/data/.cache"]


def test_an_image_makes_a_container_app_and_app_files_need_each_other():
    image = object()

    class Container(fal.App):
        pass

    Container.image = image  # set after the class statement: recomputed for a subclass

    class Sub(Container):
        pass

    assert Sub.host_kwargs["kind"] == "container" and Sub.host_kwargs["image"] is image
    with pytest.raises(AppDefinitionError, match="app_files"):

        class NoFiles(fal.App):
            app_files_context_dir = "."


def test_a_health_check_endpoint_is_recorded_where_fal_would_probe_it():
    class Probed(fal.App):
        @fal.endpoint("/ready", health_check=fal.HealthCheck(timeout_seconds=5))
        def ready(self) -> dict:
            return {}

    config = Probed.host_kwargs["health_check_config"]
    assert (config.path, config.method, config.timeout_seconds) == ("/ready", "POST", 5)
    assert config.call_regularly is None
    assert Probed.routes()[0].health_check == fal.HealthCheck(timeout_seconds=5)
    assert fal.HealthCheck.__module__ == "falkit"
    with pytest.raises(TypeError):
        fal.HealthCheck(5)  # keywords only, as fal's


def test_health_checks_are_refused_on_websockets_and_twice():
    with pytest.raises(AppDefinitionError, match="websocket"):
        fal.endpoint("/ws", is_websocket=True, health_check=fal.HealthCheck())
    with pytest.raises(AppDefinitionError, match="only one health check"):

        class Twice(fal.App):
            @fal.endpoint("/a", health_check=fal.HealthCheck())
            def a(self) -> dict:
                return {}

            @fal.endpoint("/b", health_check=fal.HealthCheck())
            def b(self) -> dict:
                return {}


def test_fals_hooks_have_fals_defaults():
    class Plain(fal.App):
        pass

    class Versioned(fal.App):
        version = "1.2.3"

    app = Plain()
    assert app.health() == {"version": "unknown"}
    assert Versioned().health() == {"version": "1.2.3"}
    assert app.handle_exit() is None
    with pytest.raises(NotImplementedError):
        app.provide_hints()


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
