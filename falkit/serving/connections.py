"""Connection limits that hold before a request's headers are complete, where no ASGI app
can act (it only ever sees complete requests): the smallest extension of uvicorn's own
httptools protocol, since uvicorn has no knob for them.

``ConnectionSpec`` says what is bounded, and why each default is what it is:

- ``max_header_size`` (64 KiB): the request line and headers of one request; more is
  answered ``431``. uvicorn's httptools parser buffers a header of any size (a 64 MiB one
  cost 126 MiB of RSS); browsers send every cookie of ``127.0.0.1`` to every port, other
  dev servers' included, so the cap is generous (Node's is 16 KiB, uvicorn's h11 16 KiB).
- ``header_timeout`` (15 s): from the connection (or the first byte of the next request on
  a kept-alive one) to the end of the headers; past it ``408`` and the connection closes.
  A silent or half-sent request held its socket forever (slowloris).
- ``body_timeout`` (60 s): the longest pause between two pieces of a request's body; past it
  the connection closes and the handler's ``receive()`` sees the client gone.
- ``keep_alive_timeout`` (75 s): how long an idle kept-alive connection stays open; longer
  than clients' pools keep idle connections (httpx: 5 s), so the client always lets go
  first (a request sent just as the server closed was a ReadError in the soak test).
- ``max_connections`` (half the process's file limit, at most 1,000): connections past it
  get ``503`` at once and are closed, so idle sockets cannot use up the process's file
  descriptors (1,100 idle sockets under a 1,024 limit made the next request fail in
  ``accept``). WebSocket sessions count too.

WebSocket handshakes with a request line or header count that the websockets library
refuses without an answer (8 KiB, 128 headers) are answered ``414`` / ``431`` here.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from ..exceptions import ServerError


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1000
    return max(32, min(1000, soft // 2))


@dataclass(frozen=True)
class ConnectionSpec:
    """Bounds on every connection to a server (see the module docstring for each);
    ``falkit.serve(App, connections=ConnectionSpec(max_connections=64))``. A bad value is
    ``ServerError``."""

    max_header_size: int = 64 * 1024
    header_timeout: float = 15.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 75.0
    max_connections: int = field(default_factory=_default_max_connections)

    def __post_init__(self) -> None:
        for name in ("max_header_size", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ServerError(f"{name} must be a positive integer, got {value!r}")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ServerError(f"{name} must be a positive number of seconds, got {value!r}")
