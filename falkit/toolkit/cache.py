"""Where the toolkit keeps what persists between runs: downloads, model weights, cloned
repositories, the ``KVStore`` database and Inductor caches.

fal keeps them on a volume mounted at ``/data``; a notebook has the user's cache
directory instead (``~/.cache/falkit`` on Linux, ``~/Library/Caches/falkit`` on macOS,
``%LOCALAPPDATA%\\falkit\\Cache`` on Windows), or ``$FALKIT_CACHE_DIR`` when set. The
environment is read on every call, so a test or a cell can point it elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The environment variable that overrides the cache directory.
CACHE_DIR_ENV = "FALKIT_CACHE_DIR"


def cache_dir() -> Path:
    """The root of falkit's cache (not created here)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "falkit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "falkit"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "falkit"


def persistent_dir() -> Path:
    """fal's ``/data``: relative ``download_file`` targets land under it."""
    return cache_dir()


def model_weights_dir() -> Path:
    """fal's ``/data/.fal/model_weights``."""
    return persistent_dir() / ".fal" / "model_weights"


def repository_dir() -> Path:
    """fal's ``/data/.fal/repos``."""
    return persistent_dir() / ".fal" / "repos"
