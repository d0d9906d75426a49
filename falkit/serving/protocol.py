"""uvicorn's httptools protocol with ``ConnectionSpec``'s bounds (see ``connections`` for
each bound and its default): the smallest extension of uvicorn's own protocol class, since
an ASGI app never sees a request whose headers are incomplete and uvicorn has no knob for
these. Imported in the server's thread (it imports uvicorn)."""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .connections import ConnectionSpec

_WS_MAX_LINE = 8192  # websockets' own limits for a handshake (its MAX_LINE_LENGTH ...)
_WS_MAX_HEADERS = 128  # ... and MAX_NUM_HEADERS)
# After a refusal the rest of what the client sends is read and dropped for this long before
# the socket closes: closing with unread data makes the kernel reset the connection, and the
# client may lose the answer it was sent.
_LINGER_S = 1.0
_REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _canned(status: int, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    )
    return head + body


def bounded_protocol(spec: ConnectionSpec) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``spec``'s bounds (pass it as ``Config(http=...)``).
    ``keep_alive_timeout`` goes to uvicorn's own ``timeout_keep_alive``."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # reading a request line and headers
            self._head_size = 0
            self._timer: Any = None  # the header or body timeout running now
            self._refused = False  # answered and closing: what comes in is dropped

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > spec.max_connections:
                # Nothing is read yet, so nothing is lost by closing at once; lingering
                # would keep the very descriptors this limit is about.
                message = f"over {spec.max_connections} open connections; try again"
                self._refuse(503, message, linger=False)
                return
            self._arm(spec.header_timeout, 408)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                if self._timer is None:  # the first byte of a kept-alive connection's next
                    self._arm(spec.header_timeout, 408)
                self._head_size += len(data)
            elif self._timer is not None:  # a piece of the body: the pause timer restarts
                self._arm(spec.body_timeout, None)
            super().data_received(data)
            if self._in_head and self._head_size > spec.max_header_size:
                self._refuse(431, f"request headers over {spec.max_header_size} bytes")

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_size = 0
            if self.parser.should_upgrade() and self._refuse_handshake():
                return
            super().on_headers_complete()
            self._disarm()
            if self.cycle is not None and self.cycle.more_body:
                self._arm(spec.body_timeout, None)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()
            self._in_head = True  # the next bytes are the next request's

        def handle_websocket_upgrade(self) -> None:
            self._disarm()  # the WebSocket protocol takes the connection over
            if not self._refused:
                super().handle_websocket_upgrade()

        def _refuse_handshake(self) -> bool:
            line = len(self.url) + len(b"GET  HTTP/1.1\r\n")
            if line > _WS_MAX_LINE:
                self._refuse(414, f"WebSocket request line over {_WS_MAX_LINE} bytes")
            elif len(self.headers) > _WS_MAX_HEADERS:
                self._refuse(431, f"WebSocket handshake with over {_WS_MAX_HEADERS} headers")
            else:
                return False
            return True

        def _arm(self, seconds: float, status: int | None) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out, status)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, status: int | None) -> None:
            self._timer = None
            if status is None:  # mid-body: the handler sees a disconnect
                self.transport.close()
            else:
                self._refuse(status, "request headers not complete in time")

        def _refuse(self, status: int, detail: str, *, linger: bool = True) -> None:
            self._disarm()
            if self._refused or self.transport.is_closing():
                return
            self._refused = True
            self.transport.write(_canned(status, detail))
            if not linger:
                self.transport.close()
                return
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)

    return BoundedHttpToolsProtocol
