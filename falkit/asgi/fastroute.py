"""A shorter way through FastAPI for the usual fal endpoint: one JSON body, no dependencies.

FastAPI answers ``def generate(self, input: Input) -> Output`` by building a ``Request``,
solving the (empty) dependency graph inside two exit stacks, running the handler in a worker
thread, then hopping to a worker thread *again* to validate the return value before it
serialises it. For a route with nothing but a JSON body the outcome is fixed by three calls
on the route's own fields: ``body_field.validate``, the handler, ``response_field.validate``
+ ``serialize``. ``FastRoute`` makes exactly those calls, with one thread hop (the
handler's) instead of two; the answer is built by the same Starlette ``Response`` FastAPI
builds, byte for byte.

Everything not on that happy path goes through FastAPI's own handler, so FastAPI decides
it: a body that is not ``application/json``, malformed JSON, input that fails validation (the
422 body is FastAPI's), an empty body. The body already read is replayed to it. An exception
from the handler, or a return value that fails the response model, propagates exactly as it
does from FastAPI's handler (HTTPException to the app's handlers, others to the 500 path).

Measured (``benchmarks/asgi_stack.py``, CPU per request in-process; ``http_overhead.py``
with wrk): see the README's Benchmarks section. ``tests/test_fastroute.py`` compares the
two paths' answers byte for byte over generated inputs.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from .messages import read_body, replay

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = b"application/json"


def install(app: FastAPI) -> list[str]:
    """Give every eligible route of ``app`` the short path; the paths sped up."""
    from fastapi.routing import APIRoute

    sped_up = []
    for route in app.router.routes:
        if isinstance(route, APIRoute) and eligible(route):
            route.app = FastRoute(route)
            sped_up.append(route.path)
    return sped_up


def eligible(route: APIRoute) -> bool:
    """True when ``route``'s answer depends on nothing but its JSON body (and FastAPI
    exposes the fields this module calls; otherwise FastAPI keeps the route)."""
    from fastapi import params
    from fastapi.datastructures import DefaultPlaceholder
    from starlette.responses import JSONResponse

    dep = route.dependant
    call = dep.call
    if call is None or route.methods != {"POST"}:
        return False
    if not (inspect.isfunction(call) or inspect.ismethod(call)):
        return False  # a callable object: FastAPI's own checks decide how to run it
    if inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call):
        return False
    if dep.path_params or dep.query_params or dep.header_params or dep.cookie_params:
        return False
    if dep.dependencies or len(dep.body_params) != 1:
        return False
    specials = (
        "request_param_name",
        "websocket_param_name",
        "http_connection_param_name",
        "response_param_name",
        "background_tasks_param_name",
        "security_scopes_param_name",
    )
    if any(getattr(dep, name, None) for name in specials):
        return False
    if getattr(route, "_embed_body_fields", True):  # unknown FastAPI: leave it be
        return False
    body = dep.body_params[0]
    if isinstance(body.field_info, params.Form) or not hasattr(body, "validate"):
        return False
    if route.status_code:
        return False
    # ``build_asgi`` names the response class (SafeJSONResponse), so FastAPI renders a
    # response model's JSON-able dump with it; a left default would take another branch.
    response_class = route.response_class
    if isinstance(response_class, DefaultPlaceholder) or not issubclass(
        response_class, JSONResponse
    ):
        return False
    if (
        route.response_model_include is not None
        or route.response_model_exclude is not None
        or not route.response_model_by_alias
        or route.response_model_exclude_unset
        or route.response_model_exclude_defaults
        or route.response_model_exclude_none
    ):
        return False
    field = route.response_field
    return field is None or hasattr(field, "serialize")


class FastRoute:
    """The ASGI app of one eligible route (see the module's docstring)."""

    def __init__(self, route: APIRoute) -> None:
        self.fastapi_app: ASGIApp = route.app  # FastAPI's handler: everything off the path
        self.call: Any = route.dependant.call  # a plain function: eligible() checked
        self.is_async = inspect.iscoroutinefunction(self.call)
        self.body = route.dependant.body_params[0]
        self.name = self.body.name
        self.response_field = route.response_field
        self.response_class: Any = route.response_class  # a named class: eligible() checked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_json(scope["headers"]):
            await self.fastapi_app(scope, receive, send)
            return
        body, messages = await read_body(receive)
        if messages[-1]["type"] == "http.request":  # else a disconnect: FastAPI meets it
            value = self._parse(body)
            if value is not None:
                await self._answer(value[0], scope, receive, send)
                return
        await self.fastapi_app(scope, replay(messages, receive), send)

    def _parse(self, body: bytes) -> tuple[Any] | None:
        """``(validated input,)``, or ``None`` where FastAPI must give the answer."""
        if not body:
            return None
        try:
            data = json.loads(body)
            if data is None:  # FastAPI treats ``null`` as a missing body
                return None
            value, errors = self.body.validate(data, {}, loc=("body",))
        except Exception:  # bad JSON or UTF-8, too deep, a validator's own error...
            return None  # ...FastAPI's handler meets it again and answers as it does
        return None if errors else (value,)

    async def _answer(self, value: Any, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        kwargs = {self.name: value}
        if self.is_async:
            raw = await self.call(**kwargs)
        else:
            raw = await run_in_threadpool(self.call, **kwargs)
        if isinstance(raw, Response):
            response = raw
        elif self.response_field is not None:
            from fastapi.exceptions import ResponseValidationError

            checked, errors = self.response_field.validate(raw, {}, loc=("response",))
            if errors:
                raise ResponseValidationError(errors=errors, body=raw)
            response = self.response_class(self.response_field.serialize(checked))
        else:
            from fastapi.encoders import jsonable_encoder

            response = self.response_class(jsonable_encoder(raw))
        await response(scope, receive, send)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == _JSON
    return False
