"""A Jupyter Server extension for tests/test_jupyter_extension.py only: reports, for every
kernel WebSocket open on the server, whether its socket has ``TCP_NODELAY`` set, read off
the real socket with ``getsockopt``."""

from __future__ import annotations

import json
import socket

from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web


class NoDelayProbe(APIHandler):
    @web.authenticated
    def get(self) -> None:
        found = []
        for handler in ZMQChannelsWebsocketConnection._open_sessions.values():
            sock = handler.ws_connection.stream.socket
            found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0)
        self.finish(json.dumps({"nodelay": found}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "_jupyter_probe"}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.web_app.add_handlers(".*$", [("/falkit-probe/nodelay", NoDelayProbe)])
