"""``fal.ref``: the App instance serving the code that asks, for helpers that have no
``self`` (``get_current_app().current_request.headers``), as fal's SDK offers it.

fal runs one App per process and sets it once, before ``setup()``. A kernel serves several
and swaps instances, so here the answer depends on where it is asked: inside an HTTP
request or a WebSocket/realtime session, the instance answering it (``falkit.asgi`` sets it
around each); elsewhere (``setup()``, a thread the App started, a cell), the App instance
made last that is still alive; ``None`` before any.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["get_current_app"]

_answering: ContextVar[Any] = ContextVar("falkit_current_app", default=None)
# Weak references, newest last: an instance no one holds any more is no one's current app.
_made: list[weakref.ref[Any]] = []


def get_current_app() -> Any:
    """The App instance answering the current request or session; outside one, the App
    instance made last that is still alive; ``None`` when there is none.

    Example::

        from falkit.ref import get_current_app   # or fal.ref with ``import falkit as fal``

        def request_id() -> str | None:
            return get_current_app().current_request.request_id
    """
    app = _answering.get()
    if app is not None:
        return app
    for ref in reversed(_made):
        made = ref()
        if made is not None:
            return made
    return None


def note_app(instance: Any) -> None:
    """Record a new App instance (``App.__init__`` calls this)."""
    _made[:] = [ref for ref in _made if ref() is not None]
    _made.append(weakref.ref(instance))


def enter_app(instance: Any) -> Token[Any]:
    """Make ``instance`` the current app of this request or session (and of the worker
    threads it starts, which copy the context); undo with ``leave_app(token)``."""
    return _answering.set(instance)


def leave_app(token: Token[Any]) -> None:
    """Undo ``enter_app``."""
    _answering.reset(token)
