"""Serve classes written against the real ``fal`` SDK (``import fal``; ``class A(fal.App)``).

fal's decorators tag a function with a ``route_signature`` (a ``fal.api.RouteSignature``
named tuple); ``@fal.realtime`` also wraps the function in a websocket template and keeps
the user's function as ``original_func``. ``adapt`` reads those tags and builds an
equivalent falkit ``App`` subclass from the user's own class bodies, so the same methods run
under falkit's server, playground and clients, unchanged:

================================  ==============================================
fal                               falkit
================================  ==============================================
``endpoint(path)``                ``endpoint(path)`` (POST, pydantic body)
``endpoint(path, is_websocket)``  ``endpoint(path, is_websocket=True)``
``realtime(path, ...)``           ``realtime(path, ...)``: buffering,
                                  session_timeout, max_batch_size, modals,
                                  content_type, encode/decode_message
``setup`` / ``teardown``          the same methods (sync or async)
``app_name`` / ``name=``          ``app_name``
class options, ``host_kwargs``    falkit's class options (``keep_alive``, ...)
================================  ==============================================

fal's SDK is imported only when a class from it is offered: ``sys.modules`` says whether
it was imported by the user's code.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..app import FAL_OPTIONS, App
from ..exceptions import AppDefinitionError
from ..routes import endpoint, realtime

_ROUTE_SIGNATURE = "route_signature"
# Machinery fal's base class adds; never copied onto the falkit class.
_SKIP = {"__dict__", "__weakref__", "__module__", "__qualname__", "__init__", "__doc__"}


def fal_app_base() -> type | None:
    """``fal.App`` when the real SDK has been imported, else None."""
    fal = sys.modules.get("fal")
    base = getattr(fal, "App", None)
    if base is None or base is App or not isinstance(base, type):
        return None
    return base


def is_fal_app(obj: Any) -> bool:
    """True for a subclass of the real SDK's ``fal.App`` (not ``falkit.App``)."""
    base = fal_app_base()
    return base is not None and isinstance(obj, type) and issubclass(obj, base) and obj is not base


def _copy_function(func: types.FunctionType) -> types.FunctionType:
    # A fresh function object sharing the code: the user's function keeps its fal tag
    # and can be adapted again (re-serving), and code comparison still sees setup() as
    # unchanged, which keeps hot swaps working.
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__annotations__ = dict(func.__annotations__)
    copy.__qualname__ = func.__qualname__
    copy.__doc__ = func.__doc__
    copy.__module__ = func.__module__
    return copy


def _realtime_options(sig: Any) -> dict[str, Any]:
    return {
        "buffering": sig.buffering,
        "session_timeout": sig.session_timeout,
        "max_batch_size": sig.max_batch_size,
        "input_modal": sig.input_modal,
        "output_modal": sig.output_modal,
        "content_type": sig.content_type or "application/msgpack",
        "encode_message": sig.encode_message,
        "decode_message": sig.decode_message,
    }


def _retag(value: Any) -> Any:
    sig = getattr(value, _ROUTE_SIGNATURE, None)
    if sig is None or not isinstance(value, types.FunctionType):
        return value
    if sig.realtime_mode is not None:
        original = getattr(value, "original_func", value)
        return realtime(sig.path, **_realtime_options(sig))(_copy_function(original))
    return endpoint(sig.path, is_websocket=sig.is_websocket)(_copy_function(value))


def _user_namespace(fal_cls: type, base: type) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    # Oldest user class first so subclasses override, as attribute lookup would.
    for klass in reversed(fal_cls.__mro__[: fal_cls.__mro__.index(base)]):
        for key, value in vars(klass).items():
            if key not in _SKIP:
                namespace[key] = _retag(value)
    return namespace


def _options(fal_cls: type) -> dict[str, Any]:
    host = dict(getattr(fal_cls, "host_kwargs", {}) or {})
    options = {
        key: host.get(key, getattr(fal_cls, key, None))
        for key in FAL_OPTIONS
        if host.get(key, getattr(fal_cls, key, None)) is not None
    }
    options["app_name"] = getattr(fal_cls, "app_name")  # noqa: B009 (fal's, not typed here)
    return options


def adapt(fal_cls: type) -> type[App]:
    """A falkit ``App`` subclass serving ``fal_cls`` (a real ``fal.App`` subclass) with the
    same methods, routes, options and app name."""
    base = fal_app_base()
    if base is None or not is_fal_app(fal_cls):
        raise AppDefinitionError(f"{fal_cls!r} is not a fal.App subclass")
    namespace = _user_namespace(fal_cls, base)
    # fal's own GET /health body ({"version": ...}) unless the class defines health().
    namespace.setdefault("health", vars(base).get("health", App.health))
    namespace.setdefault("version", getattr(fal_cls, "version", "unknown"))
    namespace.update(_options(fal_cls))
    namespace["__module__"] = fal_cls.__module__
    namespace["__qualname__"] = fal_cls.__qualname__
    namespace["__doc__"] = fal_cls.__doc__
    namespace["__falkit_fal_class__"] = fal_cls
    return types.new_class(fal_cls.__name__, (App,), {}, lambda ns: ns.update(namespace))


def app_class(obj: Any) -> type[App]:
    """The falkit App class serving ``obj``: ``obj`` itself when it is one, an adapted class
    when it was written with the real ``fal`` SDK; anything else is ``AppDefinitionError``."""
    if isinstance(obj, type) and issubclass(obj, App):
        return obj
    if is_fal_app(obj):
        return adapt(obj)
    raise AppDefinitionError(
        f"{obj!r} is not a falkit App class; define `class MyApp(fal.App): ...`"
    )
