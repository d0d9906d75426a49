"""The ``App`` base class: fal's class model, served locally by falkit."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .devices import pick_device
from .exceptions import AppDefinitionError
from .routes import ROUTE_ATTR, RouteSpec

# fal's class options. Those with a local meaning are honoured by the server; the others
# are kept as metadata so the same class deploys unchanged.
FAL_OPTIONS: dict[str, Any] = {
    "requirements": [],
    "machine_type": "S",
    "num_gpus": None,
    "keep_alive": 60,
    "min_concurrency": None,
    "max_concurrency": None,
    "concurrency_buffer": None,
    "max_multiplexing": None,
    "request_timeout": None,
    "startup_timeout": None,
    "app_auth": "private",
    "image": None,
    "local_python_modules": [],
}


@dataclass(frozen=True)
class RequestContext:
    """fal's ``RequestContext``: what a handler may know of the request it answers."""

    request_id: str | None
    endpoint: str | None
    lifecycle_preference: dict[str, str] | None
    headers: dict[str, str] = field(default_factory=dict)
    upload_policy: Any = None  # fal's CDN upload policy; locally there is no CDN


#: The context outside any HTTP request (``setup()``, WebSocket and realtime sessions).
NO_REQUEST = RequestContext(None, None, None, {})

#: Set by ``falkit.asgi`` around each HTTP request to a function building its context: the
#: context is made only when a handler reads ``current_request``.
request_context: ContextVar[Callable[[], RequestContext] | None] = ContextVar(
    "falkit_current_request", default=None
)

#: Called with each App subclass once its class statement ran. ``falkit/__init__`` adds the
#: ``%fal`` registration here, so a shell that found falkit already imported still gets
#: the magic, without this module knowing about IPython.
class_defined_hooks: list[Callable[[type], None]] = []

_PART = re.compile(r"[A-Z][a-z]*")


def to_app_name(class_name: str) -> str:
    """fal's default app name: ``MyGoodApp`` -> ``my-good-app``."""
    return "-".join(part.lower() for part in _PART.findall(class_name)) or class_name.lower()


def _route_specs(cls: type) -> tuple[RouteSpec, ...]:
    specs: dict[str, RouteSpec] = {}
    for name in dir(cls):
        spec = getattr(getattr(cls, name, None), ROUTE_ATTR, None)
        if isinstance(spec, RouteSpec):
            specs[name] = spec
    by_path: dict[str, str] = {}
    for name, spec in sorted(specs.items()):
        if spec.path in by_path:
            raise AppDefinitionError(
                f"{cls.__name__}: methods {by_path[spec.path]!r} and {name!r} are both "
                f"routed to {spec.path!r}; give each route its own path"
            )
        by_path[spec.path] = name
        if spec.kind == "websocket":
            _check_websocket_method(cls, name, getattr(cls, name))
    return tuple(specs[name] for name in sorted(specs, key=lambda n: specs[n].path))


def _check_websocket_method(cls: type, name: str, func: Callable[..., Any]) -> None:
    where = f"{cls.__name__}.{name}"
    if not inspect.iscoroutinefunction(func):
        raise AppDefinitionError(
            f"{where} is a websocket endpoint and must be `async def` "
            "(it runs on the server's event loop)"
        )
    params = list(inspect.signature(func).parameters.values())[1:]
    if not any(_is_websocket_annotation(p.annotation) for p in params):
        raise AppDefinitionError(
            f"{where} is a websocket endpoint and must take a parameter annotated "
            "`websocket: fastapi.WebSocket`"
        )


def _is_websocket_annotation(annotation: Any) -> bool:
    # Compared by name so that defining an App never imports FastAPI, and so that
    # string annotations (``from __future__ import annotations``) work too.
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.rsplit(".", 1)[-1] == "WebSocket"


def assign_device(instance: App, device: str) -> None:
    """Place ``instance`` on ``device`` before its ``setup()`` runs (``self.device``)."""
    instance._falkit_device = device


def assigned_device(instance: App) -> str | None:
    """The device ``instance`` was placed on, ``None`` while ``self.device`` was never
    read or assigned (torch is not imported to find out)."""
    return instance.__dict__.get("_falkit_device")


class App:
    """A fal-style serverless app: subclass it, add ``setup()`` and routes.

    Class options of fal (``machine_type``, ``keep_alive``, ``max_concurrency``, ...) are
    accepted as class attributes and as class keywords::

        class MyApp(fal.App, keep_alive=300):
            machine_type = "GPU"

            def setup(self):
                self.model = load()

            @fal.endpoint("/")
            def generate(self, input: Input) -> Output: ...
    """

    requirements: ClassVar[list[str]] = []
    machine_type: ClassVar[str | list[str]] = "S"
    num_gpus: ClassVar[int | None] = None
    keep_alive: ClassVar[int] = 60
    min_concurrency: ClassVar[int | None] = None
    max_concurrency: ClassVar[int | None] = None
    concurrency_buffer: ClassVar[int | None] = None
    max_multiplexing: ClassVar[int | None] = None
    request_timeout: ClassVar[float | None] = None
    startup_timeout: ClassVar[float | None] = None
    app_auth: ClassVar[str] = "private"
    image: ClassVar[Any] = None
    local_python_modules: ClassVar[list[str]] = []
    app_name: ClassVar[str] = "app"
    host_kwargs: ClassVar[dict[str, Any]] = {}
    __falkit_routes__: ClassVar[tuple[RouteSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        name = kwargs.pop("name", None)
        for key in list(kwargs):
            if key in FAL_OPTIONS or key == "app_name":
                setattr(cls, key, kwargs.pop(key))
        # Unknown keywords are fal's host options (regions, scheduler, ...): kept, not used.
        cls.host_kwargs = {**getattr(cls, "host_kwargs", {}), **kwargs}
        if "app_name" not in cls.__dict__:
            # Each subclass gets its own name (fal would inherit the parent's): the server
            # registry is keyed by it, and a subclass must not replace its parent's server.
            cls.app_name = name or to_app_name(cls.__name__)
        if cls.__init__ is not App.__init__:
            raise AppDefinitionError(
                f"{cls.__name__} overrides __init__; put initialisation in setup() instead"
            )
        cls.__falkit_routes__ = _route_specs(cls)
        for hook in class_defined_hooks:
            hook(cls)

    def __init__(self) -> None:
        self._falkit_device: str | None = None

    @classmethod
    def routes(cls) -> tuple[RouteSpec, ...]:
        """The routes this class serves, sorted by path."""
        return cls.__falkit_routes__

    @classmethod
    def options(cls) -> dict[str, Any]:
        """fal's class options as this class sets them (defaults included)."""
        return {key: getattr(cls, key) for key in FAL_OPTIONS} | {"app_name": cls.app_name}

    @property
    def device(self) -> str:
        """Where models should live: ``cuda`` when torch sees a GPU, then ``mps``, else
        ``cpu``. Torch is imported only when this is read."""
        if getattr(self, "_falkit_device", None) is None:
            self._falkit_device = pick_device(type(self))
        return self._falkit_device  # type: ignore[return-value]

    @property
    def current_request(self) -> RequestContext:
        """The HTTP request being answered (fal's ``RequestContext``: ``request_id``,
        ``endpoint``, ``lifecycle_preference``, ``headers``); an empty one outside a
        request (``setup()``, WebSocket and realtime sessions), as on fal."""
        make = request_context.get()
        return NO_REQUEST if make is None else make()

    def setup(self) -> Any:
        """Runs once per server before the first request; load weights here."""

    def teardown(self) -> Any:
        """Runs once when the server stops."""

    def health(self) -> Any:
        """The body of ``GET /health``."""
        return {}
