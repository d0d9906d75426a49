"""``SchemaForm``: widgets generated from a pydantic JSON schema. Strings, bounded
numbers, booleans, enums and optional fields get real inputs; lists, nested models and
anything else get a JSON editor that is checked before sending."""

from __future__ import annotations

import contextlib
import html
import json
from typing import Any

import ipywidgets as W

from ..exceptions import FormError
from .schema import JSON, nullable_inner, resolve, type_label

_WIDE = W.Layout(width="420px")
_STYLE = {"description_width": "140px"}


def _bounds(schema: JSON, step: float) -> tuple[float | None, float | None]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    # Exclusive bounds are nudged inward for integers; for floats the server's 422 says
    # the rest (the widget cannot express an open interval).
    if "exclusiveMinimum" in schema and step == 1:
        low = schema["exclusiveMinimum"] + 1
    if "exclusiveMaximum" in schema and step == 1:
        high = schema["exclusiveMaximum"] - 1
    return low, high


def _number_input(schema: JSON, default: Any, integer: bool) -> W.Widget:
    low, high = _bounds(schema, 1 if integer else 0)
    value = default if isinstance(default, (int, float)) else (low or 0)
    if low is None and high is None:
        cls = W.IntText if integer else W.FloatText
        return cls(value=value)
    cls = W.BoundedIntText if integer else W.BoundedFloatText
    big = 2**53
    low = -big if low is None else low
    high = big if high is None else high
    cast = int if integer else float
    return cls(value=cast(value), min=cast(low), max=cast(high))


def _scalar_input(schema: JSON, default: Any) -> W.Widget | None:
    """A widget for a scalar schema, or None when it needs the JSON editor."""
    kind = schema.get("type")
    if "enum" in schema:
        options = [(str(v), v) for v in schema["enum"]]
        return W.Dropdown(options=options, value=default if default in schema["enum"] else None)
    if kind == "string":
        long = schema.get("maxLength", 0) > 200 or schema.get("format") == "textarea"
        cls = W.Textarea if long else W.Text
        return cls(value=default if isinstance(default, str) else "")
    if kind in ("integer", "number"):
        return _number_input(schema, default, kind == "integer")
    if kind == "boolean":
        return W.Checkbox(value=bool(default), indent=False)
    return None


class FormField:
    """One property of the form: its input widget and, for optional fields, a ``set``
    checkbox (unchecked: the field is left out, or sent as null when required)."""

    def __init__(self, name: str, schema: JSON, components: JSON, *, required: bool) -> None:
        self.name = name
        self.required = required
        schema = resolve(schema, components)
        inner = nullable_inner(schema)
        self.nullable = inner is not None
        target = resolve(inner, components) if inner is not None else schema
        default = schema.get("default")
        scalar = _scalar_input(target, default)
        self.is_json = scalar is None
        if scalar is None:
            text = json.dumps(default) if "default" in schema else ""
            scalar = W.Textarea(value=text, placeholder="JSON", layout=_WIDE)
        self.input: Any = scalar
        self.enabled = (
            W.Checkbox(
                value=default is not None,
                description="set",
                indent=False,
                layout=W.Layout(width="60px"),
            )
            if self.nullable
            else None
        )
        self.input.layout.width = _WIDE.width
        self.widget = self._row(schema, components)
        self.input.add_class(f"falkit-field-{name}")  # stable hooks for browser tests, CSS

    def _row(self, schema: JSON, components: JSON) -> W.Widget:
        mark = " *" if self.required else ""
        label = W.HTML(
            f"<b>{self.name}</b>{mark}",
            layout=W.Layout(width="140px"),
            tooltip=type_label(schema, components),
        )
        row = [label, self.input] + ([self.enabled] if self.enabled is not None else [])
        hint = schema.get("description")
        hint_html = W.HTML(
            f"<span style='color:#777;font-size:90%'>{_escape(hint)} "
            f"({_escape(type_label(schema, components))})</span>"
            if hint
            else f"<span style='color:#999;font-size:85%'>"
            f"{_escape(type_label(schema, components))}</span>"
        )
        return W.VBox([W.HBox(row), hint_html], layout=W.Layout(margin="0 0 2px 0"))

    def included(self) -> bool:
        return self.enabled is None or self.enabled.value or self.required

    def value(self) -> Any:
        if self.enabled is not None and not self.enabled.value:
            return None
        if not self.is_json:
            return self.input.value
        text = self.input.value.strip()
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FormError(f"{self.name}: not valid JSON ({exc})") from None

    def set(self, value: Any) -> None:
        if self.enabled is not None:
            self.enabled.value = value is not None
            if value is None:
                return
        self.input.value = json.dumps(value) if self.is_json else value


def _escape(text: Any) -> str:
    return html.escape(str(text))


class SchemaForm:
    """A form for an object schema. ``value()`` returns the body to send (or raises
    ``FormError``); the ``JSON`` toggle edits the raw body instead, for anything the
    fields cannot express."""

    def __init__(self, schema: JSON | None, components: JSON) -> None:
        schema = resolve(schema, components) if schema else {}
        props = schema.get("properties")
        required = set(schema.get("required", []))
        self.fields: dict[str, FormField] = {}
        if isinstance(props, dict):
            for name, prop in props.items():
                self.fields[name] = FormField(name, prop, components, required=name in required)
        self.raw = W.Textarea(
            value="{}",
            placeholder="request body as JSON",
            layout=W.Layout(width="560px", height="120px"),
        )
        self.raw_mode = W.ToggleButton(
            value=not self.fields,
            description="edit as JSON",
            icon="code",
            tooltip="edit the raw request body (checked before sending)",
        )
        self.raw_mode.observe(self._toggle, names="value")
        self.widget = W.VBox()
        self._layout()

    def _layout(self) -> None:
        body = [self.raw] if self.raw_mode.value else [f.widget for f in self.fields.values()]
        toggle = [self.raw_mode] if self.fields else []
        self.widget.children = [*body, *toggle]

    def _toggle(self, change: dict[str, Any]) -> None:
        if change["new"]:
            # On a field error keep the last raw text; the error shows on send.
            with contextlib.suppress(FormError):
                self.raw.value = json.dumps(self._field_values(), indent=2)
        self._layout()

    def _field_values(self) -> dict[str, Any]:
        return {n: f.value() for n, f in self.fields.items() if f.included()}

    def value(self) -> Any:
        """The request body: the fields' values, or the raw JSON when editing as JSON."""
        if not self.raw_mode.value:
            return self._field_values()
        try:
            return json.loads(self.raw.value)
        except ValueError as exc:
            raise FormError(f"request body is not valid JSON ({exc})") from None

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill fields by name (unknown names are an error: they would be silently lost)."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise FormError(f"no such field(s): {sorted(unknown)}")
        for name, value in values.items():
            self.fields[name].set(value)
