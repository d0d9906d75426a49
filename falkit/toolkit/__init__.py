"""``fal.toolkit`` on this machine: every name of fal's toolkit, with fal's fields,
signatures and behaviour, working offline. ``import falkit as fal`` reaches it as
``fal.toolkit``; an App exported with ``falkit export`` imports fal's own instead.

What differs, because a notebook has no fal behind it:

* Files (``File``, ``Image``, ``Audio``, ``Video``) travel in ``data:`` URIs (fal's
  ``in_memory`` repository) instead of fal's CDN, bounded in size (``falkit.toolkit.file``).
* Reads and downloads (``as_bytes``, ``to_pil``, ``download_file``,
  ``download_model_weights``, ``clone_repository``) take local paths, ``file://``,
  ``data:`` and loopback URLs; the internet only when the user sets
  ``FALKIT_ALLOW_REMOTE_DOWNLOADS=1`` (``falkit.toolkit.sources``). A refused source is an
  error that says where to put the file by hand.
* fal's ``/data`` volume is falkit's cache directory (``~/.cache/falkit``, or
  ``$FALKIT_CACHE_DIR``; ``falkit.toolkit.cache``): model weights, repositories,
  the ``KVStore`` database (SQLite) and Inductor caches persist there.

The modules are fal's (``falkit.toolkit.image`` is ``fal.toolkit.image``, ...), so imports
of fal's module paths work too; ``cache``, ``schema`` and ``sources`` are falkit's own.
"""

from __future__ import annotations

from typing import Any

from . import utils as _utils
from .audio import Audio, AudioField
from .compilation import (
    get_gpu_type,
    load_inductor_cache,
    sync_inductor_cache,
    synchronized_inductor_cache,
)
from .constraints import (
    ImageSizeConstraints,
    ImageValidationConfig,
    ImageValidationOptions,
    VideoNormalizationConfig,
    VideoValidationConfig,
    VideoValidationOptions,
    to_xfal,
)
from .exceptions import DownloadError, FalTookitException, FileUploadException, KVStoreException
from .file import CompressedFile, File, FileField
from .image import (
    Image,
    ImageField,
    ImageSize,
    ImageSizeField,
    ImageSizeInput,
    get_image_size,
)
from .kv import KVStore
from .pydantic import FalBaseModel, Field, Hidden
from .utils import clone_repository, download_file, download_model_weights
from .video import Video, VideoField

__all__ = [
    "FAL_MODEL_WEIGHTS_DIR",
    "FAL_PERSISTENT_DIR",
    "FAL_REPOSITORY_DIR",
    "Audio",
    "AudioField",
    "CompressedFile",
    "DownloadError",
    "FalBaseModel",
    "FalTookitException",
    "Field",
    "File",
    "FileField",
    "FileUploadException",
    "Hidden",
    "Image",
    "ImageField",
    "ImageSize",
    "ImageSizeConstraints",
    "ImageSizeField",
    "ImageSizeInput",
    "ImageValidationConfig",
    "ImageValidationOptions",
    "KVStore",
    "KVStoreException",
    "Video",
    "VideoField",
    "VideoNormalizationConfig",
    "VideoValidationConfig",
    "VideoValidationOptions",
    "clone_repository",
    "download_file",
    "download_model_weights",
    "get_gpu_type",
    "get_image_size",
    "load_inductor_cache",
    "sync_inductor_cache",
    "synchronized_inductor_cache",
    "to_xfal",
]


def __getattr__(name: str) -> Any:
    # fal's FAL_*_DIR constants, resolved on each use: they follow $FALKIT_CACHE_DIR.
    if name.startswith("FAL_") and name.endswith("_DIR"):
        return getattr(_utils, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
