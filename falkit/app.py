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
from .ref import note_app
from .routes import ROUTE_ATTR, RouteSpec, health_check_config

# fal's default ``app_files_ignore``: compiled files, caches, git, macOS folder files.
APP_FILES_IGNORE = [r"\.pyc$", r"__pycache__/", r"\.git/", r"\.DS_Store$"]

# fal's class options. Those with a local meaning are honoured by the server; the others
# are kept as metadata so the same class deploys unchanged.
FAL_OPTIONS: dict[str, Any] = {
    "requirements": [],
    "requirements_context_dir": None,
    "machine_type": "S",
    "num_gpus": None,
    "regions": None,
    "keep_alive": 60,
    "min_concurrency": None,
    "max_concurrency": None,
    "concurrency_buffer": None,
    "concurrency_buffer_perc": None,
    "scaling_delay": None,
    "max_multiplexing": None,
    "request_timeout": None,
    "request_start_timeout": None,
    "startup_timeout": None,
    "metrics_port": None,
    "app_auth": "private",
    "app_files": [],
    "app_files_ignore": APP_FILES_IGNORE,
    "app_files_context_dir": None,
    "kind": None,
    "image": None,
    "local_python_modules": [],
    "skip_retry_conditions": None,
    "retry_config": None,
    "termination_grace_period_seconds": None,
    "secrets": None,
    "data_mounts": None,
}

# What fal puts in ``host_kwargs`` before any class does (its platform's defaults).
HOST_DEFAULTS: dict[str, Any] = {
    "_scheduler": "nomad",
    "_scheduler_options": {"storage_region": "us-east"},
    "resolver": "uv",
    "keep_alive": 60,
}
# The class options fal copies into ``host_kwargs`` once a class sets them (not None; the
# two lists only when not empty). Requirements, machine type, GPUs, regions and auth are
# options of the deployment instead, and stay out.
HOST_OPTIONS = (
    "request_timeout",
    "request_start_timeout",
    "startup_timeout",
    "metrics_port",
    "app_files",
    "app_files_ignore",
    "app_files_context_dir",
    "requirements_context_dir",
    "min_concurrency",
    "max_concurrency",
    "concurrency_buffer",
    "concurrency_buffer_perc",
    "scaling_delay",
    "max_multiplexing",
    "kind",
    "image",
    "skip_retry_conditions",
    "retry_config",
    "termination_grace_period_seconds",
    "secrets",
    "data_mounts",
)


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
#: Called with each App instance as it is made (``falkit.interop`` points the real SDK's
#: ``fal.ref`` at it).
instance_created_hooks: list[Callable[[App], None]] = []

_PART = re.compile(r"[A-Z][a-z]*")


def to_app_name(class_name: str) -> str:
    """fal's default app name: ``MyGoodApp`` -> ``my-good-app`` (capitals start words, so
    ``SDXLModel`` -> ``s-d-x-l-model``), ``snake_case_app`` -> ``snake-case-app``, else the
    name in lower case."""
    name = "-".join(part.lower() for part in _PART.findall(class_name))
    if not name and "_" in class_name:
        name = "-".join(part.lower() for part in class_name.split("_") if part)
    if not (name or class_name):
        raise AppDefinitionError("Cannot derive app name from ''; give the App a name=")
    return name or class_name.lower()


def _host_kwargs(cls: type[App], keywords: dict[str, Any]) -> dict[str, Any]:
    # fal's ``host_kwargs``: the parent's, the class keywords, the parent's keys the class
    # sets as attributes (``keep_alive = 30``, ``_scheduler = ...``), the host options it
    # sets, and the health check its routes declare.
    parent = getattr(cls, "host_kwargs", {})
    host = {**parent, **keywords}
    for key in parent:
        if key not in keywords and getattr(cls, key, None) is not None:
            host[key] = getattr(cls, key)
    for key in HOST_OPTIONS:
        value = getattr(cls, key, None)
        if value is not None and (value or key not in ("app_files", "app_files_ignore")):
            host[key] = value
    if cls.image is not None:
        host["kind"] = "container"
        if cls.app_files:
            raise AppDefinitionError(f"{cls.__name__}: app_files is not supported with image")
    if cls.app_files_context_dir is not None and not cls.app_files:
        raise AppDefinitionError(
            f"{cls.__name__}: app_files_context_dir needs app_files; set both or neither"
        )
    host["health_check_config"] = health_check_config(cls.__falkit_routes__)
    return host


def health_endpoint(instance: App) -> Callable[[], Any]:
    """The handler of ``GET /health``: ``instance.health()``, sync or async."""
    if inspect.iscoroutinefunction(instance.health):

        async def health_async() -> Any:
            return await instance.health()

        return health_async

    def health() -> Any:
        return instance.health()

    return health


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

    requirements: ClassVar[list[str] | list[list[str]]] = []
    requirements_context_dir: ClassVar[str | None] = None
    machine_type: ClassVar[str | list[str]] = "S"
    num_gpus: ClassVar[int | None] = None
    regions: ClassVar[list[str] | None] = None
    keep_alive: ClassVar[int] = 60
    min_concurrency: ClassVar[int | None] = None
    max_concurrency: ClassVar[int | None] = None
    concurrency_buffer: ClassVar[int | None] = None
    concurrency_buffer_perc: ClassVar[int | None] = None
    scaling_delay: ClassVar[int | None] = None
    max_multiplexing: ClassVar[int | None] = None
    request_timeout: ClassVar[float | None] = None
    request_start_timeout: ClassVar[int | None] = None
    startup_timeout: ClassVar[float | None] = None
    metrics_port: ClassVar[int | None] = None
    app_auth: ClassVar[str] = "private"
    app_files: ClassVar[list[str]] = []
    app_files_ignore: ClassVar[list[str]] = APP_FILES_IGNORE
    app_files_context_dir: ClassVar[str | None] = None
    kind: ClassVar[str | None] = None
    image: ClassVar[Any] = None
    local_python_modules: ClassVar[list[str]] = []
    skip_retry_conditions: ClassVar[list[str] | None] = None
    retry_config: ClassVar[Any] = None
    termination_grace_period_seconds: ClassVar[int | None] = None
    secrets: ClassVar[list[str] | None] = None
    data_mounts: ClassVar[list[str] | None] = None
    app_name: ClassVar[str] = "app"
    version: ClassVar[str] = "unknown"
    host_kwargs: ClassVar[dict[str, Any]] = dict(HOST_DEFAULTS)
    __falkit_routes__: ClassVar[tuple[RouteSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        name = kwargs.pop("name", None)
        # Class keywords are options (set as attributes, so those with a local meaning are
        # honoured) and, as with fal, all of them land in ``host_kwargs`` too.
        for key, value in kwargs.items():
            if key in FAL_OPTIONS or key == "app_name":
                setattr(cls, key, value)
        kwargs.pop("app_name", None)
        cls.__falkit_routes__ = _route_specs(cls)
        cls.host_kwargs = _host_kwargs(cls, kwargs)
        if "app_name" not in cls.__dict__:
            # Each subclass gets its own name (fal would inherit the parent's): the server
            # registry is keyed by it, and a subclass must not replace its parent's server.
            cls.app_name = name or to_app_name(cls.__name__)
        if cls.__init__ is not App.__init__:
            raise AppDefinitionError(
                f"{cls.__name__} overrides __init__; put initialisation in setup() instead"
            )
        for hook in class_defined_hooks:
            hook(cls)

    def __init__(self) -> None:
        self._falkit_device: str | None = None
        note_app(self)
        for hook in instance_created_hooks:
            hook(self)

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

    def handle_exit(self) -> None:
        """fal calls this when the runner is told to stop (SIGTERM), before requests in
        flight finish and ``teardown()`` runs: set a flag that long loops check."""

    def health(self) -> Any:
        """The body of ``GET /health``: ``{"version": ...}`` (the class's ``version``), as
        fal's."""
        return {"version": self.version}

    def provide_hints(self) -> list[str]:
        """fal's routing hints: returned strings go out as the ``X-Fal-Runner-Hints``
        header of every HTTP answer (those not latin-1 are left out), so fal's platform
        sends a request that names one to this runner. Not overridden: no header."""
        raise NotImplementedError

    def _add_extra_routes(self, app: Any) -> None:
        """fal's hook: add routes to the FastAPI ``app`` beside the endpoints
        (``app.get("/ready")(...)``). This default adds ``GET /health``; an override
        keeps it with ``super()._add_extra_routes(app)``."""
        app.add_api_route("/health", health_endpoint(self), methods=["GET"], name="health")

    def _add_extra_middlewares(self, app: Any) -> None:
        """fal's hook: add middlewares and exception handlers to the FastAPI ``app``
        (``app.add_middleware(...)``, ``@app.middleware("http")``,
        ``@app.exception_handler(...)``). They run inside falkit's own layers, in the
        order added, so they see the route's own path; this default adds none (fal's
        runner headers are falkit's own layer)."""
