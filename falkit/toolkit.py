"""fal's most used toolkit types, locally: ``File``, ``Image``, ``ImageSizeInput``.

On fal, ``Image.from_pil(img)`` uploads the picture to fal's CDN and answers its URL. A
notebook has no CDN (and no key), so here every file is stored in its own URL, as a
``data:`` URI: the answer is self-contained, ``fal_client`` and browsers read it, and
nothing leaves the machine. The ``repository`` argument is accepted for fal's signatures
and ignored. The fields are fal's (``url``, ``content_type``, ``file_name``, ``file_size``,
and ``width``/``height`` for images), so answers have the shape fal's have, and an App
exported with ``falkit export`` uses fal's own toolkit under ``fal deploy`` unchanged.

Inputs: a ``File``/``Image`` field accepts an object with ``url`` or a bare URL string
(``http``, ``https`` or ``data``), as fal's does; ``as_bytes()``, ``save()`` and
``to_pil()`` read it (``http(s)`` URLs are downloaded, at most ``MAX_DOWNLOAD_BYTES``).
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union
from urllib.parse import unquote_to_bytes, urlsplit

from pydantic import BaseModel, Field, PrivateAttr, model_validator

if TYPE_CHECKING:
    from PIL import Image as PILImage

# What ``fal.toolkit`` exports too (``ImageSize`` is ``fal.toolkit.image.ImageSize`` there).
__all__ = ["File", "Image", "ImageSizeInput", "get_image_size"]

#: The largest file ``as_bytes()`` downloads from an ``http(s)`` URL.
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
_SCHEMES = ("http", "https", "data")


class File(BaseModel):
    """A file answered by URL, with fal's fields."""

    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(None, description="The mime type of the file.")
    file_name: str | None = Field(None, description="The name of the file.")
    file_size: int | None = Field(None, description="The size of the file in bytes.")
    _data: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_url_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if urlsplit(value).scheme not in _SCHEMES:
                raise ValueError("value must be a valid URL (http, https or data)")
            return {"url": value}
        return value

    @model_validator(mode="after")
    def _url_is_readable(self) -> File:
        scheme = urlsplit(self.url).scheme
        if scheme not in _SCHEMES:
            raise ValueError("url must be an http, https or data URL")
        if scheme == "data" and self._data is None:
            self._data = _read_url(self.url)  # a malformed data URI is a 422, decoded once
        return self

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: Any = None,
        **_fal_options: Any,
    ) -> File:
        """A file holding ``data`` (in a ``data:`` URI; ``repository`` is ignored)."""
        content_type = content_type or "application/octet-stream"
        if file_name is None:
            extension = mimetypes.guess_extension(content_type) or ".bin"
            file_name = secrets.token_hex(8) + extension
        url = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        # Built, not validated: the URI was just made from ``data``, decoding it back to
        # check it would be the same bytes again.
        file = cls.model_construct(
            url=url, content_type=content_type, file_name=file_name, file_size=len(data)
        )
        file._data = bytes(data)
        return file

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        content_type: str | None = None,
        repository: Any = None,
        **_fal_options: Any,
    ) -> File:
        """A file holding the contents of ``path`` (type guessed from its name)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist or is not a file")
        guessed = content_type or mimetypes.guess_type(path.name)[0]
        return cls.from_bytes(path.read_bytes(), guessed, path.name)

    def as_bytes(self) -> bytes:
        """The file's contents: decoded from a ``data:`` URI or downloaded."""
        if self._data is None:
            self._data = _read_url(self.url)
        return self._data

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the contents to ``path``; refuses to replace a file unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        path.write_bytes(self.as_bytes())
        return path


class ImageSize(BaseModel):
    width: int = Field(default=512, description="The width of the image.", gt=0, le=14142)
    height: int = Field(default=512, description="The height of the image.", gt=0, le=14142)


ImageSizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]
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
    """``source`` as an ``ImageSize``: a preset name is looked up."""
    if isinstance(source, ImageSize):
        return source
    if isinstance(source, str) and source in IMAGE_SIZE_PRESETS:
        return IMAGE_SIZE_PRESETS[source]
    presets = ", ".join(IMAGE_SIZE_PRESETS)
    raise ValueError(f"expected an ImageSize or one of {presets}; got {source!r}")


class Image(File):
    """An image file, with its size in pixels."""

    width: int | None = Field(None, description="The width of the image in pixels.")
    height: int | None = Field(None, description="The height of the image in pixels.")

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls,
        data: bytes,
        format: str,
        size: ImageSize | None = None,
        file_name: str | None = None,
        repository: Any = None,
        **_fal_options: Any,
    ) -> Image:
        """An image of encoded ``data`` (``format``: ``"png"``, ``"jpeg"``, ...)."""
        image = super().from_bytes(data, f"image/{format}", file_name)
        assert isinstance(image, Image)
        image.width = size.width if size else None
        image.height = size.height if size else None
        return image

    @classmethod
    def from_pil(
        cls,
        pil_image: PILImage.Image,
        format: str | None = None,
        file_name: str | None = None,
        repository: Any = None,
        **_fal_options: Any,
    ) -> Image:
        """An image of a PIL image, encoded as ``format`` (its own format, else PNG)."""
        format = (format or pil_image.format or "png").lower()
        options: dict[str, Any] = {}
        if format == "png":
            options["compress_level"] = 1  # fast: an answer, not an archive
        elif format in ("jpeg", "jpg"):
            format, options["quality"] = "jpeg", 95
        buffer = io.BytesIO()
        pil_image.save(buffer, format=format, **options)
        size = ImageSize(width=pil_image.width, height=pil_image.height)
        return cls.from_bytes(buffer.getvalue(), format, size, file_name)

    def to_pil(self, mode: str = "RGB") -> PILImage.Image:
        """The image as a PIL image in ``mode``."""
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self.as_bytes())) as opened:
            return opened.convert(mode)


def _read_url(url: str) -> bytes:
    parts = urlsplit(url)
    if parts.scheme == "data":
        header, comma, payload = url[len("data:") :].partition(",")
        if not comma:
            raise ValueError("malformed data URI: no ',' before the payload")
        if header.endswith(";base64"):
            try:
                return base64.b64decode(payload, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"malformed data URI: {exc}") from None
        return unquote_to_bytes(payload)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"cannot read a {parts.scheme!r} URL")
    import httpx

    chunks, size = [], 0
    with httpx.stream("GET", url, follow_redirects=True, timeout=30) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                raise ValueError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
            chunks.append(chunk)
    return b"".join(chunks)
