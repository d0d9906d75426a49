"""``File`` (``fal.toolkit.file``): a file answered by URL, with fal's fields, and
``FileField`` / ``CompressedFile``.

On fal, ``File.from_bytes(data)`` uploads to fal's CDN and answers its URL. A notebook
has no CDN (and no key), so here a file is stored in its own URL, as a ``data:`` URI,
which is fal's own ``in_memory`` repository: the answer is self-contained, browsers and
``fal_client`` read it, nothing leaves the machine. ``repository`` and the other upload
options are accepted for fal's signatures and otherwise ignored. A file answered inline
is bounded (``MAX_INLINE_BYTES``): past it, ``from_bytes`` says what to do instead.

Inputs: a ``File`` field accepts an object with ``url`` or a bare URL string (``http``,
``https`` or ``data``), as fal's does. A malformed ``data:`` URI is a 422 here (fal
finds out later). Unlike fal's, whose ``as_bytes()`` on an input raises "File has not
been downloaded", ``as_bytes()``, ``save()`` and ``Image.to_pil()`` read the URL: a
``data:`` URI, or an ``http(s)`` URL on loopback (see ``falkit.toolkit.sources``), at most
``MAX_DOWNLOAD_BYTES``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import mimetypes
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator

from . import sources
from .exceptions import FileUploadException
from .schema import fal_model_config, ui_field

__all__ = ["CompressedFile", "File", "FileField"]

#: The largest file ``as_bytes()`` and ``save()`` read from a URL.
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
#: The largest file ``from_bytes`` / ``from_path`` answer inline, in a ``data:`` URI.
MAX_INLINE_BYTES = 256 * 1024 * 1024
#: The most a ``CompressedFile`` extracts, all members together.
MAX_EXTRACTED_BYTES = 4 * 1024 * 1024 * 1024

#: fal's repository ids (``fal.toolkit.file.types.RepositoryId``) and defaults.
REPOSITORY_IDS = frozenset({"fal", "fal_v2", "fal_v3", "in_memory", "gcp_storage", "r2", "cdn"})
DEFAULT_REPOSITORY = "fal_v3"
FALLBACK_REPOSITORY: list[Any] = ["fal"]
_URL_SCHEMES = ("http", "https", "data")


@functools.wraps(Field)
def FileField(*args: Any, **kwargs: Any) -> Any:
    """A pydantic ``Field`` that fal's UI shows as a file input (``ui.field = "file"``)."""
    return ui_field(args, kwargs, kind="file")


class File(BaseModel):
    """A file answered by URL, with fal's fields; ``file_data`` holds its bytes once read
    (never in an answer)."""

    url: str = Field(description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(
        None, description="The mime type of the file.", examples=["image/png"]
    )
    file_name: str | None = Field(
        None,
        description="The name of the file. It will be auto-generated if not provided.",
        examples=["z9RV14K95DvU.png"],
    )
    file_size: int | None = Field(
        None, description="The size of the file in bytes.", examples=[4404019]
    )
    file_data: bytes | None = Field(None, description="File data", exclude=True, repr=False)

    model_config = fal_model_config()

    @model_validator(mode="before")
    @classmethod
    def _from_url_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if urlsplit(value).scheme not in _URL_SCHEMES:
                raise ValueError("value must be a valid URL (http, https or data)")
            return {"url": value}
        return value

    @model_validator(mode="after")
    def _url_is_readable(self) -> File:
        scheme = urlsplit(self.url).scheme
        if scheme not in _URL_SCHEMES:
            raise ValueError("url must be an http, https or data URL")
        if scheme == "data" and self.file_data is None:
            # Decoded once, now: a malformed data URI is the client's 422, not a 500 later.
            self.file_data = sources.decode_data_uri(self.url)
        return self

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """A file holding ``data``, in a ``data:`` URI. As fal's: the type is guessed from
        ``file_name`` when not given, and a name is made from the type when not given."""
        check_repository(repository)
        return inline_file(cls, bytes(data), content_type, file_name)

    @classmethod
    async def from_bytes_async(
        cls,
        data: bytes,
        content_type: str | None = None,
        file_name: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """``from_bytes`` in a worker thread (``File``'s arguments, as fal's)."""
        make = functools.partial(
            cls.from_bytes,
            data,
            content_type=content_type,
            file_name=file_name,
            repository=repository,
        )
        return await asyncio.to_thread(make)

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        content_type: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        multipart: bool | None = None,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """A file holding the contents of ``path``. Its type is guessed from its name when
        not given (fal answers ``application/octet-stream``; a notebook's viewers need the
        real type to show the file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"File {path} does not exist or is not a file")
        check_repository(repository)
        if path.stat().st_size > MAX_INLINE_BYTES:  # before reading it all
            raise FileUploadException(_too_large(f"{path} is {path.stat().st_size} bytes"))
        return inline_file(cls, path.read_bytes(), content_type, path.name)

    @classmethod
    async def from_path_async(
        cls,
        path: str | Path,
        content_type: str | None = None,
        repository: Any = DEFAULT_REPOSITORY,
        multipart: bool | None = None,
        fallback_repository: Any = FALLBACK_REPOSITORY,
        request: Any = None,
        save_kwargs: dict[str, Any] | None = None,
        fallback_save_kwargs: dict[str, Any] | None = None,
    ) -> File:
        """``from_path`` in a worker thread."""
        return await asyncio.to_thread(cls.from_path, path, content_type, repository)

    @classmethod
    def reserve(
        cls,
        content_type: str | None = None,
        file_name: str | None = None,
        request: Any = None,
        repository: Any = DEFAULT_REPOSITORY,
        extra_headers: dict[str, str] | None = None,
    ) -> Any:
        """fal's URL-before-bytes upload; it needs fal's CDN, so here it says so."""
        raise FileUploadException(
            "File.reserve() hands out a CDN URL before the bytes exist, and a notebook has "
            "no CDN (a local file lives in its own data: URI). Make the file when its bytes "
            "are ready, with File.from_bytes(...) or File.from_path(...)."
        )

    def as_bytes(self) -> bytes:
        """The file's contents: held, decoded from a ``data:`` URI, or downloaded."""
        if self.file_data is None:
            self.file_data = sources.read_bytes(self.url, limit=MAX_DOWNLOAD_BYTES)
        return self.file_data

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the contents to ``path`` (whole or not at all) and answer it resolved;
        refuses to replace a file unless ``overwrite``."""
        target = Path(path).resolve()
        if target.exists() and not overwrite:
            raise FileExistsError(f"File {target} already exists; pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.file_data is not None:
            sources.write_atomically(target, lambda out: out.write(self.file_data or b""))
            return target
        with sources.open_source(self.url, limit=MAX_DOWNLOAD_BYTES, paths=False) as opened:
            sources.write_atomically(target, lambda out: _copy(opened, out))
        return target

    async def save_async(self, path: str | Path, overwrite: bool = False) -> Path:
        """``save`` in a worker thread."""
        return await asyncio.to_thread(self.save, path, overwrite)


class CompressedFile(File):
    """A zip archive: iterate over its members (extracted to a temporary directory on
    first use, removed with the object) or ``glob`` them."""

    extract_dir: str | None = Field(default=None, exclude=True, repr=False)

    def __iter__(self) -> Iterator[Path]:  # type: ignore[override]
        return iter(sorted(self._extracted().iterdir()))

    def glob(self, pattern: str) -> Iterator[Path]:
        """The extracted members matching ``pattern``."""
        return self._extracted().glob(pattern)

    def _extracted(self) -> Path:
        if not self.extract_dir:
            target = tempfile.mkdtemp(prefix="falkit-zip-")
            try:
                with tempfile.TemporaryDirectory() as scratch:
                    archive = self.save(Path(scratch) / "archive.zip", overwrite=True)
                    _extract(archive, Path(target))
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            self.extract_dir = target
        return Path(self.extract_dir)

    def __del__(self) -> None:
        extract_dir = self.__dict__.get("extract_dir")
        if extract_dir:
            shutil.rmtree(extract_dir, ignore_errors=True)


def _extract(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        total = sum(member.file_size for member in zipped.infolist())
        if total > MAX_EXTRACTED_BYTES:
            raise FileUploadException(
                f"the archive expands to {total} bytes, over the bound of "
                f"{MAX_EXTRACTED_BYTES} (falkit.toolkit.file.MAX_EXTRACTED_BYTES)"
            )
        zipped.extractall(target)  # zipfile drops absolute paths and '..' from names


def inline_file(cls: type[File], data: bytes, content_type: str | None, name: str | None) -> Any:
    """A ``cls`` holding ``data`` in a ``data:`` URI (the toolkit's one way to make a file):
    bounded, typed from ``name`` when untyped, named from its type when unnamed."""
    if len(data) > MAX_INLINE_BYTES:
        raise FileUploadException(_too_large(f"{len(data)} bytes"))
    if content_type is None and name is not None:
        content_type = mimetypes.guess_type(name)[0]
    content_type = content_type or "application/octet-stream"
    if name is None:
        name = uuid.uuid4().hex + (mimetypes.guess_extension(content_type, strict=False) or ".bin")
    url = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
    # Built, not validated: decoding the URI just made from ``data`` gives ``data``.
    return cls.model_construct(
        url=url, content_type=content_type, file_name=name, file_size=len(data), file_data=data
    )


def _too_large(what: str) -> str:
    return (
        f"{what}: over falkit's bound of {MAX_INLINE_BYTES} bytes for a file answered "
        "inline (in a data: URI; there is no CDN locally). Write it to disk and answer its "
        "path, or raise falkit.toolkit.file.MAX_INLINE_BYTES."
    )


def _copy(opened: sources.Opened, out: Any) -> int:
    written = 0
    for chunk in opened.chunks():
        out.write(chunk)
        written += len(chunk)
    return written


def check_repository(repository: Any) -> None:
    """Refuse what fal refuses: a repository id it does not know."""
    if not isinstance(repository, str):
        return  # a FileRepository object: accepted, and the file stays local all the same
    if repository not in REPOSITORY_IDS:
        raise ValueError(f'"{repository}" is not a valid built-in file repository')
    if repository in ("fal_v2", "cdn"):
        warnings.warn(
            f"`{repository}` file repository is deprecated, falling back to `fal_v3`.",
            DeprecationWarning,
            stacklevel=3,
        )
