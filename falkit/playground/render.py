"""HTML for what a server answered: pretty JSON with images shown as images, and errors
as the server's detail (a 422 as one readable line per problem), never a traceback wall."""

from __future__ import annotations

import base64
import html
import http
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg")
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"BM": "image/bmp",
}
_MAX_SHOWN_STRING = 120
_MAX_IMAGES = 8


def _bytes_mime(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((m for sig, m in _MAGIC.items() if data.startswith(sig)), None)


def _pil_png(value: Any) -> bytes | None:
    # Duck-typed so PIL stays optional: anything with PIL's ``save(fp, format=)``/``mode``.
    if not (hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size")):
        return None
    import io

    buffer = io.BytesIO()
    value.save(buffer, format="PNG")
    return buffer.getvalue()


def image_src(value: Any, rewrite: Callable[[str], str] = lambda u: u) -> str | None:
    """An ``<img src>`` for ``value`` if it is an image: a data URI, an http(s) image URL,
    image bytes, a PIL image, or fal's ``{"url": ..., "content_type": "image/..."}``."""
    if isinstance(value, str):
        if value.startswith("data:image/"):
            return value
        if value.startswith(("http://", "https://")):
            bare = value.split("?", 1)[0].lower()
            return rewrite(value) if bare.endswith(_IMAGE_EXT) else None
        return None
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        if str(value.get("content_type", "")).startswith("image/"):
            url = value["url"]
            return url if url.startswith("data:") else rewrite(url)
        return None
    data = value if isinstance(value, (bytes, bytearray)) else _pil_png(value)
    mime = _bytes_mime(bytes(data)) if data else None
    if data is None or mime is None:
        return None
    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode()}"


def find_images(
    value: Any, rewrite: Callable[[str], str] = lambda u: u, where: str = "", depth: int = 0
) -> Iterator[tuple[str, str]]:
    """(path, src) for each image inside a decoded response, depth-first, bounded."""
    src = image_src(value, rewrite)
    if src is not None:
        yield where or "output", src
        return
    if depth > 8:
        return
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    for key, item in items:
        yield from find_images(item, rewrite, f"{where}.{key}" if where else str(key), depth + 1)


def _shorten(value: Any) -> Any:
    """The value with long strings and bytes abbreviated, for display as JSON."""
    if isinstance(value, dict):
        return {str(k): _shorten(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > _MAX_SHOWN_STRING:
        return f"{value[:60]}... ({len(value)} chars)"
    if _pil_png(value) is not None:
        return f"<image {value.size[0]}x{value.size[1]}>"
    return value


def pretty(value: Any) -> str:
    """Indented JSON (long strings shortened); ``repr`` for what JSON cannot hold."""
    return json.dumps(_shorten(value), indent=2, ensure_ascii=False, default=repr)


def result_html(value: Any, rewrite: Callable[[str], str] = lambda u: u) -> str:
    """A response as ``<pre>`` JSON followed by its images."""
    parts = [f"<pre class='falkit-json' style='margin:0'>{html.escape(pretty(value))}</pre>"]
    for where, src in list(find_images(value, rewrite))[:_MAX_IMAGES]:
        parts.append(
            f"<div class='falkit-image'><code>{html.escape(where)}</code><br>"
            f"<img src='{html.escape(src, quote=True)}' style='max-width:384px;max-height:384px'>"
            "</div>"
        )
    return "".join(parts)


def answer_html(data: bytes, content_type: str, rewrite: Callable[[str], str] = lambda u: u) -> str:
    """A response body by its type: JSON as ``result_html``, an image as an image, text as
    text, anything else as its size."""
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return result_html(json.loads(data), rewrite)
        except ValueError:
            pass  # not JSON after all: shown as text below
    if content_type.startswith("image/"):
        src = f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return (
            f"<div class='falkit-image'><code>{html.escape(content_type)}</code><br>"
            f"<img src='{src}' style='max-width:384px;max-height:384px'></div>"
        )
    if content_type.startswith("text/") or content_type in ("application/json", ""):
        text = data.decode("utf-8", errors="replace")
        return f"<pre style='margin:0'>{html.escape(text)}</pre>"
    return f"<div>{html.escape(content_type)}: {len(data)} bytes</div>"


def plain(markup: str) -> str:
    """What an HTML fragment reads as: tags dropped, list items and blocks on own lines."""
    text = re.sub(r"<img[^>]*>", "[image]", markup)
    text = re.sub(r"<(li)[^>]*>", "- ", text)
    text = re.sub(r"</(li|div|pre|ul)>|<br\s*/?>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    lines = (line.rstrip() for line in html.unescape(text).splitlines())
    return "\n".join(line for line in lines if line)


def status_line(status: int | None, seconds: float | None) -> str:
    """``200 OK · 3.2 ms`` (status text colored by class)."""
    if status is None:
        return ""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    color = "#1a7f37" if status < 400 else "#b35900" if status < 500 else "#cf222e"
    took = f" · {seconds * 1000:.1f} ms" if seconds is not None else ""
    return f"<b style='color:{color}'>{status} {html.escape(phrase)}</b>{took}"


def _problem(item: dict[str, Any]) -> str:
    loc = [str(p) for p in item.get("loc", [])]
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    where = ".".join(loc) or "body"
    text = f"<code>{html.escape(where)}</code>: {html.escape(str(item.get('msg', item)))}"
    if "input" in item and item.get("type") != "missing":
        text += (
            f" (got <code>{html.escape(json.dumps(_shorten(item['input']), default=repr))}</code>)"
        )
    return f"<li>{text}</li>"


def detail_html(detail: Any, hint: str = "") -> str:
    """The server's error detail, readable: a 422 list becomes one line per problem."""
    if isinstance(detail, list) and all(isinstance(d, dict) for d in detail):
        body = "<ul style='margin:2px 0'>" + "".join(_problem(d) for d in detail) + "</ul>"
    elif isinstance(detail, str):
        body = f"<div>{html.escape(detail)}</div>"
    else:
        body = f"<pre style='margin:0'>{html.escape(pretty(detail))}</pre>"
    if hint:
        body += f"<div style='color:#777'>{html.escape(hint)}</div>"
    return f"<div class='falkit-error' style='color:#cf222e'>{body}</div>"
