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

fal's exceptions (``fal.exceptions``; ``import falkit as fal`` reaches them as
``fal.exceptions``) are a tree of their own, as in fal's SDK: an App raises them to choose
its HTTP answer, falkit never does. ``falkit.asgi`` answers them as fal's server does, and
the real SDK's classes alike::

    FalServerlessException
    ├── AppException            ``{"detail": message}`` with its ``status_code``
    │   └── GPUException        503 ``GPU error`` (on fal: the runner is replaced)
    │       └── GPUOutOfMemoryException
    │           └── CUDAOutOfMemoryException    503 ``CUDA error: out of memory``
    ├── FieldException          422 (or its ``status_code``), pydantic's ``detail`` shape;
    │                           ``billable_units`` becomes ``x-fal-billable-units``
    ├── RequestCancelledException   499 ``{"detail": message}``
    ├── FileTooLargeError       a file over the size an upload accepts
    ├── AppFileUploadException  an app file could not be uploaded (``fal deploy``)
    └── UnauthenticatedException    no fal key (fal's CLI)

An unhandled exception that reads as a GPU failure (``gpu_exception_for``: torch's CUDA
out-of-memory, cuDNN, NVML, NCCL, ... errors) is answered 503 as the GPU exception it
stands for; ``catch_gpu_exceptions`` makes that translation explicit around a block.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
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


# -- fal's exceptions (``fal.exceptions``) -------------------------------------------------
# Dataclasses with fal's fields and defaults, so ``AppException("...", 401)``,
# ``exc.message`` and ``FieldException(field=..., message=...)`` read as with fal; unlike
# fal's, they keep identity equality (hashable, as exceptions are) and ``str(exc)`` is the
# message.


class FalServerlessException(Exception):
    """fal's base of the exceptions an App (or fal's CLI) raises."""


@dataclass(eq=False)
class AppException(FalServerlessException):
    """Answer the request with ``status_code`` and ``{"detail": message}``."""

    message: str
    status_code: int

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class FieldException(FalServerlessException):
    """One input field is wrong: answered ``status_code`` (422) with pydantic's
    ``{"detail": [{"loc": ["body", field], "msg": message, "type": type}]}``. A truthy
    ``billable_units`` is sent as ``x-fal-billable-units`` (an int as is, a float with
    8 decimals); one that is not a number makes the answer a 500."""

    field: str
    message: str
    status_code: int = 422
    type: str = "value_error"
    billable_units: int | float | str | None = 0

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def to_pydantic_format(self) -> dict[str, list[dict[str, Any]]]:
        """The answer's body, in the shape of a FastAPI validation error."""
        return {"detail": [{"loc": ["body", self.field], "msg": self.message, "type": self.type}]}


@dataclass(eq=False)
class RequestCancelledException(FalServerlessException):
    """The client gave up on the request: answered 499 (nginx's "client closed request")
    with ``{"detail": message}``."""

    message: str = "Request cancelled by the client."

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class FileTooLargeError(FalServerlessException):
    """A file is larger than the upload accepts."""

    message: str = "File is too large."

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class AppFileUploadException(FalServerlessException):
    """One of the App's files (``app_files``) could not be uploaded."""

    message: str
    relative_path: str

    def __str__(self) -> str:
        return f"{self.relative_path}: {self.message}"


class UnauthenticatedException(FalServerlessException):
    """fal's CLI found no key; locally no key is needed (falkit never raises it)."""

    def __init__(self) -> None:
        super().__init__("You must be authenticated: run `fal auth login` or set FAL_KEY.")


@dataclass(eq=False)
class GPUException(AppException):
    """A GPU failed under the request: answered 503, which on fal replaces the runner."""

    message: str = "GPU error"
    status_code: int = 503


@dataclass(eq=False)
class GPUOutOfMemoryException(GPUException):
    """The GPU ran out of memory."""


@dataclass(eq=False)
class CUDAOutOfMemoryException(GPUOutOfMemoryException):
    """CUDA ran out of memory (torch's ``OutOfMemoryError`` and kin)."""

    message: str = "CUDA error: out of memory"


# Lower-case names of GPU libraries: an error naming one is a GPU failure (fal's rule).
_GPU_WORDS = ("cuda", "cudnn", "nvml", "nccl", "cublas", "cufft", "cusolver", "cusparse", "triton")


def is_cuda_oom(exc: BaseException) -> bool:
    """True for the errors torch raises when CUDA memory runs out, or that follow from it
    (an NVML assert, a cuDNN internal error or its "not supported" after a failed
    allocation): a ``RuntimeError`` with one message argument."""
    if not isinstance(exc, RuntimeError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return False
    text = exc.args[0]
    return (
        ("CUDA" in text and "out of memory" in text)
        or "NVML_SUCCESS == r INTERNAL ASSERT FAILED" in text
        or "CUDNN_STATUS_INTERNAL_ERROR" in text
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in text
    )


def is_gpu_error(exc: BaseException) -> bool:
    """True when the error's message names a GPU library (CUDA, cuDNN, NVML, NCCL, cuBLAS,
    ..., Triton), whatever its type: the last resort before a plain 500."""
    text = str(exc).lower()
    return any(word in text for word in _GPU_WORDS)


def gpu_exception_for(exc: BaseException) -> GPUException | None:
    """The GPU exception ``exc`` stands for (``CUDAOutOfMemoryException``, else
    ``GPUException``), ``None`` when it is no GPU failure; a GPU exception is itself."""
    if isinstance(exc, GPUException):
        return exc
    if is_cuda_oom(exc):
        return CUDAOutOfMemoryException()
    if is_gpu_error(exc):
        return GPUException()
    return None


class catch_gpu_exceptions(contextlib.ContextDecorator):  # fal's name, lower case
    """Re-raise a GPU failure inside the block (or the decorated function) as the GPU
    exception it stands for (``gpu_exception_for``), chained to the original; anything
    else passes through untouched::

        with fal.exceptions.catch_gpu_exceptions():
            image = pipe(prompt)
    """

    def __enter__(self) -> catch_gpu_exceptions:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        replacement = None if exc is None else gpu_exception_for(exc)
        if replacement is not None and replacement is not exc:
            raise replacement from exc
