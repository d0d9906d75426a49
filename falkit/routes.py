"""Route decorators. They only tag a function with a frozen ``RouteSpec``;
``App.__init_subclass__`` collects the tags (see ``falkit.app``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from .exceptions import AppDefinitionError

F = TypeVar("F", bound=Callable[..., Any])

RouteKind = Literal["http", "websocket", "realtime"]
#: Each kind's short label, as the card and ``falkit serve`` list routes.
KIND_LABELS: dict[str, str] = {"http": "POST", "websocket": "WS", "realtime": "RT"}

ROUTE_ATTR = "__falkit_route__"

_INFER: Any = object()  # input_modal / output_modal: derive from annotations, as fal does


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    """fal's health check of a runner (``fal.HealthCheck``), given to the one endpoint fal's
    platform should probe: ``@fal.endpoint("/ready", health_check=fal.HealthCheck())``.
    Locally it is metadata (``App.host_kwargs["health_check_config"]``): nothing probes a
    kernel's server, and ``GET /health`` stays."""

    start_period_seconds: int | None = None
    timeout_seconds: int | None = None
    failure_threshold: int | None = None
    call_regularly: bool | None = None
    method: str | None = None


@dataclass(frozen=True)
class HealthCheckConfig:
    """The health check an App declares, where fal's platform would probe it (fal's
    ``ApplicationHealthCheckConfig``; ``method`` defaults to ``POST``, the endpoint's)."""

    path: str
    start_period_seconds: int | None
    timeout_seconds: int | None
    failure_threshold: int | None
    call_regularly: bool | None
    method: str = "POST"


@dataclass(frozen=True)
class RouteSpec:
    """What one decorated method serves: its kind, path, health check and (realtime)
    options."""

    path: str
    kind: RouteKind
    method: str = ""
    health_check: Any = None  # a HealthCheck (or fal's own): this route is the probe
    buffering: int | None = None
    session_timeout: float | None = None
    max_batch_size: int = 1
    input_modal: Any = None
    output_modal: Any = None
    content_type: str = "application/msgpack"
    encode_message: Callable[[Any], bytes] | None = None
    decode_message: Callable[[bytes], Any] | None = None

    @property
    def is_websocket(self) -> bool:
        """True for routes served over a WebSocket (raw and realtime)."""
        return self.kind != "http"


def _tag(func: F, spec: RouteSpec) -> F:
    if getattr(func, ROUTE_ATTR, None) is not None:
        raise AppDefinitionError(
            f"Can't set multiple routes for the same function: {func.__name__}"
        )
    setattr(func, ROUTE_ATTR, replace(spec, method=func.__name__))
    return func


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise AppDefinitionError(f"route path must be a string starting with '/', got {path!r}")
    return path


def endpoint(
    path: str, *, is_websocket: bool = False, health_check: Any = None
) -> Callable[[F], F]:
    """Serve the decorated method at ``path``: a POST route taking a pydantic body,
    or with ``is_websocket=True`` an ``async`` method given the raw ``fastapi.WebSocket``.
    ``health_check`` (a ``HealthCheck``) makes it the route fal's platform probes; one
    HTTP endpoint per App may have one.

    Example::

        @fal.endpoint("/")
        def generate(self, input: Input) -> Output: ...
    """
    if health_check is not None and is_websocket:
        raise AppDefinitionError(
            f"{path!r}: a websocket endpoint cannot be the health check; "
            "give health_check= to an HTTP endpoint"
        )
    spec = RouteSpec(
        path=_check_path(path),
        kind="websocket" if is_websocket else "http",
        health_check=health_check,
    )
    return lambda func: _tag(func, spec)


def health_check_config(specs: tuple[RouteSpec, ...]) -> HealthCheckConfig | None:
    """The health check among ``specs`` (what fal's platform would probe), ``None`` when
    none declares one; more than one is ``AppDefinitionError``."""
    declared = [spec for spec in specs if spec.health_check is not None]
    if len(declared) > 1:
        paths = ", ".join(repr(spec.path) for spec in declared)
        raise AppDefinitionError(
            f"health checks on {paths}: an App can have only one health check endpoint"
        )
    if not declared:
        return None
    spec, check = declared[0], declared[0].health_check
    return HealthCheckConfig(
        path=spec.path,
        start_period_seconds=check.start_period_seconds,
        timeout_seconds=check.timeout_seconds,
        failure_threshold=check.failure_threshold,
        call_regularly=check.call_regularly,
        method=check.method or "POST",
    )


def realtime(
    path: str,
    *,
    buffering: int | None = None,
    session_timeout: float | None = None,
    max_batch_size: int = 1,
    input_modal: Any = _INFER,
    output_modal: Any = _INFER,
    content_type: str = "application/msgpack",
    encode_message: Callable[[Any], bytes] | None = None,
    decode_message: Callable[[bytes], Any] | None = None,
) -> Callable[[F], F]:
    """Serve the decorated method over fal's realtime protocol (binary msgpack frames on
    a WebSocket at ``path``). The options mean what they mean in fal's SDK."""
    if max_batch_size < 1:
        raise AppDefinitionError("max_batch_size must be at least 1")
    if buffering is not None and buffering < 1:
        raise AppDefinitionError("buffering must be None or at least 1")
    spec = RouteSpec(
        path=_check_path(path),
        kind="realtime",
        buffering=buffering,
        session_timeout=session_timeout,
        max_batch_size=max_batch_size,
        input_modal=None if input_modal is _INFER else input_modal,
        output_modal=None if output_modal is _INFER else output_modal,
        content_type=content_type,
        encode_message=encode_message,
        decode_message=decode_message,
    )
    return lambda func: _tag(func, spec)
