"""falkit's exceptions, one tree.

::

    FalkitError
    ├── AppDefinitionError      an App class, its options or a route decorator is malformed
    ├── ServerError
    │   ├── PortInUseError      the requested port is taken
    │   ├── ServerNotRunning    no server of that name is running
    │   └── SetupError          setup() raised; the original exception is chained
    ├── ProtocolError           a malformed message on the wire
    │   └── EncodeError         a value has no wire form (no msgpack type for it)
    ├── ClientError
    │   ├── RemoteError         the server answered with a non-2xx status
    │   ├── ConnectionLost      no answer: refused, reset, or cut mid-stream
    │   └── RealtimeError       the server sent an ``x-fal-error`` frame
    ├── BenchError              a load run could not be made (bad bounds, not loopback)
    ├── ExportError             a notebook or class cannot be exported for ``fal deploy``
    ├── CLIError                bad command-line input (exit status 2)
    ├── FormError               a playground form holds what cannot be sent (bad JSON)
    ├── MissingDependency       an optional package is not installed (says what to install)
    └── ToolkitError            a ``fal.toolkit`` call failed or has no local form; fal's
                                toolkit errors (``DownloadError``, ...) derive from it

Each also derives from the built-in exception its callers would catch (``ValueError``,
``TypeError``, ``OSError``, ``LookupError``, ``ConnectionError``, ``ImportError``), so
code written against Python's own exceptions keeps working.
"""

from __future__ import annotations

from typing import Any


class FalkitError(Exception):
    """Base class of every error falkit raises."""


class AppDefinitionError(FalkitError, TypeError, ValueError):
    """An App class is malformed: raised when its class statement runs, when a route
    decorator gets a bad argument, or when ``serve`` reads a malformed fal option."""


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


class EncodeError(ProtocolError, TypeError):
    """A value cannot be encoded for the wire (no msgpack form for its type)."""


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


class BenchError(FalkitError, ValueError):
    """``falkit.bench`` could not run: bad bounds, a route it cannot drive, a target off
    loopback, or a load generator that failed."""


class ExportError(FalkitError, ValueError):
    """The notebook or the class cannot be exported (missing, malformed, not an App)."""


class CLIError(FalkitError):
    """Bad command-line input; printed as one line, exit status 2."""


class FormError(FalkitError, ValueError):
    """A playground form holds something that cannot be sent (a JSON editor with bad
    JSON)."""


class MissingDependency(FalkitError, ImportError):
    """An optional package a feature needs is not installed; the message says how to
    install it."""


class ToolkitError(FalkitError):
    """A ``fal.toolkit`` call failed, or has no local form (a download from off this
    machine, an upload to fal's CDN); the message says what to do instead.
    ``falkit.toolkit``'s exceptions, fal's names (``FalTookitException``,
    ``DownloadError``, ``FileUploadException``, ``KVStoreException``), derive from it."""
