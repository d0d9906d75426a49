"""What ``Client`` and ``AsyncClient`` (and their realtime sessions) share, with no I/O:
URLs, payloads, how an answer becomes a value or an error, server-sent events, and how
realtime frames are throttled, encoded and read. Only the I/O differs between the twins
(httpx's ``BaseClient`` idiom). The SSE parser and the answer helpers are public: the
playground, ``falkit.bench`` and the fal_client bridge read answers the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import codec
from ..exceptions import ConnectionLost, RealtimeError, RemoteError

if TYPE_CHECKING:
    # Imported where a client is made: with click and rich installed (jupyter brings
    # them), ``import httpx`` loads its CLI too, ~0.4 s of ``import falkit`` (-X importtime).
    import httpx


def ws_url(url: str) -> str:
    """``url`` with ``http``/``https`` turned into ``ws``/``wss`` (others unchanged)."""
    return "ws" + url[len("http") :] if url.startswith("http") else url


def realtime_url(url: str, max_buffering: int | None) -> str:
    """A realtime route's URL asking the server to queue at most ``max_buffering`` inputs."""
    if max_buffering is None:
        return url
    if not 1 <= max_buffering <= 60:
        raise ValueError("max_buffering must be between 1 and 60, as fal's clients require")
    return f"{url}?max_buffering={max_buffering}"


def json_payload(data: Any) -> Any:
    """A request body: a pydantic model as JSON-ready data; anything else unchanged."""
    if hasattr(data, "model_dump"):
        return data.model_dump(mode="json")
    return data


def frame_payload(data: Any) -> Any:
    """A realtime input: a pydantic model as a dict (tensors kept native for the codec)."""
    return data.model_dump() if hasattr(data, "model_dump") else data


@contextmanager
def transport_errors(url: str) -> Iterator[None]:
    """httpx's transport errors as falkit's ``ConnectionLost`` (translated here only)."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise ConnectionLost(
            f"no complete answer from {url}: {exc or type(exc).__name__} (is the server running?)"
        ) from exc


def raise_for_status(response: httpx.Response) -> None:
    """``RemoteError`` (status, fal's ``detail``, request id) for a non-2xx answer."""
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    raise RemoteError(
        response.status_code,
        detail,
        url=str(response.url),
        request_id=response.headers.get("x-fal-request-id"),
    )


class SSEParser:
    """Server-sent events, line by line: ``data:`` lines up to a blank line make one event,
    decoded as JSON when it is JSON (as fal_client's ``stream`` yields them)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> list[Any]:
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip())
            return []
        return self.flush() if not line else []

    def flush(self) -> list[Any]:
        if not self._data:
            return []
        text, self._data = "\n".join(self._data), []
        try:
            return [json.loads(text)]
        except ValueError:
            return [text]


class BaseClient:
    """The state both clients share, and the answers they make of responses."""

    def __init__(
        self, url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})

    def _ws_url(self, path: str) -> str:
        return ws_url(self.url) + path

    def _realtime_url(self, path: str, max_buffering: int | None) -> str:
        return realtime_url(self._ws_url(path), max_buffering)

    @staticmethod
    def _body(data: Any) -> Any:
        return json_payload(data if data is not None else {})

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        raise_for_status(response)
        return response.json()


Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]

#: Connect options shared by both sessions: no size cap on outputs (fal_client sets none),
#: and no per-message deflate: it costs more than it saves on tensors and images.
WS_OPTIONS: dict[str, Any] = {"max_size": None, "compression": None}


class Throttle:
    """Keeps at most one pending frame; says when a frame may go out."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval or 0.0
        self.last = float("-inf")
        self.pending: bytes | None = None

    def offer(self, frame: bytes) -> bytes | None:
        """The frame to send now, or None when it must wait (replacing an older one)."""
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.pending = now, None
            return frame
        self.pending = frame
        return None

    def due_in(self) -> float:
        return max(0.0, self.last + self.interval - time.monotonic())

    def take(self) -> bytes | None:
        frame, self.pending = self.pending, None
        if frame is not None:
            self.last = time.monotonic()
        return frame


class Frames:
    """Turns received frames into outputs; remembers that the session ended."""

    def __init__(self, decode: Decoder | None) -> None:
        self.decode = decode or codec.decode
        self.ended = False

    def read(self, message: str | bytes) -> Any:
        if isinstance(message, (bytes, bytearray, memoryview)):
            return self.decode(bytes(message))
        frame = json.loads(message)
        if not (isinstance(frame, dict) and frame.get("type", "").startswith("x-fal-")):
            return frame
        if frame["type"] == "x-fal-error":
            self.ended = True
            if frame.get("error") == "TIMEOUT":
                return None
            raise RealtimeError(frame.get("error", ""), frame.get("reason", ""))
        return SKIP  # x-fal-message (timings): metadata, skipped as fal_client does


SKIP = object()


def closed(exc: Exception) -> None:
    from websockets.exceptions import ConnectionClosedOK

    if not isinstance(exc, ConnectionClosedOK):
        raise RealtimeError("CONNECTION_CLOSED", str(exc)) from exc


class BaseRealtimeSession:
    """What both realtime sessions share: the codec, the throttle and the frame reader."""

    def __init__(
        self,
        ws: Any,
        *,
        encode_message: Encoder | None = None,
        decode_message: Decoder | None = None,
        throttle_interval: float | None = None,
    ) -> None:
        self._ws = ws
        self._encode = encode_message or codec.encode
        self._frames = Frames(decode_message)
        self._throttle = Throttle(throttle_interval)

    def _outgoing(self, obj: Any) -> bytes | None:
        """The frame to send now for input ``obj``, or ``None`` when throttled."""
        return self._throttle.offer(self._encode(frame_payload(obj)))
