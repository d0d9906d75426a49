"""Scale out on Ray Serve: the same App class as a Ray Serve application.

``deploy(MyApp)`` (or ``falkit deploy-ray app.py::MyApp``) runs ``build_asgi(instance)``
behind Ray Serve's FastAPI ingress, one App instance per replica: ``setup()`` runs once
per replica (the ASGI lifespan, which Ray drives), ``teardown()`` when a replica stops.
HTTP, WebSocket and realtime routes go through Ray's proxy unchanged, fal's URL layout
included. Needs ``pip install 'falkit[ray]'``.

How fal's class options become Ray Serve settings:

=====================  =====================================  ============================
fal option             Ray Serve setting                      note
=====================  =====================================  ============================
``min_concurrency``    ``autoscaling_config.min_replicas``    unset: 1 (fal's 0 means
                       and ``initial_replicas``               scale to zero; on Ray that
                                                              is a cold start, so ask)
``max_concurrency``    ``autoscaling_config.max_replicas``    unset: ``min_replicas``
``keep_alive``         ``autoscaling_config.downscale_        seconds an idle replica
                       delay_s``                              stays up
``max_multiplexing``   ``max_ongoing_requests``               requests one replica takes
                                                              at once (unset: Ray's)
``num_gpus``           ``ray_actor_options.num_gpus``         unset: 1 for a ``GPU*``
                                                              ``machine_type``, else 0
``machine_type``       ``ray_actor_options.num_cpus``         XS 0.5, S 1, M 2, L 4, XL 8;
                                                              GPU machines 1
``app_name``           the Ray Serve application name
=====================  =====================================  ============================

``num_replicas=N`` fixes the replica count instead of autoscaling; ``ray_actor_options``
and ``autoscaling_config`` given to ``deploy`` override the derived values key by key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .app import App
from .devices import gpus_wanted
from .exceptions import AppDefinitionError, MissingDependency, ServerError

#: CPUs per replica for fal's CPU machine types (fal's own sizes, rounded).
CPUS_BY_MACHINE = {"XS": 0.5, "S": 1.0, "M": 2.0, "L": 4.0, "XL": 8.0}


def _ray_serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise MissingDependency(
            "Ray Serve is not installed; install it with `pip install 'falkit[ray]'`"
        ) from None
    return serve


def scaling_for(app_cls: type[App]) -> dict[str, Any]:
    """Ray Serve's ``autoscaling_config`` for ``app_cls``'s fal options (table above)."""
    low = app_cls.min_concurrency if app_cls.min_concurrency is not None else 1
    high = app_cls.max_concurrency if app_cls.max_concurrency is not None else max(low, 1)
    if high < max(low, 1):
        raise AppDefinitionError(
            f"{app_cls.__name__}: max_concurrency={high} < min_concurrency={low}"
        )
    return {
        "min_replicas": low,
        "initial_replicas": max(low, 1),
        "max_replicas": high,
        "downscale_delay_s": float(app_cls.keep_alive),
    }


def resources_for(app_cls: type[App]) -> dict[str, Any]:
    """Ray's ``ray_actor_options`` (CPUs and GPUs per replica) for ``app_cls`` (table above)."""
    gpus = gpus_wanted(app_cls)
    machine = app_cls.machine_type if isinstance(app_cls.machine_type, str) else "S"
    cpus = 1.0 if gpus else CPUS_BY_MACHINE.get(machine.upper(), 1.0)
    return {"num_cpus": cpus, "num_gpus": gpus}


class _Replica:
    """One Ray Serve replica: an App instance and the ASGI app serving it."""

    def __init__(self, app_cls: type) -> None:
        from .interop import app_class

        self._instance = app_class(app_cls)()

    def __serve_build_asgi_app__(self) -> Any:
        # Called by Ray once the replica exists; Ray then runs the ASGI lifespan, which
        # is where setup() runs (once per replica) and, on shutdown, teardown().
        from .asgi import build_asgi

        return build_asgi(self._instance, lifespan=True)


def _pickle_by_value_when_needed(app_cls: type) -> None:
    # Workers import an App's module by name; a module they cannot import (a notebook's
    # __main__, a file loaded by `falkit` with `import fal` standing for falkit) travels
    # by value instead.
    module = sys.modules.get(app_cls.__module__)
    if module is None or module.__name__ == "__main__":
        return
    if getattr(module, "__falkit_by_value__", False):
        from ray import cloudpickle  # Ray's own copy: it pickles deployments' arguments

        cloudpickle.register_pickle_by_value(module)


def application(
    app_cls: type,
    *,
    num_replicas: int | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    autoscaling_config: dict[str, Any] | None = None,
) -> Any:
    """The Ray Serve ``Application`` serving ``app_cls``; pass it to ``serve.run`` or
    compose it yourself. ``deploy`` is the one-call version."""
    from .interop import app_class

    serve = _ray_serve()
    adapted = app_class(app_cls)
    options: dict[str, Any] = {
        "name": adapted.__name__,
        "ray_actor_options": {**resources_for(adapted), **(ray_actor_options or {})},
    }
    if num_replicas is not None:
        options["num_replicas"] = num_replicas
    else:
        scaling = scaling_for(adapted)
        options["autoscaling_config"] = {**scaling, **(autoscaling_config or {})}
    if adapted.max_multiplexing is not None:
        options["max_ongoing_requests"] = adapted.max_multiplexing
    _pickle_by_value_when_needed(app_cls)
    deployment = serve.deployment(**options)(serve.ingress()(_Replica))
    return deployment.bind(app_cls)


@dataclass
class RayDeployment:
    """A running Ray Serve application of an App: ``url``, ``client`` and ``shutdown()``."""

    app_cls: type[App]
    app_name: str
    url: str
    _owns_serve: bool = field(default=False, repr=False)

    @property
    def client(self) -> Any:
        """A ``falkit.Client`` for the Ray Serve proxy."""
        from .client import Client

        return Client(self.url)

    def shutdown(self) -> None:
        """Delete the application (replicas run ``teardown()``); Ray Serve itself stops too
        when ``deploy`` started it."""
        serve = _ray_serve()
        serve.delete(self.app_name)
        if self._owns_serve:
            serve.shutdown()


def deploy(
    app_cls: type,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    num_replicas: int | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    autoscaling_config: dict[str, Any] | None = None,
) -> RayDeployment:
    """Run ``app_cls`` as a Ray Serve application and return once its replicas are up.
    Joins Ray (``ray.init()``: the cluster ``RAY_ADDRESS`` names, else a local one) and
    starts Ray Serve's proxy on ``host:port`` unless Serve already runs there::

        deployment = falkit.ray.deploy(MyApp, num_replicas=2)
        deployment.client.call("/", {"prompt": "hi"})
        deployment.shutdown()
    """
    from .interop import app_class

    serve = _ray_serve()
    adapted = app_class(app_cls)
    owns = not _connect_and_check_serve()
    if owns:
        serve.start(http_options={"host": host, "port": port})
    app = application(
        app_cls,
        num_replicas=num_replicas,
        ray_actor_options=ray_actor_options,
        autoscaling_config=autoscaling_config,
    )
    try:
        serve.run(app, name=adapted.app_name, route_prefix=route_prefix)
    except Exception as exc:
        raise ServerError(f"Ray Serve could not start {adapted.__name__}: {exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    prefix = route_prefix.rstrip("/")
    return RayDeployment(adapted, adapted.app_name, f"http://{shown}:{port}{prefix}", owns)


def _connect_and_check_serve() -> bool:
    """Connect to Ray if needed; True when Ray Serve already runs there."""
    import ray

    if not ray.is_initialized():
        ray.init()  # joins the cluster RAY_ADDRESS names, else starts a local one
    # status() starts nothing: before Serve runs it reports no proxies.
    return bool(_ray_serve().status().proxies)
