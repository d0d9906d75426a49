"""fal's URL input types (``fal.toolkit.types``): ``DataUri`` and ``HttpsUrl`` strings
with fal's patterns and length bounds, their image variants, and the ``FileInput`` /
``ImageInput`` unions. A validated value is an instance of its type (on fal it stays a
plain ``str``), so ``as_temp_file()`` and ``to_pil()`` work on it; they read what
``falkit.toolkit.sources`` allows, so an ``HttpsUrl``, always a host on the internet, is
read only when the user opted in (``FALKIT_ALLOW_REMOTE_DOWNLOADS=1``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from .image import read_image_from_url
from .utils import download_file

__all__ = [
    "HTTP_URL_REGEX",
    "MAX_DATA_URI_LENGTH",
    "MAX_HTTPS_URL_LENGTH",
    "DataUri",
    "FileInput",
    "HttpsUrl",
    "ImageDataUri",
    "ImageHttpsUrl",
    "ImageInput",
]

MAX_DATA_URI_LENGTH = 10 * 1024 * 1024
MAX_HTTPS_URL_LENGTH = 2048
HTTP_URL_REGEX = r"^https:\/\/(?:[a-zA-Z0-9-]+\.)+[a-zA-Z]{2,}(?::\d{1,5})?(?:\/[^\s]*)?$"


class DownloadFileMixin:
    """``as_temp_file()``: the URL's file, downloaded into a temporary directory that is
    removed when the ``with`` block ends."""

    @contextmanager
    def as_temp_file(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="falkit-") as scratch:
            yield download_file(str(self), scratch)


class DownloadImageMixin:
    """``to_pil()``: the URL's image, read and made RGB and upright."""

    def to_pil(self) -> Any:
        return read_image_from_url(str(self))


class _PatternString(DownloadFileMixin, str):
    _pattern: str = ""
    _max_length: int = 0
    _format: str = ""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        text = core_schema.str_schema(
            pattern=cls._pattern, max_length=cls._max_length, strip_whitespace=True
        )
        return core_schema.no_info_after_validator_function(cls, text)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["format"] = cls._format
        return json_schema


class DataUri(_PatternString):
    """A ``data:`` URI of at most ``MAX_DATA_URI_LENGTH`` characters."""

    _pattern = "^data:"
    _max_length = MAX_DATA_URI_LENGTH
    _format = "data-uri"


class HttpsUrl(_PatternString):
    """An ``https`` URL on a named host, of at most ``MAX_HTTPS_URL_LENGTH`` characters."""

    _pattern = HTTP_URL_REGEX
    _max_length = MAX_HTTPS_URL_LENGTH
    _format = "https-url"


class ImageHttpsUrl(DownloadImageMixin, HttpsUrl):
    """An ``HttpsUrl`` of an image."""


class ImageDataUri(DownloadImageMixin, DataUri):
    """A ``DataUri`` of an image."""


FileInput = Union[HttpsUrl, DataUri]  # noqa: UP007 (fal's spelling)
ImageInput = Union[ImageHttpsUrl, ImageDataUri]  # noqa: UP007
