"""``Video`` (``fal.toolkit.video``): a ``File`` that fal's UI plays as video, and
``VideoField`` with its declared limits."""

from __future__ import annotations

from typing import Any

from .constraints import VideoNormalizationConfig, VideoValidationConfig, to_xfal
from .file import File
from .schema import fal_model_config, ui_field

__all__ = ["Video", "VideoField"]


def VideoField(
    *args: Any,
    constraints: VideoValidationConfig | None = None,
    combined_constraints: VideoValidationConfig | None = None,
    normalization: VideoNormalizationConfig | None = None,
    ui: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``Field`` for a video input. Under ``x-fal`` in its schema: ``constraints`` (the
    limits that reject a video; on a list, each video's), ``combined`` (a list's totals)
    and ``normalization`` (what the model reshapes). ``ui`` joins ``{"field": "video"}``;
    other arguments are ``Field``'s."""
    limits = to_xfal(constraints) if constraints is not None else {}
    for key, config in (("combined", combined_constraints), ("normalization", normalization)):
        nested = to_xfal(config) if config is not None else {}
        if nested:
            limits[key] = nested
    extra = {"x-fal": limits} if limits else None
    return ui_field(args, kwargs, kind="video", ui=ui, extra=extra)


class Video(File):
    """A video file: ``File``'s fields and methods, shown as video."""

    model_config = fal_model_config(kind="video")
