"""``falkit.compat.use_fal_client``: the real ``fal_client`` against a local server (the
documented import path; the bridge is ``falkit.interop.fal_client``)."""

from __future__ import annotations

from .interop import use_fal_client

__all__ = ["use_fal_client"]
