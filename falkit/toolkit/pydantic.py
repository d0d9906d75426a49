"""fal's pydantic helpers (``fal.toolkit.pydantic``): ``FalBaseModel`` (``FIELD_ORDERS``,
``Hidden`` fields, error locations bound into nested values), ``Field`` (pydantic's own)
and the field helpers of the media types."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, GetJsonSchemaHandler, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, core_schema

from .audio import AudioField
from .file import FileField
from .image import ImageField
from .video import VideoField

__all__ = [
    "IS_PYDANTIC_V2",
    "AudioField",
    "FalBaseModel",
    "Field",
    "FileField",
    "Hidden",
    "ImageField",
    "VideoField",
]

#: falkit needs pydantic 2; fal's flag, for code that branches on it.
IS_PYDANTIC_V2 = True

_F = TypeVar("_F")


class _HiddenMarker:
    def __repr__(self) -> str:
        return "Hidden"


_HIDDEN = _HiddenMarker()


def Hidden(field: _F) -> _F:
    """Mark ``field`` (a ``Field(...)`` with a default) hidden in fal's UI: a
    ``FalBaseModel``'s schema gives it ``ui.hidden = True``. A hidden field cannot be a
    required input, so one without a default is a ``ValueError``."""
    if not isinstance(field, FieldInfo):
        raise TypeError(
            f"Hidden() requires a Field instance, got {type(field).__name__}. "
            "Usage: Hidden(Field(default=...))"
        )
    if field.default is PydanticUndefined and field.default_factory is None:
        raise ValueError("Hidden fields must have a default or default_factory.")
    field.metadata = [*field.metadata, _HIDDEN]
    return field


def _is_hidden_field(field: FieldInfo) -> bool:
    return any(item is _HIDDEN for item in field.metadata)


def _bind_locations(value: Any, location: tuple[str | int, ...]) -> None:
    # A value that can report where it sat in the input (fal's URL types) is told so.
    bind = getattr(value, "_bind_context", None)
    if callable(bind):
        bind(loc=location)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            inner = getattr(value, name, None)
            if inner is not None:
                _bind_locations(inner, (*location, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _bind_locations(item, (*location, index))


class FalBaseModel(BaseModel):
    """A pydantic model with fal's schema controls: ``FIELD_ORDERS`` lists the fields to
    show first; ``Hidden(Field(...))`` fields (and the deprecated ``SCHEMA_IGNORES``) get
    ``ui.hidden``. Example::

        class Input(FalBaseModel):
            FIELD_ORDERS = ["prompt"]
            seed: int = Field(default=0)
            prompt: str = Field(description="Text prompt")
            debug: bool = Hidden(Field(default=False))
    """

    SCHEMA_IGNORES: ClassVar[set[str]] = set()
    FIELD_ORDERS: ClassVar[list[str]] = []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("SCHEMA_IGNORES"):
            warnings.warn(
                "FalBaseModel.SCHEMA_IGNORES is deprecated. Use Hidden(Field(...)) instead.",
                DeprecationWarning,
                stacklevel=3,
            )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        # After pydantic's own (json_schema_extra included), so the caller's extras stay.
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        properties = target.get("properties", {})
        for name, field in cls.model_fields.items():
            if name in properties and (_is_hidden_field(field) or name in cls.SCHEMA_IGNORES):
                properties[name].setdefault("ui", {})["hidden"] = True
        first = {name: properties.pop(name) for name in cls.FIELD_ORDERS if name in properties}
        if first:
            target["properties"] = {**first, **properties}
        return json_schema

    @model_validator(mode="after")
    def _bind_context_paths(self) -> Any:
        for name in type(self).model_fields:
            value = getattr(self, name, None)
            if value is not None:
                _bind_locations(value, (name,))
        return self
