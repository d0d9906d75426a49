"""``Audio`` (``fal.toolkit.audio``): a ``File`` that fal's UI plays as audio."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field

from .file import File
from .schema import fal_model_config, ui_field

__all__ = ["Audio", "AudioField"]


@functools.wraps(Field)
def AudioField(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that fal's UI shows as an audio input."""
    return ui_field(args, kwargs, kind="audio")


class Audio(File):
    """An audio file: ``File``'s fields and methods, shown as audio."""

    model_config = fal_model_config(kind="audio")
