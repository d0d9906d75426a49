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


async def validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """FastAPI's 422 ``{"detail": [...]}``, renderable whatever the input held."""
    from fastapi.encoders import jsonable_encoder

    return SafeJSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, 422)


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
