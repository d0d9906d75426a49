"""fal's ``torch.compile`` cache helpers (``fal.toolkit.compilation``), on this machine.

On fal, Inductor's compiled kernels are zipped to the shared ``/data`` volume, per GPU
type, so the next worker loads them instead of compiling again. Here the shared place is
falkit's cache directory (``inductor-caches/<GPU>/<key>.zip``), so a kernel restart or
another process skips the compile the same way; the working copy Inductor writes to is
``inductor-cache/`` beside it (``TORCHINDUCTOR_CACHE_DIR`` points there, as on fal).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cache import cache_dir

__all__ = [
    "get_gpu_type",
    "load_inductor_cache",
    "sync_inductor_cache",
    "synchronized_inductor_cache",
]


def get_gpu_type() -> str:
    """The GPU's model as ``nvidia-smi`` names it, without ``NVIDIA`` (``"H100"``), or
    ``"UNKNOWN"`` when there is none to ask."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    found = re.search(r"NVIDIA ([a-zA-Z0-9]*)", listed)
    return found.group(1) if found and found.group(1) else "UNKNOWN"


def local_inductor_cache_dir() -> Path:
    """Where Inductor writes while the App runs (fal's ``/tmp/inductor-cache``)."""
    return cache_dir() / "inductor-cache"


def global_inductor_caches_dir() -> Path:
    """Where the zipped caches are kept (fal's ``/data/inductor-caches``)."""
    return cache_dir() / "inductor-caches"


def load_inductor_cache(cache_key: str) -> str:
    """Point ``TORCHINDUCTOR_CACHE_DIR`` at the working copy and unpack the cache saved as
    ``cache_key`` for this GPU type into it; answer a hash of what is there to hand to
    ``sync_inductor_cache``, or ``""`` when no cache was found."""
    local = local_inductor_cache_dir()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(local)
    archive = global_inductor_caches_dir() / get_gpu_type() / f"{cache_key}.zip"
    if not archive.is_file():
        print(f"Couldn't find compilation cache at {archive}")
        return ""
    print(f"Found compilation cache at {archive}, unpacking...")
    try:
        shutil.unpack_archive(archive, local)
    except (OSError, ValueError) as exc:
        print(f"Failed to unpack cache: {exc}")
        return ""
    return _dir_hash(local)


def sync_inductor_cache(cache_key: str, unpacked_dir_hash: str) -> None:
    """Save the working copy as ``cache_key`` for this GPU type, if it changed since
    ``load_inductor_cache`` answered ``unpacked_dir_hash``."""
    local = local_inductor_cache_dir()
    if not local.exists():
        print(f"No cache to sync, {local} doesn't exist.")
        return
    if _dir_hash(local) == unpacked_dir_hash:
        print("No changes in the cache dir, skipping sync.")
        return
    archive = global_inductor_caches_dir() / get_gpu_type() / f"{cache_key}.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    print("Changes detected in the cache dir, syncing...")
    with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
        made = shutil.make_archive(str(Path(scratch) / "inductor_cache"), "zip", local)
        os.replace(made, archive)  # whole or not at all, for a worker loading it now


@contextmanager
def synchronized_inductor_cache(cache_key: str) -> Iterator[None]:
    """Load the cache on entry and save it on exit (an exception included)."""
    unpacked = load_inductor_cache(cache_key)
    try:
        yield
    finally:
        sync_inductor_cache(cache_key, unpacked)


def _dir_hash(path: Path) -> str:
    names = sorted(str(p) for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(names).encode()).hexdigest()
