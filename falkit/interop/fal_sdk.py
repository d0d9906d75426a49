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
``endpoint(path, health_check)``  ``endpoint(path, health_check=...)``
``setup`` / ``teardown``          the same methods (sync or async)
``health``, ``version``           the same (``{"version": ...}`` by default)
``provide_hints``, ``handle_exit``  the same hooks
``_add_extra_routes`` /           the same hooks, given falkit's FastAPI app
``_add_extra_middlewares``
``super()`` in a method           the next class up, as written
``fal.exceptions`` raised         answered as fal's server does (``falkit.asgi``)
``fal.ref.get_current_app()``     falkit's (``CurrentAppRef``)
``app_name`` / ``name=``          ``app_name``
class options, ``host_kwargs``    falkit's class options (``keep_alive``, ...)
================================  ==============================================

Each user class between the class and ``fal.App`` becomes one falkit class, in the same
order, so ``super()`` calls keep their meaning: a method's ``super()`` is bound to its
class through a cell, and the copy gets a cell of its falkit class. ``super()`` past the
user's classes reaches ``falkit.App``, whose hooks do what fal's do.

fal's SDK is imported only when a class from it is offered: ``sys.modules`` says whether
it was imported by the user's code.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..app import FAL_OPTIONS, App, instance_created_hooks
from ..exceptions import AppDefinitionError
from ..ref import get_current_app
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


def _copy_function(func: Any, cell: types.CellType) -> types.FunctionType:
    # A fresh function object sharing the code: the user's function keeps its fal tag
    # and can be adapted again (re-serving), and code comparison still sees setup() as
    # unchanged, which keeps hot swaps working. Its ``__class__`` cell (``super()``) is
    # the falkit class's.
    closure = func.__closure__
    if closure is not None and "__class__" in func.__code__.co_freevars:
        at = func.__code__.co_freevars.index("__class__")
        closure = (*closure[:at], cell, *closure[at + 1 :])
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, closure
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


def _uses_class_cell(func: Any) -> bool:
    return isinstance(func, types.FunctionType) and "__class__" in func.__code__.co_freevars


def _retag(value: Any, cell: types.CellType) -> Any:
    sig = getattr(value, _ROUTE_SIGNATURE, None)
    if sig is not None and isinstance(value, types.FunctionType):
        if sig.realtime_mode is not None:
            original = getattr(value, "original_func", value)
            return realtime(sig.path, **_realtime_options(sig))(_copy_function(original, cell))
        route = endpoint(sig.path, is_websocket=sig.is_websocket, health_check=sig.health_check)
        return route(_copy_function(value, cell))
    return _rebound(value, cell)


def _rebound(value: Any, cell: types.CellType) -> Any:
    # Plain methods, class/static methods and properties that call ``super()``.
    if isinstance(value, (classmethod, staticmethod)) and _uses_class_cell(value.__func__):
        return type(value)(_copy_function(value.__func__, cell))
    if isinstance(value, property):
        fget, fset, fdel = (_own(f, cell) for f in (value.fget, value.fset, value.fdel))
        return property(fget, fset, fdel, value.__doc__)
    return _own(value, cell)


def _own(value: Any, cell: types.CellType) -> Any:
    return _copy_function(value, cell) if _uses_class_cell(value) else value


def _level(klass: type, parent: type[App], extra: dict[str, Any]) -> type[App]:
    # One falkit class standing for the user's ``klass``, subclassing ``parent``.
    cell = types.CellType()
    namespace = {k: _retag(v, cell) for k, v in vars(klass).items() if k not in _SKIP}
    namespace.update(
        __module__=klass.__module__, __qualname__=klass.__qualname__, __doc__=klass.__doc__
    )
    namespace.update(extra)
    made = types.new_class(klass.__name__, (parent,), {}, lambda ns: ns.update(namespace))
    cell.cell_contents = made
    return made


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
    same methods, hooks, routes, options and app name."""
    base = fal_app_base()
    if base is None or not is_fal_app(fal_cls):
        raise AppDefinitionError(f"{fal_cls!r} is not a fal.App subclass")
    _check_with_fal(fal_cls)
    made: type[App] = App
    # Oldest user class first, each the parent of the next, as the MRO orders them.
    for klass in reversed(fal_cls.__mro__[: fal_cls.__mro__.index(base)]):
        extra: dict[str, Any] = {}
        if klass is fal_cls:
            extra = {
                **_options(fal_cls),
                "host_kwargs": dict(getattr(fal_cls, "host_kwargs", {}) or {}),
                "__falkit_fal_class__": fal_cls,
            }
        made = _level(klass, made, extra)
    return made


def _check_with_fal(fal_cls: type) -> None:
    # fal checks WebSocket routes when it builds its server, with its own messages (and
    # logs them); a class written for fal gets fal's verdict first, as AppDefinitionError.
    try:
        instance: Any = fal_cls(_allow_init=True)
    except TypeError:  # an SDK without that keyword: falkit's own checks decide
        return
    validate = getattr(instance, "_validate_websocket_endpoint", None)
    routes = getattr(instance, "collect_routes", None)
    if validate is None or routes is None:
        return
    for sig, handler in routes().items():
        if sig.is_websocket:
            try:
                validate(sig, handler)
            except ValueError as exc:
                raise AppDefinitionError(str(exc)) from exc


class CurrentAppRef:
    """What the real SDK's ``fal.ref.current_app`` holds while falkit serves: it stands for
    ``falkit.ref.get_current_app()`` (the instance answering the request in flight, else
    the one made last), so fal's own code (``fal.toolkit``, fal_client's headers, a user's
    helper) that asks ``fal.ref.get_current_app()`` finds the right App, and holds none
    alive. False, with ``current_request`` None, while there is none."""

    def __getattr__(self, name: str) -> Any:
        app = get_current_app()
        if app is None:
            if name == "current_request":
                return None
            raise AttributeError(f"no falkit App is being served (asked for {name!r})")
        return getattr(app, name)

    def __bool__(self) -> bool:
        return get_current_app() is not None

    def __repr__(self) -> str:
        return f"<falkit current app: {get_current_app()!r}>"


CURRENT_APP = CurrentAppRef()


def _point_fal_ref(_instance: App) -> None:
    # fal sets ``fal.ref.current_app`` once per process, when it serves an App itself; an
    # App it serves keeps its own.
    ref = sys.modules.get("fal.ref")
    if ref is not None and getattr(ref, "current_app", None) is None:
        setattr(ref, "current_app", CURRENT_APP)  # noqa: B010 (fal's module, untyped here)


instance_created_hooks.append(_point_fal_ref)


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
