"""fal's toolkit exceptions (``fal.toolkit.exceptions``, with fal's spelling), rooted in
falkit's tree at ``falkit.ToolkitError``."""

from __future__ import annotations

from ..exceptions import ToolkitError

# DownloadError is not listed: fal keeps it in ``fal.toolkit.utils``, and so should an
# import of it (``from falkit.toolkit.utils import DownloadError`` exports as fal's).
__all__ = [
    "FalTookitException",
    "FileUploadException",
    "FileUploadFallbackException",
    "KVStoreException",
]


class FalTookitException(ToolkitError):
    """Base of the toolkit's exceptions (fal's name, typo included)."""


class FileUploadException(FalTookitException):
    """A file could not be made: locally, one too large to answer inline, or a call that
    needs fal's CDN."""


class FileUploadFallbackException(FileUploadException):
    """fal's: every repository failed. Kept for ``except`` clauses; falkit never tries
    repositories, so it does not raise it."""


class KVStoreException(FalTookitException):
    """A ``KVStore`` operation failed (a bad ``ttl``, a value that is not a string, a
    database that cannot be opened)."""


class DownloadError(FalTookitException):
    """A download failed, was too large, or named a source off this machine; the message
    says where to put the file instead."""
