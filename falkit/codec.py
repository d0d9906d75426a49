"""The realtime wire format: msgpack, as fal's realtime protocol sends it."""

from __future__ import annotations

from typing import Any

import msgpack


def encode(obj: Any) -> bytes:
    """Pack ``obj`` (dicts, lists, str, bytes, numbers) into one msgpack frame."""
    return msgpack.packb(obj, use_bin_type=True)


def decode(frame: bytes) -> Any:
    """Unpack one msgpack frame; raises ``ProtocolError`` on malformed data."""
    from .exceptions import ProtocolError

    try:
        return msgpack.unpackb(frame, raw=False)
    except Exception as exc:
        raise ProtocolError(f"invalid msgpack frame: {exc}") from exc
