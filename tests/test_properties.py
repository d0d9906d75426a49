"""Properties (hypothesis) of the two parsers that take anything a user or a peer sends:
the realtime decoder (``falkit.codec``) and the playground's schema-form builder."""

from __future__ import annotations

import contextlib
import enum
import json
import math
from typing import Any, Optional

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from falkit import codec
from falkit.exceptions import ProtocolError

# Plain msgpack values: what fal's realtime protocol carries (dict keys are strings).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
DECODERS = [codec.decode, codec.decode_tensors]


@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(values)
def test_plain_values_roundtrip(value):
    for decode in DECODERS:
        assert decode(codec.encode(value)) == value


@pytest.mark.parametrize("decode", DECODERS, ids=["decode", "decode_tensors"])
@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(frame=st.binary(max_size=512))
def test_any_bytes_decode_or_raise_protocol_error(decode, frame):
    with contextlib.suppress(ProtocolError):
        decode(frame)


@pytest.mark.parametrize("decode", DECODERS, ids=["decode", "decode_tensors"])
@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(value=values, data=st.data())
def test_every_truncation_is_a_protocol_error(decode, value, data):
    frame = codec.encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    with pytest.raises(ProtocolError):
        decode(frame[:cut])


@pytest.mark.parametrize("decode", DECODERS, ids=["decode", "decode_tensors"])
@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(value=values, data=st.data())
def test_flipped_bytes_never_escape_as_another_error(decode, value, data):
    frame = bytearray(codec.encode(value))
    at = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[at] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(ProtocolError):
        decode(bytes(frame))


@given(
    kind=st.sampled_from(["numpy", "torch", "other", 3]),
    dtype=st.text(max_size=12) | st.sampled_from(["<f4", "float32", "int64", "|b1", "<U3", "O"]),
    shape=st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4),
    raw=st.binary(max_size=64),
)
# Found by this property: a 15-byte frame claiming 2**28 float32s and carrying no bytes
# used to allocate a 1 GiB tensor on the server.
@example(kind="torch", dtype="float32", shape=[2**28], raw=b"")
@example(kind="numpy", dtype="float32", shape=[2**28], raw=b"")
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_malformed_tensor_extensions_are_protocol_errors(kind, dtype, shape, raw):
    payload = msgpack.packb([kind, dtype, shape, raw])
    frame = msgpack.packb({"x": msgpack.ExtType(codec.TENSOR_EXT, payload)})
    try:
        decoded = codec.decode_tensors(frame)
    except ProtocolError:
        return
    # Only a consistent header may decode: the array then has exactly the bytes sent.
    array = decoded["x"]
    assert array.nbytes == len(raw)


@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(payload=st.binary(max_size=64))
def test_tensor_extension_with_junk_payload(payload):
    frame = msgpack.packb(msgpack.ExtType(codec.TENSOR_EXT, payload))
    with contextlib.suppress(ProtocolError):
        codec.decode_tensors(frame)


# -- the schema-form builder --------------------------------------------------------------

W = pytest.importorskip("ipywidgets")
from falkit.playground.form import FormError, SchemaForm  # noqa: E402
from falkit.playground.schema import resolve  # noqa: E402

_REF = "#/components/schemas/{model}"


class Color(str, enum.Enum):
    red = "red"
    green = "green"


class Inner(BaseModel):
    x: int
    tags: list[str] = []


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
# (annotation, strategy of valid values, an optional Field default)
FIELD_KINDS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (str, st.text()),
    (int, st.integers(min_value=-(2**53), max_value=2**53)),
    (float, FINITE),
    (bool, st.booleans()),
    (Color, st.sampled_from(list(Color))),
    (Optional[str], st.none() | st.text()),  # noqa: UP045 (what users write)
    (Optional[int], st.none() | st.integers(-1000, 1000)),  # noqa: UP045
    (list[int], st.lists(st.integers(-1000, 1000), max_size=4)),
    (dict[str, float], st.dictionaries(st.text(max_size=5), FINITE, max_size=3)),
    (Inner, st.builds(Inner, x=st.integers(-10, 10), tags=st.lists(st.text(max_size=3)))),
    (Optional[Inner], st.none() | st.builds(Inner, x=st.integers(-10, 10))),  # noqa: UP045
]
BOUNDED = [
    (int, Field(ge=0, le=100), st.integers(0, 100)),
    (float, Field(ge=-1.0, le=1.0), st.floats(-1.0, 1.0)),
    (int, Field(gt=0, lt=10), st.integers(1, 9)),
]


@st.composite
def models_and_values(draw):
    """A pydantic model with a few fields of mixed kinds, and one valid value of it."""
    n = draw(st.integers(min_value=1, max_value=5))
    fields: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for i in range(n):
        if draw(st.booleans()):
            annotation, strategy = draw(st.sampled_from(FIELD_KINDS))
            fields[f"f{i}"] = (annotation, ...)
        else:
            annotation, field, strategy = draw(st.sampled_from(BOUNDED))
            fields[f"f{i}"] = (annotation, field)
        values[f"f{i}"] = draw(strategy)
    model = create_model("Drawn", **fields)
    return model, model.model_validate(values)


def _form(model: type[BaseModel]) -> SchemaForm:
    schema = model.model_json_schema(ref_template=_REF)
    components = schema.pop("$defs", {})
    return SchemaForm(schema, components)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models_and_values())
def test_a_value_set_into_the_form_comes_back_out_valid(drawn):
    """Whatever valid input a model admits survives the widgets: set, read, validate."""
    model, value = drawn
    form = _form(model)
    assert set(form.fields) == set(model.model_fields)
    form.set_values(value.model_dump(mode="json"))
    body = form.value()
    json.dumps(body)  # what the console sends is JSON
    again = model.model_validate(body)
    assert _same(again.model_dump(mode="json"), value.model_dump(mode="json"))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | FINITE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_schema_builds_a_form_without_crashing(schema):
    """A server can publish any schema at all: the builder must not crash on it."""
    props = schema.get("properties")
    assume(props is None or isinstance(props, dict))
    if isinstance(props, dict):
        assume(all(isinstance(p, dict) for p in props.values()))
    try:
        form = SchemaForm(schema, {})
        form.value()
    except FormError:
        pass


@settings(deadline=None)  # timings vary on a loaded machine; none are asserted
@given(depth=st.integers(min_value=1, max_value=200))
def test_self_referencing_schemas_resolve_in_bounded_steps(depth):
    components = {
        f"M{i}": {"$ref": f"#/components/schemas/M{(i + 1) % depth}"} for i in range(depth)
    }
    resolve({"$ref": "#/components/schemas/M0"}, components)
