"""falkit's Jupyter Server extension: kernel WebSockets that write without Nagle's delay.

Jupyter Server sends kernel messages to the browser over a tornado WebSocket and never
calls ``set_nodelay``, so Nagle's algorithm is on. A widget's round trip is several small
messages in a row (ipykernel's ``busy`` and ``idle`` statuses around the reply): the first
leaves at once, each later one waits for the browser's delayed ACK, about 40 ms. The live
source's frames (``falkit.playground``) paid that on every round trip (p50 57 ms for a
2 ms route). Every interactive WebSocket server turns it off; tornado leaves it to the
handler.

The extension wraps whichever kernel WebSocket connection class the server is configured
with (``ServerApp.kernel_websocket_connection_class``: the ZMQ one by default, a gateway's
or another extension's otherwise) in a subclass that sets ``TCP_NODELAY`` when a browser
connects; nothing else changes. falkit enables it on install
(``etc/jupyter/jupyter_server_config.d/falkit.json``, as jupyter-server-proxy does);
``jupyter server extension disable falkit.jupyter`` turns it off.
"""

from __future__ import annotations

from typing import Any


class NoDelay:
    """Mixed in before a kernel WebSocket connection class: ``TCP_NODELAY`` on connect."""

    websocket_handler: Any

    def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return super().connect()  # type: ignore[misc]


def with_nodelay(base: type) -> type:
    """``base`` with ``NoDelay`` mixed in (``base`` itself when it has it already)."""
    if issubclass(base, NoDelay):
        return base
    return type(f"NoDelay{base.__name__}", (NoDelay, base), {"__module__": __name__})


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "falkit.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    settings = serverapp.web_app.settings
    base = settings.get("kernel_websocket_connection_class")
    if base is None:  # a Jupyter Server without pluggable kernel connections (< 2.4)
        serverapp.log.warning("falkit: this Jupyter Server cannot set TCP_NODELAY")
        return
    settings["kernel_websocket_connection_class"] = with_nodelay(base)
    serverapp.log.info("falkit: kernel WebSockets write with TCP_NODELAY")
