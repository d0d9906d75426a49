"""Clients for a falkit (or fal) server: ``Client`` (blocking) and ``AsyncClient``, and
their realtime sessions, over one I/O-free core (``core``). Tests, widgets and users all
go through these.

Public here besides the clients: the answer helpers the playground, ``falkit.bench`` and
the fal_client bridge share (``SSEParser``, ``raise_for_status``, ``json_payload``,
``ws_url``).
"""

from __future__ import annotations

from .core import SSEParser, json_payload, raise_for_status, transport_errors, ws_url
from .http import AsyncClient, Client
from .realtime import AsyncRealtimeSession, RealtimeSession

__all__ = [
    "AsyncClient",
    "AsyncRealtimeSession",
    "Client",
    "RealtimeSession",
    "SSEParser",
    "json_payload",
    "raise_for_status",
    "transport_errors",
    "ws_url",
]
