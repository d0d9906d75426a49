"""The per-request stack: ``build_asgi(instance)`` turns an App instance into the ASGI
application that serves it, every layer a request passes assembled in one function, in
the order ``falkit.asgi.stack`` documents. Pure: no sockets, no threads.

Public here, for the rest of falkit: the builder and lifecycle hook runner, the guard's
and the limits' specs, the realtime frame cap, and the ``Server-Timing`` parser.
"""

from __future__ import annotations

from .context import REQUEST_ID_HEADER
from .gateway import QueuedRequests
from .guard import DEFAULT_MAX_BODY_SIZE, SecuritySpec, auth_headers, is_loopback, mask_key
from .limits import LimitSpec
from .limits import describe as describe_limits
from .realtime import DEFAULT_MAX_MESSAGE_SIZE
from .requestlogs import note as note_request_log
from .stack import build_asgi, call_hook
from .storage import FileStore
from .timing import parse as parse_server_timing

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "REQUEST_ID_HEADER",
    "FileStore",
    "LimitSpec",
    "QueuedRequests",
    "SecuritySpec",
    "auth_headers",
    "build_asgi",
    "call_hook",
    "describe_limits",
    "is_loopback",
    "mask_key",
    "note_request_log",
    "parse_server_timing",
]
