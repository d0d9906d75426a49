"""Reading a route's input and output JSON schema out of the server's ``/openapi.json``.
Pure functions, no widgets: the form builder and the routes view share them."""

from __future__ import annotations

import inspect
import typing
from typing import Any

JSON = dict[str, Any]

_REF_PREFIX = "#/components/schemas/"


def resolve(schema: JSON | None, components: JSON) -> JSON:
    """``schema`` with a top-level ``$ref`` (or a one-element ``allOf``) replaced by its
    target; the referring schema's own keys (``default``, ``description``) win."""
    if not schema:
        return {}
    seen = 0
    while seen < 32:  # bounded: a self-referencing schema must not loop forever
        seen += 1
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf", [])) == 1:
            ref = schema["allOf"][0].get("$ref")
        if not isinstance(ref, str) or not ref.startswith(_REF_PREFIX):
            return schema
        target = components.get(ref[len(_REF_PREFIX) :], {})
        extra = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        schema = {**target, **extra}
    return schema


def components_of(openapi: JSON) -> JSON:
    return openapi.get("components", {}).get("schemas", {})


def _json_body(operation: JSON, *keys: str) -> JSON | None:
    node: Any = operation
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def route_schemas(openapi: JSON, path: str) -> tuple[JSON | None, JSON | None]:
    """The (input, output) schemas of the POST operation at ``path`` (realtime routes
    carry one too when the server mirrors them as fal does), resolved; ``None`` where
    the server does not say."""
    post = openapi.get("paths", {}).get(path, {}).get("post")
    if not isinstance(post, dict):
        return None, None
    components = components_of(openapi)
    body = _json_body(post, "requestBody", "content", "application/json", "schema")
    out = None
    for status in ("200", "201"):
        out = out or _json_body(post, "responses", status, "content", "application/json", "schema")
    return (resolve(body, components) if body else None, resolve(out, components) if out else None)


def _handler_models(app_cls: type, method: str) -> tuple[Any, Any]:
    func = getattr(app_cls, method, None)
    if not callable(func):
        return None, None
    try:
        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters)[1:2]  # after ``self``
    except (NameError, TypeError, ValueError):
        return None, None
    return (hints.get(params[0]) if params else None), hints.get("return")


def _model_json(model: Any) -> JSON | None:
    if not hasattr(model, "model_json_schema"):
        return None
    schema = model.model_json_schema(ref_template=_REF_PREFIX + "{model}")
    defs = schema.pop("$defs", {})
    return {**schema, "x-falkit-defs": defs}


def model_schemas(app_cls: type, spec: Any) -> tuple[JSON | None, JSON | None]:
    """A realtime route's (input, output) JSON schemas from the App class. FastAPI leaves
    WebSocket routes out of ``/openapi.json``, so this is the fallback when the server
    does not publish fal's mirror operation for them."""
    hinted_in, hinted_out = _handler_models(app_cls, spec.method)
    return (
        _model_json(spec.input_modal or hinted_in),
        _model_json(spec.output_modal or hinted_out),
    )


def nullable_inner(schema: JSON) -> JSON | None:
    """For ``anyOf: [X, {type: null}]`` (pydantic's ``Optional[X]``), return X."""
    options = schema.get("anyOf")
    if not isinstance(options, list) or len(options) != 2:
        return None
    rest = [o for o in options if o.get("type") != "null"]
    return rest[0] if len(rest) == 1 else None


def type_label(schema: JSON, components: JSON) -> str:
    """A short human label: ``string``, ``integer``, ``red | green``, ``list[string]``."""
    schema = resolve(schema, components)
    inner = nullable_inner(schema)
    if inner is not None:
        return type_label(inner, components) + "?"
    if "enum" in schema:
        return " | ".join(map(str, schema["enum"]))
    kind = schema.get("type")
    if kind == "array":
        return f"list[{type_label(schema.get('items', {}), components)}]"
    if kind == "object" and "properties" in schema:
        return schema.get("title", "object")
    if "anyOf" in schema:
        return " | ".join(type_label(o, components) for o in schema["anyOf"])
    return str(kind or schema.get("title") or "any")


def summary(schema: JSON | None, components: JSON) -> str:
    """One line describing an object schema: ``prompt: string, n: integer = 2``."""
    if not schema:
        return "-"
    schema = resolve(schema, components)
    props = schema.get("properties")
    if not isinstance(props, dict):
        return type_label(schema, components)
    required = set(schema.get("required", []))
    parts = []
    for name, prop in props.items():
        text = f"{name}: {type_label(prop, components)}"
        if name not in required and "default" in prop:
            text += f" = {prop['default']!r}"
        parts.append(text)
    return ", ".join(parts) or "{}"
