"""Bridges to the real fal packages, each imported only when the user's code has them:
``fal_sdk`` serves classes written with ``import fal`` (``app_class`` adapts them), and
``fal_client`` points the real ``fal_client`` at a local server (``use_fal_client``)."""

from __future__ import annotations

from .fal_client import use_fal_client
from .fal_sdk import adapt, app_class, is_fal_app

__all__ = ["adapt", "app_class", "is_fal_app", "use_fal_client"]
