"""Where the toolkit may read bytes from, and how: the one place every read goes through
(``File.as_bytes``/``save``, ``Image.to_pil``, ``download_file``, ``KVStore`` aside).

Allowed: ``data:`` URIs; local paths and ``file://`` URLs where the caller allows them
(``download_file`` does; a ``File`` from a request does not, or any client could read the
server's disk); and ``http(s)`` URLs on loopback (``127.0.0.0/8``, ``::1``,
``localhost``): a falkit server, a file server in another cell. Anything else would reach
the network, which falkit never does on its own: that is a ``DownloadError`` saying what
to do instead, unless the user sets ``FALKIT_ALLOW_REMOTE_DOWNLOADS=1``.

Every read is bounded (``limit`` bytes: a declared ``Content-Length`` above it fails
before the body, and the body is counted as it arrives). Redirects are followed here, at
most five, each hop checked like the first, so a loopback server cannot bounce a read to
the internet; a loopback read ignores the proxies named in the environment, for the same
reason.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import mimetypes
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, unquote_to_bytes, urlsplit
from urllib.request import url2pathname

from .exceptions import DownloadError

#: Set to ``1`` to let the toolkit download from hosts other than this machine.
REMOTE_ENV = "FALKIT_ALLOW_REMOTE_DOWNLOADS"
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0
_URL_SCHEMES = frozenset({"http", "https", "data", "file"})
_T = TypeVar("_T")


@dataclass
class Opened:
    """A source, open: what it says about itself, and its bytes (counted against the
    limit as they are read)."""

    source: str
    name: str | None
    content_type: str | None
    declared_size: int | None
    _chunks: Iterator[bytes]
    limit: int

    def chunks(self) -> Iterator[bytes]:
        received = 0
        for chunk in self._chunks:
            received += len(chunk)
            if received > self.limit:
                raise DownloadError(f"{_short(self.source)} is larger than {self.limit} bytes")
            yield chunk
        if self.declared_size is not None and received < self.declared_size:
            raise DownloadError(
                f"{_short(self.source)} ended after {received} of {self.declared_size} bytes"
            )


def remote_allowed() -> bool:
    """Whether the user opted in to downloads from other hosts."""
    return os.environ.get(REMOTE_ENV, "").strip().lower() in ("1", "true", "yes")


def is_path(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a local file rather than a URL."""
    if isinstance(source, os.PathLike):
        return True
    scheme = urlsplit(source).scheme.lower()
    if scheme in _URL_SCHEMES:
        return scheme == "file"
    if "://" in source:
        raise DownloadError(
            f"cannot download {_short(source)}: falkit reads local paths, file://, data: "
            "and http(s) URLs; fetch it with its own tool and pass the local path"
        )
    return True  # a plain path (``C:\\...`` included: its "scheme" is a drive letter)


def local_path(source: str | os.PathLike[str]) -> Path:
    """The path a local ``source`` (a path or a ``file://`` URL) names."""
    if isinstance(source, os.PathLike):
        return Path(source)
    parts = urlsplit(source)
    if parts.scheme.lower() != "file":
        return Path(source).expanduser()
    if parts.netloc not in ("", "localhost"):
        raise DownloadError(f"{source}: a file:// URL must name this machine (no host)")
    return Path(url2pathname(parts.path))


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a URL's host) is this machine, without asking DNS."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def check_http(url: str, *, instead: str = "") -> None:
    """Refuse an ``http(s)`` URL off this machine unless the user opted in."""
    if is_loopback(urlsplit(url).hostname) or remote_allowed():
        return
    hint = instead or "download it yourself and pass the local path"
    raise DownloadError(
        f"falkit does not download from other hosts ({_short(url)}): it reads local paths, "
        f"file://, data: and loopback http(s) URLs. {hint[0].upper()}{hint[1:]}, or set "
        f"{REMOTE_ENV}=1 to let falkit download it."
    )


@contextmanager
def open_source(
    source: str | os.PathLike[str],
    *,
    limit: int,
    headers: Mapping[str, str] | None = None,
    paths: bool = True,
    instead: str = "",
) -> Iterator[Opened]:
    """Open ``source`` for a bounded read. ``paths=False`` refuses local files."""
    if is_path(source):
        if not paths:
            raise DownloadError(f"{_short(str(source))}: a file URL must be http(s) or data:")
        with _open_path(local_path(source), limit) as opened:
            yield opened
        return
    url = str(source)
    if urlsplit(url).scheme.lower() == "data":
        yield _open_data(url, limit)
        return
    with _open_http(url, limit, dict(headers or {}), instead) as opened:
        yield opened


def read_bytes(source: str, *, limit: int, paths: bool = False) -> bytes:
    """All of ``source``'s bytes, at most ``limit``."""
    with open_source(source, limit=limit, paths=paths) as opened:
        return b"".join(opened.chunks())


def write_atomically(target: Path, write: Callable[[IO[bytes]], _T]) -> _T:
    """Run ``write`` on a temporary file beside ``target``, then move it into place: a
    reader sees the old file or the whole new one, never a part."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".falkit-download.")
    try:
        with os.fdopen(fd, "wb") as out:
            result = write(out)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return result


def decode_data_uri(url: str, limit: int | None = None) -> bytes:
    """The bytes of a ``data:`` URI; ``ValueError`` when it is malformed."""
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise ValueError("malformed data URI: no ',' before the payload")
    if header.endswith(";base64"):
        if limit is not None and len(payload) // 4 * 3 > limit + 3:
            raise DownloadError(f"the data: URI holds more than {limit} bytes")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"malformed data URI: {exc}") from None
    data = unquote_to_bytes(payload)
    if limit is not None and len(data) > limit:
        raise DownloadError(f"the data: URI holds more than {limit} bytes")
    return data


def data_uri_type(url: str) -> str | None:
    """The media type a ``data:`` URI declares, if any."""
    media = url[len("data:") :].partition(",")[0].split(";")[0]
    return media or None


def _open_data(url: str, limit: int) -> Opened:
    try:
        data = decode_data_uri(url, limit)
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    return Opened(url, None, data_uri_type(url), len(data), iter([data]), limit)


@contextmanager
def _open_path(path: Path, limit: int) -> Iterator[Opened]:
    if not path.is_file():
        raise DownloadError(f"{path} does not exist or is not a file")
    size = path.stat().st_size
    if size > limit:
        raise DownloadError(f"{path} is {size} bytes, over the limit of {limit}")
    with path.open("rb") as handle:
        chunks = iter(lambda: handle.read(CHUNK_BYTES), b"")
        yield Opened(str(path), path.name, mimetypes.guess_type(path.name)[0], size, chunks, limit)


@contextmanager
def _open_http(url: str, limit: int, headers: dict[str, str], instead: str) -> Iterator[Opened]:
    import httpx

    try:
        for _ in range(MAX_REDIRECTS + 1):
            check_http(url, instead=instead)
            # A proxy from the environment would carry a loopback read off the machine.
            direct = is_loopback(urlsplit(url).hostname)
            with (
                httpx.Client(trust_env=not direct, timeout=TIMEOUT_S) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.is_redirect and "location" in response.headers:
                    url = str(response.url.join(response.headers["location"]))
                    continue
                yield _opened_response(url, response, limit)
                return
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot download {_short(url)}: {exc}") from exc
    raise DownloadError(f"{_short(url)} redirected more than {MAX_REDIRECTS} times")


def _opened_response(url: str, response: Any, limit: int) -> Opened:
    if response.is_error:
        raise DownloadError(f"{_short(url)} answered HTTP {response.status_code}")
    try:
        declared: int | None = int(response.headers["content-length"])
    except (KeyError, ValueError):
        declared = None
    if response.headers.get("content-encoding", "identity") != "identity":
        declared = None  # the length of the compressed body, not of what we count
    if declared is not None and declared > limit:
        raise DownloadError(f"{_short(url)} is {declared} bytes, over the limit of {limit}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip() or None
    name = _disposition_name(response.headers.get("content-disposition", "")) or _url_name(url)
    return Opened(url, name, content_type, declared, response.iter_bytes(CHUNK_BYTES), limit)


def _disposition_name(header: str) -> str | None:
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    return _safe_name(message.get_filename())


def _url_name(url: str) -> str | None:
    return _safe_name(unquote(urlsplit(url).path).rsplit("/", 1)[-1])


def _safe_name(name: str | None) -> str | None:
    name = Path(name.replace("\\", "/")).name if name else None
    return name if name and name not in (".", "..") else None


def _short(source: str) -> str:
    return source if len(source) <= 120 else source[:100] + "..."
