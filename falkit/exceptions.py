"""falkit's exceptions, one tree.

::

    FalkitError
    ├── AppDefinitionError      the App class is malformed (raised at class definition)
    ├── ServerError
    │   ├── PortInUseError      the requested port is taken
    │   ├── ServerNotRunning    no server of that name is running
    │   └── SetupError          setup() raised; the original exception is chained
    ├── ProtocolError           a malformed message on the wire
    └── ClientError
        ├── RemoteError         the server answered with a non-2xx status
        ├── ConnectionLost      no answer: refused, reset, or cut mid-stream
        └── RealtimeError       the server sent an ``x-fal-error`` frame
"""

from __future__ import annotations

from typing import Any


class FalkitError(Exception):
    """Base class of every error falkit raises."""


class AppDefinitionError(FalkitError, TypeError):
    """An App class is malformed; raised when the class statement runs."""


class ServerError(FalkitError):
    """A server could not be started, found or stopped."""


class PortInUseError(ServerError, OSError):
    """The requested port is already bound by another process or server."""


class ServerNotRunning(ServerError, LookupError):
    """No running server has that name."""


class SetupError(ServerError):
    """The App's ``setup()`` raised; the original exception is ``__cause__``."""


class ProtocolError(FalkitError, ValueError):
    """A message on the wire could not be decoded or did not fit the schema."""


class ClientError(FalkitError):
    """A client call failed."""


class RemoteError(ClientError):
    """The server answered with a non-2xx status; ``status`` and ``detail`` say why, and
    ``request_id`` (on a 500) names the traceback in the server's logs."""

    def __init__(
        self, status: int, detail: Any, *, url: str = "", request_id: str | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.url = url
        self.request_id = request_id
        where = f" from {url}" if url else ""
        super().__init__(f"HTTP {status}{where}: {detail}")


class ConnectionLost(ClientError, ConnectionError):
    """The server could not be reached, or the connection broke before the answer was
    complete (a stream cut mid-way); ``__cause__`` is the transport's own error."""


class RealtimeError(ClientError):
    """The server ended a realtime session with an ``x-fal-error`` frame."""

    def __init__(self, error: str, reason: str) -> None:
        self.error = error
        self.reason = reason
        super().__init__(f"{error}: {reason}")
