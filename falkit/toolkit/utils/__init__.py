"""fal's download helpers (``fal.toolkit.utils``), on this machine: ``download_file``,
``download_model_weights``, ``clone_repository`` and fal's directories.

fal's directories live on its ``/data`` volume; here they live in falkit's cache
directory (``falkit.toolkit.cache``: ``~/.cache/falkit`` on Linux, or
``$FALKIT_CACHE_DIR``), read again on each use, so ``FAL_MODEL_WEIGHTS_DIR`` and the
others name the current one. Sources are what ``falkit.toolkit.sources`` allows: local
paths, ``file://``, ``data:`` and loopback ``http(s)`` URLs, never the internet unless
the user opts in (``FALKIT_ALLOW_REMOTE_DOWNLOADS=1``). A refused URL is a
``DownloadError`` naming where to put the file by hand: weights already in their
directory are found without any download, as on fal. Each download is bounded
(``filesize_limit``, else ``MAX_DOWNLOAD_BYTES``), checked against the free disk space
when its size is known, and atomic: written beside its target, then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import sources
from ..cache import model_weights_dir, persistent_dir, repository_dir
from ..exceptions import DownloadError, FalTookitException

__all__ = [  # the FAL_*_DIR names come from __getattr__ below
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "DownloadError",
    "clone_repository",
    "download_file",
    "download_model_weights",
]

#: The largest single download when the call sets no ``filesize_limit``.
MAX_DOWNLOAD_BYTES = 64 * 1024**3
#: How long one ``git`` command of ``clone_repository`` may run.
GIT_TIMEOUT_S = 600
_MB = 1024**2
_DIRECTORIES = {
    "FAL_PERSISTENT_DIR": persistent_dir,
    "FAL_MODEL_WEIGHTS_DIR": model_weights_dir,
    "FAL_REPOSITORY_DIR": repository_dir,
}


def __getattr__(name: str) -> Any:
    # fal's directories are module constants; here they follow $FALKIT_CACHE_DIR.
    if name in _DIRECTORIES:
        return _DIRECTORIES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def download_file(
    url: str,
    target_dir: str | Path,
    *,
    force: bool = False,
    request_headers: dict[str, str] | None = None,
    filesize_limit: int | None = None,
) -> Path:
    """Download ``url`` into ``target_dir`` (relative: under ``FAL_PERSISTENT_DIR``) and
    answer the file's path. Its name is the server's (``Content-Disposition``), else the
    URL's or path's last part, else (a ``data:`` URI) the URL's hash. An existing file of
    the same size is kept unless ``force``. ``filesize_limit`` is in megabytes."""
    target_dir = Path(target_dir).expanduser()
    if not target_dir.is_absolute():
        target_dir = persistent_dir() / target_dir
    limit = filesize_limit * _MB if filesize_limit is not None else MAX_DOWNLOAD_BYTES
    instead = f"download it yourself into {target_dir}"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with sources.open_source(
            url, limit=limit, headers=request_headers, instead=instead
        ) as opened:
            target = target_dir.resolve() / (opened.name or _hash_url(url))
            if _reusable(target, opened, force):
                return target
            _check_space(target_dir, opened.declared_size)
            print(f"Downloading {_shown(url)} to {target}")
            sources.write_atomically(target, lambda out: _copy(opened, out))
    except OSError as exc:
        raise DownloadError(f"Failed to download {_shown(url)} to {target_dir}: {exc}") from exc
    return target


def download_model_weights(
    url: str, force: bool = False, request_headers: dict[str, str] | None = None
) -> Path:
    """Download model weights from ``url`` into their own directory under
    ``FAL_MODEL_WEIGHTS_DIR`` (named by the URL's hash) and answer the file's path. Weights
    already there are answered without a download unless ``force``: the way to use weights
    from the internet without letting falkit fetch them is to put the file in that
    directory (the ``DownloadError`` names it)."""
    weights_dir = model_weights_dir() / _hash_url(url)
    if not force:
        present = _weights_in(weights_dir)
        if present is not None:
            _mark_used(weights_dir)
            return present
    path = download_file(url, weights_dir, force=force, request_headers=request_headers)
    _mark_used(weights_dir)
    return path


def clone_repository(
    https_url: str,
    *,
    commit_hash: str | None = None,
    target_dir: str | Path | None = None,
    repo_name: str | None = None,
    force: bool = False,
    include_to_path: bool = False,
) -> Path:
    """Clone a git repository into ``target_dir`` (default ``FAL_REPOSITORY_DIR``) as
    ``repo_name`` (default: the URL's last part, with ``-`` and the commit's first 8
    characters when ``commit_hash`` is given), check out ``commit_hash``, and answer the
    path; ``include_to_path`` puts it on ``sys.path``. A clone already at that commit is
    kept unless ``force``. The source is a local path or ``file://`` URL; a repository on
    the internet is used when it was cloned there by hand (the error says where), or is
    cloned when the user set ``FALKIT_ALLOW_REMOTE_DOWNLOADS=1``."""
    if commit_hash is not None and len(commit_hash) < 8:
        raise ValueError(f"Commit hash '{commit_hash}' is too short.")
    if repo_name is None:
        repo_name = Path(https_url.rstrip("/")).stem
        repo_name += f"-{commit_hash[:8]}" if commit_hash else ""
    parent = Path(target_dir).expanduser() if target_dir is not None else repository_dir()
    local = parent / repo_name
    remote = not _is_local_source(https_url)
    if local.exists() and not force and _is_checked_out(local, commit_hash, remote):
        return _on_path(local, include_to_path)
    if remote and not sources.remote_allowed():
        raise FalTookitException(_clone_by_hand(https_url, local, commit_hash))
    parent.mkdir(parents=True, exist_ok=True)
    _clone(https_url, commit_hash, parent, local, remote)
    return _on_path(local, include_to_path)


# -- downloads ---------------------------------------------------------------------------


def _hash_url(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _reusable(target: Path, opened: sources.Opened, force: bool) -> bool:
    size = opened.declared_size
    return not force and size is not None and target.is_file() and target.stat().st_size == size


def _check_space(directory: Path, size: int | None) -> None:
    if size is None:
        return
    free = shutil.disk_usage(directory).free
    if size > free:
        raise DownloadError(f"{size} bytes do not fit in {directory}: {free} bytes are free")


def _copy(opened: sources.Opened, out: Any) -> None:
    for chunk in opened.chunks():
        out.write(chunk)


def _weights_in(weights_dir: Path) -> Path | None:
    if not weights_dir.is_dir():
        return None
    found = sorted(p for p in weights_dir.iterdir() if not p.name.startswith((".fal", ".falkit")))
    return found[0] if found else None


def _mark_used(weights_dir: Path) -> None:
    marker = weights_dir / ".fal_used"
    if not marker.exists() or marker.stat().st_mtime < time.time() - 86400:
        marker.touch()


def _shown(url: str) -> str:
    return url if len(url) <= 120 else url[:100] + "..."


# -- git ---------------------------------------------------------------------------------


def _is_local_source(url: str) -> bool:
    try:
        return sources.is_path(url)
    except DownloadError:
        return False  # ssh://, git:// and the like: not on this machine


def _git(*args: str, cwd: Path | None = None, local_only: bool = True) -> str:
    if shutil.which("git") is None:
        raise FalTookitException("clone_repository needs git: install it (and put it on PATH)")
    # Only the file transport when the source is local: a submodule on the internet then
    # fails loudly instead of being fetched.
    guard = ["-c", "protocol.allow=never", "-c", "protocol.file.allow=always"]
    command = ["git", *(guard if local_only else []), *args]
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True
        )
    except subprocess.CalledProcessError as exc:
        raise FalTookitException(f"`{' '.join(command)}` failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise FalTookitException(f"`{' '.join(command)}` ran past {GIT_TIMEOUT_S}s") from exc
    return done.stdout.strip()


def _is_checked_out(local: Path, commit_hash: str | None, remote: bool) -> bool:
    # fal re-clones a repository named without a commit; a local source is cheap to clone
    # again, and one from the internet is kept rather than fetched.
    if commit_hash is None:
        return remote
    try:
        head = _git("rev-parse", "HEAD", cwd=local)
        wanted = _git("rev-parse", "--verify", "--quiet", f"{commit_hash}^{{commit}}", cwd=local)
    except FalTookitException:
        return False
    return head == wanted


def _clone(url: str, commit_hash: str | None, parent: Path, local: Path, remote: bool) -> None:
    source = url if remote else str(sources.local_path(url))
    if not remote and not Path(source).is_dir():
        raise FalTookitException(f"{url}: no such repository on this machine")
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{local.name}.tmp.") as scratch:
        work = Path(scratch) / "repo"
        _git("clone", "--quiet", "--recursive", source, str(work), local_only=not remote)
        if commit_hash:
            _git("checkout", "--quiet", commit_hash, cwd=work, local_only=not remote)
            _git("submodule", "update", "--init", "--recursive", cwd=work, local_only=not remote)
        if local.exists():
            # Moved aside first, so the name never points at half a repository.
            os.replace(local, Path(scratch) / "old")
        os.replace(work, local)


def _clone_by_hand(url: str, local: Path, commit_hash: str | None) -> str:
    checkout = f" && git -C {local} checkout {commit_hash}" if commit_hash else ""
    return (
        f"falkit does not clone from other hosts ({url}): it clones local paths and file:// "
        f"URLs. Clone it yourself (git clone --recursive {url} {local}{checkout}) and "
        f"falkit uses that clone, or set {sources.REMOTE_ENV}=1 to let falkit clone it."
    )


def _on_path(local: Path, include: bool) -> Path:
    if include and str(local) not in sys.path:
        sys.path.insert(0, str(local))
    return local
