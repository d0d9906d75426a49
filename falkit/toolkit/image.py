"""``Image`` (``fal.toolkit.image``): an image ``File`` with its size in pixels, fal's
image size presets, ``ImageField`` / ``ImageSizeField``, and ``read_image_from_url``."""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, Field

from . import sources
from .constraints import ImageSizeConstraints, to_xfal
from .file import DEFAULT_REPOSITORY, FALLBACK_REPOSITORY, File, check_repository, inline_file
from .schema import fal_model_config, ui_field

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "IMAGE_SIZE_PRESETS",
    "MAX_IMAGE_DOWNLOAD_SIZE",
    "Image",
    "ImageField",
    "ImageFormat",
    "ImageSize",
    "ImageSizeField",
    "ImageSizeInput",
    "ImageSizePreset",
    "filter_by",
    "get_image_size",
    "preprocess_image",
    "read_image_from_url",
]

#: The largest image ``to_pil()`` and ``read_image_from_url`` read (fal's bound).
MAX_IMAGE_DOWNLOAD_SIZE = 50 * 1024 * 1024

ImageFormat = Literal["png", "jpeg", "jpg", "webp", "gif"]
ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]


class ImageSize(BaseModel):
    """A width and a height in pixels, as fal bounds them."""

    model_config = fal_model_config()

    width: int = Field(default=512, description="The width of the generated image.", gt=0, le=14142)
    height: int = Field(
        default=512, description="The height of the generated image.", gt=0, le=14142
    )


ImageSizeInput = Union[ImageSize, ImageSizePreset]  # noqa: UP007 (fal's spelling)
IMAGE_SIZE_PRESETS: dict[str, ImageSize] = {
    "square_hd": ImageSize(width=1024, height=1024),
    "square": ImageSize(width=512, height=512),
    "portrait_4_3": ImageSize(width=768, height=1024),
    "portrait_16_9": ImageSize(width=576, height=1024),
    "landscape_4_3": ImageSize(width=1024, height=768),
    "landscape_16_9": ImageSize(width=1024, height=576),
}


def get_image_size(source: ImageSizeInput) -> ImageSize:
    """``source`` as an ``ImageSize``: a preset name is looked up. Anything else is a
    ``TypeError``, as on fal."""
    if isinstance(source, ImageSize):
        return source
    if isinstance(source, str) and source in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[source]
    presets = ", ".join(IMAGE_SIZE_PRESETS)
    raise TypeError(f"Invalid value for ImageSize: {source!r} (an ImageSize or one of {presets})")


def ImageSizeField(
    *args: Any,
    constraints: ImageSizeConstraints | None = None,
    ui: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``Field`` for an ``image_size`` input; ``constraints`` go into the schema under
    ``x-fal``, ``ui`` beside them. Other arguments are ``Field``'s."""
    limits = to_xfal(constraints) if constraints is not None else {}
    return ui_field(args, kwargs, ui=ui, extra={"x-fal": limits} if limits else None)


@functools.wraps(Field)
def ImageField(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that fal's UI shows as an image input."""
    return ui_field(args, kwargs, kind="image")


class Image(File):
    """An image file, with its size in pixels."""

    model_config = fal_model_config(description="Represents an image file.", kind="image")

    width: int | None = Field(
        None, description="The width of the image in pixels.", examples=[1024]
    )
    height: int | None = Field(
        None, description="The height of the image in pixels.", examples=[1024]
    )

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls,
        data: bytes,
        format: ImageFormat,
        size: ImageSize | None = None,
        file_name: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> Image:
        """An image of encoded ``data`` (``format``: ``"png"``, ``"jpeg"``, ...)."""
        check_repository(repository)
        image: Image = inline_file(cls, bytes(data), f"image/{format}", file_name)
        image.width = size.width if size else None
        image.height = size.height if size else None
        return image

    @classmethod
    def from_pil(
        cls,
        pil_image: PILImage.Image,
        format: ImageFormat | None = None,
        file_name: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> Image:
        """An image of a PIL image, encoded as ``format`` (its own format, else PNG)."""
        chosen = (format or pil_image.format or "png").lower()
        options: dict[str, Any] = {}
        if chosen == "png":
            options["compress_level"] = 1  # fast, as fal's: an answer, not an archive
        elif chosen in ("jpeg", "jpg"):
            chosen, options["quality"] = "jpeg", 95
        buffer = io.BytesIO()
        pil_image.save(buffer, format=chosen, **options)
        size = ImageSize(width=pil_image.width, height=pil_image.height)
        return cls.from_bytes(buffer.getvalue(), chosen, size, file_name, repository)  # type: ignore[arg-type]

    def to_pil(self, mode: str = "RGB") -> PILImage.Image:
        """The image as a PIL image in ``mode``, turned upright by its EXIF orientation."""
        from PIL import Image as PILImage
        from PIL import ImageOps

        data = self.file_data
        if data is None:
            data = sources.read_bytes(self.url, limit=MAX_IMAGE_DOWNLOAD_SIZE)
        with PILImage.open(io.BytesIO(data)) as opened:
            return ImageOps.exif_transpose(opened).convert(mode)


def preprocess_image(
    image_pil: PILImage.Image, convert_to_rgb: bool = True, fix_orientation: bool = True
) -> PILImage.Image:
    """The first frame of ``image_pil``, in RGB and upright unless told otherwise."""
    from PIL import ImageOps, ImageSequence

    frame = next(iter(ImageSequence.Iterator(image_pil)))
    if convert_to_rgb:
        frame = frame.convert("RGB")
    if fix_orientation:
        frame = ImageOps.exif_transpose(frame)
    return frame


def read_image_from_url(
    url: str,
    convert_to_rgb: bool = True,
    fix_orientation: bool = True,
    max_size: int = MAX_IMAGE_DOWNLOAD_SIZE,
) -> PILImage.Image:
    """The image at ``url`` (``data:`` or loopback ``http(s)``), preprocessed; one that
    cannot be read is fal's 422 ``Could not load image from url``."""
    from fastapi import HTTPException
    from PIL import Image as PILImage

    try:
        data = sources.read_bytes(url, limit=max_size)
        image = PILImage.open(io.BytesIO(data))
        image.load()
        return preprocess_image(image, convert_to_rgb, fix_orientation)
    except Exception as exc:
        raise HTTPException(422, f"Could not load image from url: {url}") from exc


def filter_by(has_nsfw_concepts: list[bool], images: list[PILImage.Image]) -> list[PILImage.Image]:
    """``images``, each flagged one replaced by a black image of its size."""
    from PIL import Image as PILImage

    return [
        PILImage.new("RGB", (image.width, image.height), (0, 0, 0)) if flagged else image
        for image, flagged in zip(images, has_nsfw_concepts, strict=False)
    ]
