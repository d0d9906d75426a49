"""fal's file storage, answered locally: what ``fal_client.upload`` / ``upload_file`` /
``upload_image`` and ``@fal-ai/client``'s ``storage.upload`` call, with fal's request and
response shapes, and the files served back by the same server.

* ``POST /.fal/rest/storage/auth/token`` -> a CDN token whose ``base_url`` is this server's
  ``/.fal/cdn`` (fal_client's default ``fal_v3`` repository).
* ``POST /.fal/cdn/files/upload`` (the bytes, ``Content-Type``, ``X-Fal-File-Name``) ->
  ``{"access_url": ...}``.
* ``POST /.fal/rest/storage/upload/initiate`` (``{"file_name", "content_type"}``) ->
  ``{"upload_url", "file_url"}``; then ``PUT`` the bytes to ``upload_url`` (fal_client's
  ``fal`` repository, fal-js).
* ``GET /.fal/files/<id>/<name>`` -> the file, with its content type.

Bounded: a file is at most ``MAX_FILE_BYTES`` (the server's body limit applies first), and
the files kept at most ``MAX_STORED_BYTES`` in all, the oldest let go first (their URLs then
answer 404). Multipart uploads (fal's path for files over 100 MiB) answer 413: nothing that
large is kept locally. Files live in the server's memory and go with it.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from .messages import header, origin, read_body, send_bytes, send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_STORED_BYTES = 256 * 1024 * 1024
TOKEN_PATH = "/.fal/rest/storage/auth/token"
INITIATE_PATH = "/.fal/rest/storage/upload/initiate"
MULTIPART_PATH = "/.fal/rest/storage/upload/initiate-multipart"
CDN_UPLOAD_PATH = "/.fal/cdn/files/upload"
FILES = "/.fal/files/"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _File:
    content_type: str
    data: bytes | None = None  # None: initiated, not uploaded yet


class FileStore:
    """The files of one server, oldest first, bounded as the module says."""

    def __init__(self, max_bytes: int = MAX_STORED_BYTES) -> None:
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self._files: OrderedDict[str, _File] = OrderedDict()

    def reserve(self, name: str, content_type: str) -> str:
        """A new file's key (``<id>/<name>``), to be filled by ``put``."""
        key = f"{secrets.token_hex(8)}/{_SAFE_NAME.sub('_', name)[:100] or 'upload.bin'}"
        self._files[key] = _File(content_type)
        return key

    def put(self, key: str, data: bytes) -> None:
        entry = self._files[key]
        self.stored_bytes += len(data) - len(entry.data or b"")
        entry.data = data
        self._files.move_to_end(key)
        while self.stored_bytes > self.max_bytes and len(self._files) > 1:
            _, oldest = self._files.popitem(last=False)
            self.stored_bytes -= len(oldest.data or b"")

    def get(self, key: str) -> _File | None:
        return self._files.get(key)


def _base(scope: Scope) -> str:
    # Where a browser finds this server's files: behind a hub, under its proxy path.
    return origin(scope) + scope.get("root_path", "")


def _text(scope: Scope, name: bytes) -> str | None:
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


class FalStorage:
    """ASGI middleware answering fal's storage paths; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, store: FileStore | None = None) -> None:
        self.app = app
        self.store = store if store is not None else FileStore()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/.fal/"):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if path.rstrip("/") == TOKEN_PATH and method == "POST":
            await self._token(scope, send)
        elif path == INITIATE_PATH and method == "POST":
            await self._initiate(scope, receive, send)
        elif path == MULTIPART_PATH:
            await send_json(send, 413, {"detail": _too_large_detail()})
        elif path == CDN_UPLOAD_PATH and method == "POST":
            await self._upload(scope, receive, send)
        elif path.startswith(FILES) and method in ("GET", "HEAD"):
            await self._serve(path[len(FILES) :], send, head=method == "HEAD")
        elif path.startswith(FILES) and method == "PUT":
            await self._put(scope, receive, send, path[len(FILES) :])
        else:
            await self.app(scope, receive, send)

    async def _token(self, scope: Scope, send: Send) -> None:
        expires = datetime.now(timezone.utc) + timedelta(hours=1)
        await send_json(
            send,
            200,
            {
                "token": "falkit-local-token",
                "token_type": "Bearer",
                "base_url": _base(scope) + "/.fal/cdn",
                "expires_at": expires.isoformat(),
            },
        )

    async def _initiate(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive, limit=64 * 1024)
        try:
            asked = json.loads(body or b"{}")
            name = str(asked.get("file_name") or "upload.bin")
            content_type = str(asked.get("content_type") or "application/octet-stream")
        except (ValueError, AttributeError):
            await send_json(send, 422, {"detail": "expected {'file_name', 'content_type'}"})
            return
        key = self.store.reserve(name, content_type)
        url = f"{_base(scope)}{FILES}{quote(key)}"
        await send_json(send, 200, {"upload_url": url, "file_url": url})

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = await self._read(receive, send)
        if data is None:
            return
        name = unquote(_text(scope, b"x-fal-file-name") or "") or "upload.bin"
        content_type = _text(scope, b"content-type") or _guess(name)
        key = self.store.reserve(name, content_type)
        self.store.put(key, data)
        await send_json(send, 200, {"access_url": f"{_base(scope)}{FILES}{quote(key)}"})

    async def _put(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        key = unquote(key)
        if self.store.get(key) is None:
            await send_json(send, 404, {"detail": "no upload was initiated for this URL"})
            return
        data = await self._read(receive, send)
        if data is not None:
            self.store.put(key, data)
            await send_json(send, 200, {})

    async def _read(self, receive: Receive, send: Send) -> bytes | None:
        data, _ = await read_body(receive, limit=MAX_FILE_BYTES)
        if len(data) > MAX_FILE_BYTES:
            await send_json(send, 413, {"detail": _too_large_detail()})
            return None
        return data

    async def _serve(self, key: str, send: Send, *, head: bool) -> None:
        entry = self.store.get(unquote(key))
        if entry is None or entry.data is None:
            await send_json(send, 404, {"detail": "File not found"})
            return
        headers = [(b"content-type", entry.content_type.encode("latin-1"))]
        if head:
            headers.append((b"content-length", str(len(entry.data)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_bytes(send, 200, headers, entry.data)


def _guess(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _too_large_detail() -> str:
    return (
        f"files over {MAX_FILE_BYTES} bytes are not kept by the local server; "
        "pass a smaller file, or a URL the app can download"
    )
