"""fal's OpenAPI additions for WebSocket routes: each raw or realtime route gets an
``x-fal-protocol`` object on its path (type, mode, content type, buffering, timeout,
batch size), its input/output models land in ``components.schemas``, a documentation
``post`` mirrors it, and ``x-fal-order-paths`` lists it, as fal's own server does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..routes import RouteSpec
from .realtime import input_model as realtime_input_model
from .realtime import output_model, realtime_mode

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..app import App


def _lenient_generator() -> type:
    from pydantic.json_schema import GenerateJsonSchema

    class Lenient(GenerateJsonSchema):
        # Realtime models may carry tensors (``arbitrary_types_allowed``): such a field has
        # no JSON Schema, and one field must not make the whole /openapi.json a 500.
        def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> Any:
            return {"description": f"not expressible in JSON Schema ({error_info})"}

    return Lenient


def _model_schema(schemas: dict[str, Any], model: Any) -> str | None:
    if model is None or not hasattr(model, "model_json_schema"):
        return None
    schema = model.model_json_schema(
        ref_template="#/components/schemas/{model}", schema_generator=_lenient_generator()
    )
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return model.__name__


def _models(handler: Callable[..., Any], spec: RouteSpec) -> tuple[Any, Any]:
    if spec.kind != "realtime":
        return None, None
    return realtime_input_model(handler, spec), output_model(handler, spec)


def protocol_operation(handler: Callable[..., Any], spec: RouteSpec) -> dict[str, Any]:
    """The ``x-fal-protocol`` object of one WebSocket route."""
    operation: dict[str, Any] = {
        "type": "realtime" if spec.kind == "realtime" else "websocket",
        "operationId": spec.method,
        "config": {
            "buffering": spec.buffering,
            "sessionTimeout": spec.session_timeout,
            "maxBatchSize": spec.max_batch_size,
        },
    }
    if spec.kind == "realtime":
        operation["contentType"] = spec.content_type
        operation["realtimeMode"] = realtime_mode(handler)
    return operation


def _mirror_post(spec: RouteSpec, doc: str, inp: str | None, out: str | None) -> dict[str, Any]:
    kind = "Realtime" if spec.kind == "realtime" else "WebSocket"
    post: dict[str, Any] = {
        "operationId": f"{spec.method}_post",
        "summary": f"{kind} endpoint: {spec.method}",
        "description": doc,
    }
    if inp:
        ref = {"$ref": f"#/components/schemas/{inp}"}
        post["requestBody"] = {"content": {"application/json": {"schema": ref}}}
    if out:
        ref = {"$ref": f"#/components/schemas/{out}"}
        content = {"application/json": {"schema": ref}}
        post["responses"] = {
            "200": {"description": "WebSocket message response", "content": content}
        }
    else:
        post["responses"] = {"204": {"description": "WebSocket message response"}}
    return post


def _inject(spec_doc: dict[str, Any], instance: App, specs: list[RouteSpec]) -> None:
    schemas = spec_doc.setdefault("components", {}).setdefault("schemas", {})
    order = list(spec_doc.get("x-fal-order-paths", spec_doc.get("paths", {})))
    for spec in specs:
        handler = getattr(instance, spec.method)
        inp, out = (_model_schema(schemas, m) for m in _models(handler, spec))
        item = spec_doc.setdefault("paths", {}).setdefault(spec.path, {})
        item["x-fal-protocol"] = protocol_operation(handler, spec)
        if "post" not in item and (inp or out):
            item["post"] = _mirror_post(spec, (handler.__doc__ or "").strip(), inp, out)
        if spec.path not in order:
            order.append(spec.path)
    spec_doc["x-fal-order-paths"] = order


def install_fal_openapi(app: FastAPI, instance: App) -> None:
    """Make ``app.openapi()`` carry fal's WebSocket additions for ``instance``'s routes."""
    specs = [spec for spec in type(instance).routes() if spec.is_websocket]
    if not specs:
        return
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _inject(base(), instance, specs)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
