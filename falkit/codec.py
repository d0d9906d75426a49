"""The realtime wire format: msgpack, as fal's realtime protocol sends it, plus an opt-in
msgpack extension type that carries numpy arrays and torch tensors.

``encode``/``decode`` are fal's default codec (plain msgpack). ``encode_tensors`` /
``decode_tensors`` add the extension: an array travels as its dtype, shape and raw bytes
(no base64, no per-element encoding). Opt in on both ends, with fal's own hooks::

    @fal.realtime("/rt", encode_message=codec.encode_tensors,
                  decode_message=codec.decode_tensors)
    def step(self, input: Frame) -> Out: ...

    with client.realtime("/rt", encode_message=codec.encode_tensors,
                         decode_message=codec.decode_tensors) as rt: ...

(``fal_client.realtime(..., encode_message=..., decode_message=...)`` takes them too.)
numpy and torch are never imported to encode: a value can only be an array of a library
that is already loaded. A CUDA tensor is copied to the CPU only when it is encoded.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import msgpack

from .exceptions import EncodeError, ProtocolError

#: The msgpack extension type code of an array (application codes are 0..127).
TENSOR_EXT = 84  # "T"

_HEADER_LEN = struct.Struct("<I")
_NUMPY = "numpy"
_TORCH = "torch"


def encode(obj: Any) -> bytes:
    """Pack ``obj`` (dicts, lists, str, bytes, numbers) into one msgpack frame."""
    return msgpack.packb(obj, use_bin_type=True, default=_refuse_arrays)


def decode(frame: bytes) -> Any:
    """Unpack one msgpack frame; raises ``ProtocolError`` on malformed data."""
    try:
        return msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise ProtocolError(f"invalid msgpack frame: {exc}") from exc


def encode_tensors(obj: Any) -> bytes:
    """Like ``encode``, with numpy arrays and torch tensors anywhere inside ``obj`` packed
    as the ``TENSOR_EXT`` extension type (dtype, shape, raw bytes)."""
    return msgpack.packb(obj, use_bin_type=True, default=_pack_array)


def decode_tensors(frame: bytes) -> Any:
    """Like ``decode``, turning ``TENSOR_EXT`` values back into numpy arrays or torch
    tensors (on the CPU, writable); raises ``ProtocolError`` on malformed data."""
    try:
        return msgpack.unpackb(frame, raw=False, ext_hook=_unpack_array)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"invalid msgpack frame: {exc}") from exc


# -- packing -----------------------------------------------------------------------------


def _refuse_arrays(obj: Any) -> Any:
    if _kind(obj) is not None:
        raise EncodeError(
            f"can't send a {type(obj).__name__} with the default msgpack codec; opt in with "
            "encode_message=falkit.codec.encode_tensors (and decode_tensors on the other end)"
        )
    return _scalar(obj)


def _pack_array(obj: Any) -> Any:
    kind = _kind(obj)
    if kind == _TORCH:
        return _pack_torch(obj)
    if kind == _NUMPY:
        return _pack_numpy(obj)
    return _scalar(obj)


def _kind(obj: Any) -> str | None:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return _NUMPY
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return _TORCH
    return None


def _scalar(obj: Any) -> Any:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    raise EncodeError(f"can't serialize {type(obj).__name__} to msgpack")


def _ext(kind: str, dtype: str, shape: tuple[int, ...], data: Any) -> msgpack.ExtType:
    # Layout: u32 header length, msgpack header [kind, dtype, shape], raw bytes. Joining
    # copies the array once; packing it as a msgpack bin inside the header would copy it
    # twice (and once more to unpack).
    header = msgpack.packb([kind, dtype, list(shape)])
    payload = b"".join((_HEADER_LEN.pack(len(header)), header, data))
    return msgpack.ExtType(TENSOR_EXT, payload)


def _pack_numpy(array: Any) -> msgpack.ExtType:
    if array.dtype.hasobject:
        raise EncodeError("can't send a numpy array of Python objects; use a numeric dtype")
    import numpy as np

    data = np.ascontiguousarray(array)
    flat = data.reshape(-1).view(np.uint8)
    return _ext(_NUMPY, data.dtype.str, array.shape, memoryview(flat))  # type: ignore[arg-type]


def _pack_torch(tensor: Any) -> msgpack.ExtType:
    import torch

    # The only device copy: at encode time, never earlier.
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    dtype = str(tensor.dtype).removeprefix("torch.")
    return _ext(_TORCH, dtype, tuple(tensor.shape), memoryview(flat.view(torch.uint8).numpy()))


# -- unpacking ---------------------------------------------------------------------------


def _unpack_array(code: int, data: bytes) -> Any:
    if code != TENSOR_EXT:
        return msgpack.ExtType(code, data)
    try:
        (size,) = _HEADER_LEN.unpack_from(data)
        end = _HEADER_LEN.size + size
        kind, dtype, shape = msgpack.unpackb(data[_HEADER_LEN.size : end], raw=False)
        raw = memoryview(data)[end:]
        if kind == _TORCH:
            return _unpack_torch(dtype, shape, raw)
        if kind == _NUMPY:
            return _unpack_numpy(dtype, shape, raw)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed array in msgpack frame: {exc}") from exc
    raise ProtocolError(f"unknown array kind {kind!r} in msgpack frame")


def _unpack_numpy(dtype: str, shape: list[int], raw: memoryview) -> Any:
    try:
        import numpy as np
    except ImportError:
        raise ProtocolError("a numpy array arrived: install numpy to decode it") from None
    # bytearray: the decoded array is writable, as a user would expect of a fresh array.
    return np.frombuffer(bytearray(raw), dtype=np.dtype(dtype)).reshape(shape)


def _unpack_torch(dtype: str, shape: list[int], raw: memoryview) -> Any:
    try:
        import torch
    except ImportError:
        raise ProtocolError(
            "a torch tensor arrived: install torch to decode it (pip install 'falkit[torch]')"
        ) from None
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ProtocolError(f"unknown torch dtype {dtype!r}")
    if not raw and 0 in shape:
        # Only a shape with no elements may come without bytes: a peer's 15-byte frame
        # claiming [2**30] would otherwise allocate 4 GiB here.
        return torch.empty(shape, dtype=torch_dtype)
    flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return flat.view(torch_dtype).reshape(shape)
