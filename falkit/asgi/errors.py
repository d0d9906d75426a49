"""fal's error bodies (404 ``{"detail": "Path /x not found"}``, 422 ``{"detail": [...]}``,
500 ``{"detail": "Internal Server Error"}`` with the request's id), in JSON answers that
cannot turn bad input into a 500.

Python's JSON parser accepts two things strict JSON output refuses: the escape ``"\\ud800"``
(it decodes to a lone surrogate, which UTF-8 cannot encode) and ``NaN``/``Infinity``. Echoed
back by a handler, or quoted as the ``input`` of FastAPI's 422 body, either made the answer
itself fail, so the client got 500 for its own bad input. Here a lone surrogate goes back as
the same ``\\uXXXX`` escape it came in as, and a 422 quotes non-finite numbers as strings.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

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


def _quoted(value: Any) -> Any:
    """``value`` as a 422 may quote it: text (a raw body's bytes decoded, bad UTF-8
    replaced) cut to ``MAX_QUOTED`` characters; a container too large to quote is named."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[: MAX_QUOTED * 4]).decode("utf-8", errors="replace")
    if isinstance(value, str):
        if len(value) <= MAX_QUOTED:
            return value
        return value[:MAX_QUOTED] + f"... (cut: {len(value)} characters in all)"
    if isinstance(value, (dict, list, tuple)) and _too_large(value, MAX_QUOTED):
        return f"({type(value).__name__} of {len(value)} items, too large to quote)"
    return value


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


async def validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """FastAPI's 422 ``{"detail": [...]}``, renderable whatever the input held (a body that
    is not UTF-8 included) and bounded in size whatever its size."""
    from fastapi.encoders import jsonable_encoder

    detail = _finite(jsonable_encoder(_bounded(exc.errors())))
    return SafeJSONResponse({"detail": detail}, 422)


def add_error_handlers(app: FastAPI) -> None:
    """fal's answers for 404s and other HTTP errors, 422s and unhandled exceptions."""

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Path {request.url.path} not found"
        return JSONResponse({"detail": detail}, exc.status_code, headers=exc.headers)

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
        return JSONResponse(
            {"detail": "Internal Server Error"}, 500, headers={REQUEST_ID_HEADER: rid}
        )

    app.add_exception_handler(HTTPException, not_found)
    # Starlette types handlers as taking any Exception; this one takes the one it handles.
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal)
