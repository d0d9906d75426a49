"""What fal's field helpers (``FileField``, ``ImageField``, ``VideoField``, ...) add to a
pydantic ``Field``: a ``ui`` hint (``{"field": "image"}``) and fal's ``x-fal`` schema
extension, merged into whatever ``json_schema_extra`` the caller gave (a dict or a
function), so the OpenAPI document reads as fal's does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field

JsonDict = dict[str, Any]


def ui_field(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    kind: str | None = None,
    ui: dict[str, Any] | None = None,
    extra: JsonDict | None = None,
) -> Any:
    """``Field(*args, **kwargs)`` whose schema also holds ``ui`` (its ``field`` defaulting
    to ``kind``) and the keys of ``extra``."""

    def add(schema: JsonDict) -> None:
        if kind is not None or ui:
            merged = schema.setdefault("ui", {})
            merged.update(ui or {})
            if kind is not None:
                merged.setdefault("field", kind)
        schema.update(extra or {})

    given = kwargs.pop("json_schema_extra", None)
    kwargs["json_schema_extra"] = _chain(given, add)
    return Field(*args, **kwargs)


def _chain(given: Any, add: Callable[[JsonDict], None]) -> Any:
    if callable(given):

        def both(schema: JsonDict, *rest: Any) -> None:
            given(schema, *rest)
            add(schema)

        return both
    schema = dict(given or {})
    add(schema)
    return schema


def fal_model_config(*, description: str | None = None, kind: str | None = None) -> ConfigDict:
    """The config of a toolkit model whose schema is fal's: fal's ``description`` (or
    none) instead of falkit's docstring, and fal's ``ui.field`` hint."""

    def extra(schema: JsonDict) -> None:
        schema.pop("description", None)
        if description is not None:
            schema["description"] = description
        if kind is not None:
            schema["ui"] = {"field": kind}

    return ConfigDict(json_schema_extra=extra)
