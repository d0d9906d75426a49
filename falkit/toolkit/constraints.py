"""fal's declared limits on image and video inputs (``fal.toolkit.constraints``): frozen
records that a field helper (``ImageSizeField``, ``VideoField``) writes into the schema
under ``x-fal``, for clients and UIs to check before a request. As on fal, they document;
nothing enforces them. A record no input could satisfy (a minimum above its maximum, an
aspect ratio bound without its pair) is refused where it is declared."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

__all__ = [
    "ImageSizeConstraints",
    "ImageValidationConfig",
    "ImageValidationOptions",
    "VideoNormalizationConfig",
    "VideoValidationConfig",
    "VideoValidationOptions",
    "to_xfal",
]

# Settings of the downloader, not limits a client can check: never in the schema.
_RUNTIME_ONLY = frozenset({"timeout"})
_PAIRS = ("width", "height", "area", "frames", "duration", "fps", "aspect_ratio")


def to_xfal(config: Any) -> dict[str, Any]:
    """The limits ``config`` sets (those not ``None``), as the ``x-fal`` payload."""
    return {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if value is not None and key not in _RUNTIME_ONLY
    }


def _check(config: Any, *, aspect_pair: bool = True) -> None:
    for quantity in _PAIRS:
        low = getattr(config, f"min_{quantity}", None)
        high = getattr(config, f"max_{quantity}", None)
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_{quantity} ({low}) must not exceed max_{quantity} ({high}).")
    if aspect_pair:
        # One bound alone is ambiguous: a ratio reads as width/height or height/width.
        low, high = config.min_aspect_ratio, config.max_aspect_ratio
        if (low is None) != (high is None):
            raise ValueError("min_aspect_ratio and max_aspect_ratio must be provided together.")


@dataclasses.dataclass(frozen=True)
class ImageSizeConstraints:
    """The image sizes a model can make (for an ``image_size`` input)."""

    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    multiple_of: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None

    def __post_init__(self) -> None:
        _check(self)


class ImageValidationOptions(TypedDict, total=False):
    """The options input-image helpers take (fal's keyword dictionary)."""

    max_file_size: int | None
    min_width: int | None
    min_height: int | None
    max_width: int | None
    max_height: int | None
    min_aspect_ratio: float | None
    max_aspect_ratio: float | None
    timeout: float | None


@dataclasses.dataclass(frozen=True)
class ImageValidationConfig:
    """Limits on an input image; ``timeout`` is the download's, not in the schema."""

    max_file_size: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    timeout: float = 20.0

    def __post_init__(self) -> None:
        _check(self)


class VideoValidationOptions(TypedDict, total=False):
    """The options input-video helpers take (fal's keyword dictionary)."""

    max_file_size: int | None
    min_width: int | None
    min_height: int | None
    max_width: int | None
    max_height: int | None
    min_area: int | None
    max_area: int | None
    min_aspect_ratio: float | None
    max_aspect_ratio: float | None
    min_frames: int | None
    max_frames: int | None
    min_duration: float | None
    max_duration: float | None
    min_fps: float | None
    max_fps: float | None


@dataclasses.dataclass(frozen=True)
class VideoValidationConfig:
    """Limits on an input video (areas per frame, in pixels); a video outside them is
    to be rejected."""

    max_file_size: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    min_fps: float | None = None
    max_fps: float | None = None

    def __post_init__(self) -> None:
        _check(self)


@dataclasses.dataclass(frozen=True)
class VideoNormalizationConfig:
    """What a model does to a video it accepts but reshapes (rescales, trims,
    resamples), so a UI can warn rather than block."""

    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    min_area: int | None = None
    max_area: int | None = None
    max_duration: float | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        _check(self, aspect_pair=False)
