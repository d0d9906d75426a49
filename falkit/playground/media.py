"""Media fields of a realtime route, and frames in and out of them. Pure functions, no
widgets: which input field takes a camera frame or an audio chunk, how a captured frame
(JPEG, PNG or WAV bytes) becomes that field's value, and which part of an output is an
image to show.

A field takes live media when its name says so (``image``, ``frame``, ``audio``, ...) or its
``json_schema_extra`` has a ``contentMediaType``. Its annotation picks the encoding, as a
client of that route would send it with ``Client.realtime``:

* ``bytes``: the encoded frame as is (a msgpack bin, no base64);
* ``str``: a data URI, ``data:image/jpeg;base64,...`` (fal's ``image_url`` style);
* ``numpy.ndarray``: an image as ``H x W x 3`` uint8 (PIL's layout), audio as float32
  samples in [-1, 1]; sent with ``falkit.codec.encode_tensors``;
* ``torch.Tensor``: an image as ``3 x H x W`` uint8 (torchvision's layout), audio as
  float32 samples; sent with ``falkit.codec.encode_tensors``.
"""

from __future__ import annotations

import base64
import collections.abc
import inspect
import io
import re
import sys
import typing
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .. import codec
from ..exceptions import MissingDependency

Kind = Literal["image", "audio"]
Encoding = Literal["bytes", "data_uri", "numpy", "torch"]

_IMAGE_NAME = re.compile(r"image|img|frame|photo|picture|video|camera|canvas|sketch|drawing|mask")
_AUDIO_NAME = re.compile(r"audio|sound|wav|speech|voice|mic|pcm")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
}
_SEARCH_DEPTH = 8
# Return annotations that make a route stream outputs (fal's server-streaming and bidi).
_STREAMS = (
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


@dataclass(frozen=True)
class MediaField:
    """One input field that live media goes into: its name, what it takes, and how."""

    name: str
    kind: Kind
    encoding: Encoding

    @property
    def encoder(self) -> Callable[[Any], bytes]:
        """The msgpack encoder a session must use for this field's values."""
        return codec.encode_tensors if self.encoding in ("numpy", "torch") else codec.encode


# -- which fields --------------------------------------------------------------------------


def input_model(app_cls: type, spec: Any) -> Any:
    """The pydantic model a realtime route validates its inputs into (``input_modal``,
    else the annotation of the handler's first parameter, or its stream item type)."""
    if spec.input_modal is not None:
        return spec.input_modal
    first = _first_param(getattr(app_cls, spec.method, None))
    return _stream_item(first) or first


def answers_each_input(app_cls: type, spec: Any) -> bool:
    """True when the route answers every input with exactly one output, in order (fal's
    unary mode, unbatched): then each output can be matched to the frame it answers."""
    handler = getattr(app_cls, spec.method, None)
    if handler is None or spec.max_batch_size != 1:
        return False
    if _stream_item(_first_param(handler)) is not None:
        return False
    ret = _hints(handler).get("return")
    return (typing.get_origin(ret) or ret) not in _STREAMS


def media_fields(model: Any) -> list[MediaField]:
    """The fields of ``model`` (a pydantic model class) that take live media, in order."""
    found = []
    for name, info in getattr(model, "model_fields", {}).items():
        encoding = _encoding(info.annotation)
        kind = _kind(name, getattr(info, "json_schema_extra", None))
        if encoding is not None and kind is not None:
            found.append(MediaField(name, kind, encoding))
    return found


def _hints(func: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except (NameError, TypeError):
        return {}


def _first_param(handler: Any) -> Any:
    if not callable(handler):
        return None
    try:
        params = list(inspect.signature(handler).parameters)[1:2]  # after ``self``
    except (TypeError, ValueError):
        return None
    return _hints(handler).get(params[0]) if params else None


def _stream_item(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is not None and inspect.isclass(origin) and hasattr(origin, "__anext__"):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _kind(name: str, extra: Any) -> Kind | None:
    mime = str(extra.get("contentMediaType", "")) if isinstance(extra, dict) else ""
    if mime.startswith("audio/") or (not mime and _AUDIO_NAME.search(name.lower())):
        return "audio"
    if mime.startswith("image/") or _IMAGE_NAME.search(name.lower()):
        return "image"
    return None


def _encoding(annotation: Any) -> Encoding | None:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, _union_type()) and len(options) == 1:
        annotation = options[0]  # Optional[X]
    if annotation is bytes:
        return "bytes"
    if annotation is str:
        return "data_uri"
    module, name = getattr(annotation, "__module__", ""), getattr(annotation, "__name__", "")
    if module.split(".")[0] == "numpy" and name == "ndarray":
        return "numpy"
    if module.split(".")[0] == "torch" and name == "Tensor":
        return "torch"
    return None


def _union_type() -> Any:
    import types

    return getattr(types, "UnionType", typing.Union)


# -- frames in ---------------------------------------------------------------------------


def encode_frame(field: MediaField, data: bytes, mime: str) -> Any:
    """A captured frame (``mime`` bytes: JPEG, PNG, WAV) as the value of ``field``."""
    if field.encoding == "bytes":
        return data
    if field.encoding == "data_uri":
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    array = decode_image(data) if field.kind == "image" else decode_wav(data)
    if field.encoding == "numpy":
        return array
    import torch

    tensor = torch.from_numpy(array)
    return tensor.permute(2, 0, 1).contiguous() if field.kind == "image" else tensor


def decode_image(data: bytes) -> Any:
    """Encoded image bytes as an ``H x W x 3`` uint8 numpy array, writable (needs Pillow)."""
    image = _pil().open(io.BytesIO(data))
    import numpy as np

    return np.array(image.convert("RGB"))


def decode_wav(data: bytes) -> Any:
    """A 16-bit PCM WAV (what the page records) as mono float32 samples in [-1, 1]."""
    import numpy as np

    with wave.open(io.BytesIO(data)) as wav:
        frames = wav.readframes(wav.getnframes())
        channels = wav.getnchannels()
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples


def encode_wav(samples: Any, rate: int = 16_000) -> bytes:
    """Mono float samples in [-1, 1] as a 16-bit PCM WAV (the page's audio format)."""
    import numpy as np

    pcm = (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def as_frame(item: Any, quality: int = 85) -> tuple[bytes, str]:
    """An item of a looped source as (encoded bytes, mime): image or WAV bytes as they
    are, a path to such a file, a PIL image, or an image array (``H x W x 3``, uint8)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        return data, sniff(data) or "application/octet-stream"
    if isinstance(item, str) or hasattr(item, "read_bytes"):
        from pathlib import Path

        return as_frame(Path(item).read_bytes())
    found = image_bytes(item, quality)
    if found is None:
        raise TypeError(
            f"can't use a {type(item).__name__} as a frame: pass image bytes, a path, "
            "a PIL image or an image array"
        )
    return found


def sniff(data: bytes) -> str | None:
    """The mime type of encoded image or WAV bytes, from their first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((m for sig, m in _MAGIC.items() if data.startswith(sig)), None)


# -- frames out --------------------------------------------------------------------------


def find_image(value: Any, quality: int = 85, depth: int = 0) -> tuple[bytes, str] | None:
    """The first image inside a decoded output, as (encoded bytes, mime), or None: image
    bytes, an image data URI, fal's ``{"url": "data:image/..."}``, a PIL image, or an
    image array or tensor (``H x W x C`` or ``C x H x W``, uint8 or float in [0, 1])."""
    found = image_bytes(value, quality)
    if found is not None or depth >= _SEARCH_DEPTH:
        return found
    items = (
        value.values()
        if isinstance(value, dict)
        else value
        if isinstance(value, (list, tuple))
        else ()
    )
    for item in items:
        found = find_image(item, quality, depth + 1)
        if found is not None:
            return found
    return None


def image_bytes(value: Any, quality: int = 85) -> tuple[bytes, str] | None:
    """``value`` as (encoded image bytes, mime) when it is itself one image, else None."""
    if isinstance(value, (bytes, bytearray)):
        mime = sniff(bytes(value))
        return (bytes(value), mime) if mime and mime.startswith("image/") else None
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return image_bytes(value["url"], quality)
    if isinstance(value, str):
        head, sep, payload = value.partition(",")
        if sep and head.startswith("data:image/") and head.endswith(";base64"):
            return base64.b64decode(payload), head[5:].removesuffix(";base64")
        return None
    array = _image_array(value)
    if array is not None:
        value = _pil().fromarray(array)
    if hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size"):
        buffer = io.BytesIO()
        value.convert("RGB").save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue(), "image/jpeg"
    return None


def _image_array(value: Any) -> Any:
    """An ``H x W x 3`` uint8 numpy view of an image-shaped array or tensor, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().to("cpu").numpy()
    np = sys.modules.get("numpy")
    if np is None or not isinstance(value, np.ndarray) or value.ndim not in (2, 3):
        return None
    if value.ndim == 3 and value.shape[0] in (1, 3) and value.shape[2] not in (1, 3):
        value = value.transpose(1, 2, 0)  # C x H x W
    if value.ndim == 3 and value.shape[2] not in (1, 3):
        return None
    if min(value.shape[:2]) < 8:
        return None  # a vector or a small table, not a picture
    if value.dtype != np.uint8:
        value = (np.clip(value.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    value = value[..., 0] if value.ndim == 3 and value.shape[2] == 1 else value
    return np.ascontiguousarray(value)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependency(
            "decoding or encoding frames needs Pillow: install with `pip install pillow` "
            "(or `pip install 'falkit[notebooks]'`)"
        ) from None
    return Image
