"""JSON answers that cannot turn bad input into a 500.

Python's JSON parser accepts two things strict JSON output refuses: the escape ``"\\ud800"``
(it decodes to a lone surrogate, which UTF-8 cannot encode) and ``NaN``/``Infinity``. Echoed
back by a handler, or quoted as the ``input`` of FastAPI's 422 body, either made the answer
itself fail, so the client got 500 for its own bad input. Here a lone surrogate goes back as
the same ``\\uXXXX`` escape it came in as, and a 422 quotes non-finite numbers as strings.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError


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
