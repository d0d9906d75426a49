"""fal's error answers, in JSON that cannot turn bad input into a 500: 404
``{"detail": "Path /x not found"}`` and 422 ``{"detail": [...]}`` (both with
``x-fal-billable-units: 0``: a request the App never ran is not billed), the exceptions of
``fal.exceptions`` an App raises (falkit's and the real SDK's alike: ``AppException`` with
its status, ``FieldException`` as a 422 with its ``billable_units``,
``RequestCancelledException`` 499), a GPU failure 503, anything else 500
``{"detail": "Internal Server Error"}`` with the request's id.

Python's JSON parser accepts two things strict JSON output refuses: the escape ``"\\ud800"``
(it decodes to a lone surrogate, which UTF-8 cannot encode) and ``NaN``/``Infinity``. Echoed
back by a handler, or quoted as the ``input`` of FastAPI's 422 body, either made the answer
itself fail, so the client got 500 for its own bad input. Here a lone surrogate goes back as
the same ``\\uXXXX`` escape it came in as, and a 422 quotes non-finite numbers as strings.
A 422 quotes a body that is not UTF-8 as fal does, ``<binary N bytes>``, and a lone
surrogate in a string it quotes as ``?``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import exceptions as falkit_exceptions
from .context import REQUEST_ID_HEADER, request_id

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

logger = logging.getLogger("falkit.server")


class SafeJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse``, with lone surrogates sent as ``\\uXXXX`` escapes."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            # The slow path only for the rare answer that needs it: ASCII escapes are
            # valid JSON and decode back to the very string the client sent.
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


#: A 422 quotes at most this many characters of each input it names, and names at most
#: ``MAX_ERRORS`` errors: a 10 MB body of control bytes came back as a 60 MB 422.
MAX_QUOTED = 1024
MAX_ERRORS = 100


BILLABLE_UNITS_HEADER = "x-fal-billable-units"
_NOT_BILLED = {BILLABLE_UNITS_HEADER: "0"}


def _quoted(value: Any) -> Any:
    """``value`` as a 422 may quote it: text (a raw body's bytes when they are UTF-8; fal's
    ``<binary N bytes>`` when not) cut to ``MAX_QUOTED`` characters, lone surrogates as
    ``?``; a container too large to quote is named."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = _body_text(value)
    if isinstance(value, str):
        value = value.encode("utf-8", errors="replace").decode("utf-8")
        if len(value) <= MAX_QUOTED:
            return value
        return value[:MAX_QUOTED] + f"... (cut: {len(value)} characters in all)"
    if isinstance(value, (dict, list, tuple)) and _too_large(value, MAX_QUOTED):
        return f"({type(value).__name__} of {len(value)} items, too large to quote)"
    return value


def _body_text(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[: MAX_QUOTED * 4])
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A head cut from a longer body may end inside a character: only an error before
        # its last 3 bytes says the body is not text.
        if len(head) < len(data) and exc.start >= len(head) - 3:
            return head[: exc.start].decode("utf-8")
        return f"<binary {len(data)} bytes>"


def _too_large(value: Any, budget: int) -> bool:
    # A walk that stops as soon as the budget is spent: never the whole of a huge input.
    stack, left = [value], budget
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            left -= 2 + len(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            left -= 2 + len(item)
        else:
            left -= len(item) if isinstance(item, (str, bytes)) else 8
        if left < 0:
            return True
    return False


def _bounded(errors: Any) -> list[Any]:
    shown = [
        {**error, "input": _quoted(error["input"])} if "input" in error else error
        for error in list(errors)[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        shown.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_ERRORS} more errors not shown",
                "input": None,
            }
        )
    return shown


_ENCODERS: dict[Any, Any] = {
    bytes: _body_text,
    bytearray: _body_text,
    memoryview: _body_text,
    BaseException: str,  # a validator's error in ``ctx``
}


async def validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """FastAPI's 422 ``{"detail": [...]}``, renderable whatever the input held (a body that
    is not UTF-8 included) and bounded in size whatever its size; not billed."""
    from fastapi.encoders import jsonable_encoder

    detail = _finite(jsonable_encoder(_bounded(exc.errors()), custom_encoder=_ENCODERS))
    return SafeJSONResponse({"detail": detail}, 422, headers=_NOT_BILLED)


def _sdk_classes(*names: str) -> list[type[Exception]]:
    """``fal.exceptions``' classes of these names, falkit's and (once imported by the
    user's code) the real SDK's: an App written with either raises its own."""
    modules = [falkit_exceptions, sys.modules.get("fal.exceptions")]
    return [getattr(m, n) for m in modules if m is not None for n in names if hasattr(m, n)]


def _billable_units(units: Any) -> dict[str, str]:
    if not units:
        return {}
    # Not a number: float() raises, and the answer becomes a 500, as on fal.
    value = float(units)
    return {BILLABLE_UNITS_HEADER: format(value, ".0f" if isinstance(units, int) else ".8f")}


# The handlers take falkit's class and the real SDK's alike: ``exc`` is typed by its fields.


async def app_exception(request: Request, exc: Any) -> JSONResponse:
    """``AppException`` (``GPUException`` included): its status and ``{"detail": message}``."""
    return JSONResponse({"detail": exc.message}, exc.status_code)


async def field_exception(request: Request, exc: Any) -> JSONResponse:
    """``FieldException``: a 422 in pydantic's shape, billed as its ``billable_units``."""
    error = {"loc": ["body", exc.field], "msg": exc.message, "type": exc.type}
    headers = _billable_units(exc.billable_units)
    return JSONResponse({"detail": [error]}, exc.status_code, headers=headers)


async def request_cancelled(request: Request, exc: Any) -> JSONResponse:
    """``RequestCancelledException``: 499, the status nginx gives a request its client left."""
    return JSONResponse({"detail": str(exc)}, 499)


def add_error_handlers(app: FastAPI) -> None:
    """fal's answers for 404s and other HTTP errors, 422s, ``fal.exceptions`` and
    unhandled exceptions."""

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail, headers = exc.detail, exc.headers
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Path {request.url.path} not found"
            headers = {**(headers or {}), **_NOT_BILLED}
        return JSONResponse({"detail": detail}, exc.status_code, headers=headers)

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log ring before the answer leaves, so a client
        # that reads the logs after its 500 finds it; the client gets fal's body and
        # nothing of the kernel. Starlette re-raises afterwards: the mark keeps uvicorn's
        # copy of the same traceback out of the ring.
        # The request id ties the client's 500 to its traceback in the logs (the
        # playground shows that one, not merely the newest).
        rid = request_id(request.scope)
        logger.error(
            "%s %s failed (request %s)",
            request.method,
            request.url.path,
            rid,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        exc.__falkit_logged__ = True  # type: ignore[attr-defined]
        headers = {REQUEST_ID_HEADER: rid}
        gpu = falkit_exceptions.gpu_exception_for(exc)
        if gpu is not None:  # on fal a 503 replaces the runner; the GPU may be unusable
            return JSONResponse({"detail": gpu.message}, gpu.status_code, headers=headers)
        return JSONResponse({"detail": "Internal Server Error"}, 500, headers=headers)

    for cls in _sdk_classes("AppException"):
        app.add_exception_handler(cls, app_exception)
    for cls in _sdk_classes("FieldException"):
        app.add_exception_handler(cls, field_exception)
    for cls in _sdk_classes("RequestCancelledException"):
        app.add_exception_handler(cls, request_cancelled)
    app.add_exception_handler(HTTPException, not_found)
    # Starlette types handlers as taking any Exception; this one takes the one it handles.
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal)
