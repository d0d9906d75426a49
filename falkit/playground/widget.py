"""``Playground``: the status bar, the routes, the selected route's console and the logs,
kept live by one background poller that stops when the widget closes or the server
stops."""

from __future__ import annotations

import html
import weakref
from typing import Any

import ipywidgets as W

from ..serving import on_serve
from .context import Context
from .http_console import HttpConsole
from .logs_panel import LogsPanel
from .realtime_console import RealtimeConsole
from .routes_view import RoutesView
from .status_bar import StatusBar
from .tasks import Task
from .ws_console import WebSocketConsole

POLL_SECONDS = 0.25
_CONSOLES: dict[str, Any] = {
    "http": HttpConsole,
    "websocket": WebSocketConsole,
    "realtime": RealtimeConsole,
}
_open: weakref.WeakValueDictionary[str, Playground] = weakref.WeakValueDictionary()


class Playground(W.VBox):
    """The playground widget for one running server. ``open_route(path)`` selects a route (as
    clicking it does); ``console`` is the selected route's console; ``close()`` stops
    every background thread it started."""

    def __init__(self, server: Any) -> None:
        self.ctx = Context.of(server)
        self.status = StatusBar(server)
        self.routes = RoutesView(self._select)
        self.logs = LogsPanel(server)
        self.console: Any = None
        self.consoles: dict[str, Any] = {}
        self.notice = W.HTML()
        self.console_box = W.VBox(layout=W.Layout(border="1px solid #ddd", padding="4px"))
        logs = W.Accordion(children=[self.logs.widget], titles=("Logs",), selected_index=0)
        super().__init__(
            [self.status.widget, self.notice, self.routes.widget, self.console_box, logs],
            layout=W.Layout(border="1px solid #ccc", padding="6px"),
        )
        self.add_class("falkit-playground")
        self._route_specs = server.routes
        self._show_routes()
        if server.routes:
            self._select(server.routes[0])
        self._closed = False
        self.poller: Task | None = Task("poll", self._poll)

    @property
    def server(self) -> Any:
        return self.ctx.server

    def _show_routes(self) -> None:
        self.routes.show(self._route_specs, self.ctx.schemas)
        error = self.ctx.openapi_error
        self.notice.value = (
            f"<span style='color:#9a6700'>{html.escape(error)}</span>" if error else ""
        )

    def open_route(self, path: str) -> Any:
        """Open the console of the route at ``path`` and return it."""
        self.routes.buttons[path].click()
        return self.console

    def _select(self, spec: Any) -> None:
        console = self.consoles.get(spec.path)
        if console is None:
            console = _CONSOLES[spec.kind](self.ctx, spec)
            self.consoles[spec.path] = console
        self.console = console
        self.console_box.children = [console.widget]

    def follow(self, server: Any) -> None:
        """Show ``server`` from now on: the same app served again as a new server (after
        a stop, or on another port). Called by ``serve``; the reconnect (a fetch of its
        ``/openapi.json``) happens on the poller's thread, not in the serving cell."""
        if self._closed or server is self.server:
            return
        if self.poller is not None:
            self.poller.stop()
        self.poller = Task("poll", lambda task: self._reattach_and_poll(task, server))

    def _reattach_and_poll(self, task: Task, server: Any) -> None:
        old, self.ctx = self.ctx, Context(server, server.client)
        self.status.server = self.logs.server = server
        self.logs.refresh(force=True)
        self._refresh_routes()  # reads the new server's /openapi.json, renews the consoles
        old.close()
        self._poll(task)

    def _poll(self, task: Task) -> None:
        while not task.stopping.wait(POLL_SECONDS):
            self.status.refresh()
            self.logs.refresh()
            if not self.server.running:
                self._on_stopped()
                return
            if self.server.routes != self._route_specs:
                self._refresh_routes()

    def _refresh_routes(self) -> None:
        """After a hot swap: re-read the schemas and redraw the routes in place."""
        self._route_specs = self.server.routes
        self.ctx.reload_openapi()
        streams = self._running_streams()
        for console in self.consoles.values():
            console.close()
        self.consoles = {}
        self._show_routes()
        selected = self.console.spec.path if self.console is not None else None
        by_path = {s.path: s for s in self._route_specs}
        if selected in by_path or self._route_specs:
            self._select(by_path.get(selected) or self._route_specs[0])
        else:
            self.console, self.console_box.children = None, []
        self._hand_over(streams)

    def _running_streams(self) -> dict[str, Any]:
        """The consoles' running live streams, unmounted to outlive their consoles: across
        a hot swap a stream keeps running, its session reopened on the new handlers. Not
        after a re-serve (a new context): that ends the stream."""
        return {
            path: c.release_live()
            for path, c in self.consoles.items()
            if isinstance(c, RealtimeConsole)
            and c.live is not None
            and c.live.streaming
            and c.live.ctx is self.ctx
        }

    def _hand_over(self, streams: dict[str, Any]) -> None:
        """The renewed console of a stream's route takes it over; the others end."""
        console = self.console
        live = streams.pop(console.spec.path, None) if console is not None else None
        if live is not None and isinstance(console, RealtimeConsole) and console.live:
            console.adopt_live(live)
        elif live is not None:
            live.close()
        for orphan in streams.values():
            orphan.close()

    def _on_stopped(self) -> None:
        for console in self.consoles.values():
            console.close()
        self.notice.value = (
            "<b style='color:#cf222e'>server stopped</b>: serve the app again and this "
            "playground follows it"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        # Without a widget front end (nbval, a static render) this line stands in for the
        # widget, instead of ipywidgets' repr of every child.
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None:
            routes = ", ".join(f"{s.kind} {s.path}" for s in self._route_specs)
            bundle["text/plain"] = f"falkit playground: {self.server.app_name} ({routes})"
        return bundle

    def close(self) -> None:
        """Stop the poller and every console's background work, then close the widgets."""
        self._closed = True
        poller = getattr(self, "poller", None)  # close() also runs from __del__
        if poller is not None:
            poller.stop()
            self.poller = None
        for console in getattr(self, "consoles", {}).values():
            console.close()
        if hasattr(self, "ctx"):
            self.ctx.close()
        super().close()


def playground(server: Any) -> Playground:
    """The playground widget for a running server; display it (or let the cell show it).
    Opening a new playground for an app closes the previous one, so only one poller per
    app runs.

    Example::

        server = falkit.serve(MyApp)
        falkit.playground(server)
    """
    old = _open.get(server.app_name)
    if old is not None:
        old.close()
    widget = Playground(server)
    _open[server.app_name] = widget
    return widget


def _follow(server: Any) -> None:
    widget = _open.get(server.app_name)
    if widget is not None:
        widget.follow(server)


on_serve(_follow)
