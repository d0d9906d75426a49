"""A dev server's safe defaults, as one pure ASGI middleware (``Guard``) in front of the app:
a ``Host`` allow-list, an API key (``Authorization: Key <key>``, fal's header), a CORS
allow-list that also governs WebSocket origins, and a request body limit answered with 413.

Why the ``Host`` header is checked first: a server on 127.0.0.1 is reachable from every page
the user's browser opens. A page on ``http://attacker.example:PORT`` whose name the attacker
re-resolves to 127.0.0.1 (DNS rebinding) is *same-origin* with the server as far as the
browser knows, so the Origin rule below lets it through; only its ``Host`` header
(``attacker.example:PORT``) gives it away. As Jupyter Server does (``local_hostnames``,
``allow_remote_access``), only loopback names and addresses, the address the server is bound
to and the names the user lists (``allowed_hosts``) are served; a server bound to every
interface (``0.0.0.0``) needs a key anyway and takes any name. On JupyterHub/Binder the
browser reaches the server only through jupyter-server-proxy, which forwards the hub's
``Host``: a request is taken as the proxy's when it carries the proxy's
``X-Forwarded-Context`` for this server's path, or, for a WebSocket handshake (which the
proxy forwards without it), when its Origin is the hub's own.

Why an ``Origin`` not on the list is refused, not merely left without CORS headers: a web
page the user visits can still *send* a simple cross-site POST to ``127.0.0.1`` (the browser
only hides the answer), which would run a handler on the user's GPU. So a request carrying
a foreign ``Origin`` gets 403 before it reaches a handler, a WebSocket handshake gets 403
too, and the same origin as the server (its ``/docs`` page) always passes. Clients that are
not browsers (httpx, websockets, fal_client, curl) send no ``Origin`` and are unaffected.

Hot path: with no key and no allow-list, a request costs one scan of its header list (for
``content-length``, ``origin`` and ``transfer-encoding``) and nothing else.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .messages import header, read_body, replay, send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest request body accepted by default (bytes); ``serve(..., max_body_size=...)``.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_PREFLIGHT_MAX_AGE = b"600"
_ALLOWED_HEADERS = b"authorization, content-type, accept"
#: What a page of an allowed origin may read off an answer besides the basic headers.
_EXPOSED_HEADERS = b"x-fal-request-id, x-fal-billable-units, server-timing"


def new_key() -> str:
    """A fresh random API key (32 bytes of entropy, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``127.0.0.0/8``, ``::1``)."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def mask_key(key: str) -> str:
    """``key`` as it may be shown where it would be saved: its first 4 characters only."""
    return key[:4] + "..." + f" ({len(key)} characters)"


def auth_headers(key: str | None) -> dict[str, str]:
    """The headers a client sends to a server guarded by ``key`` (none when ``None``)."""
    return {"Authorization": f"Key {key}"} if key else {}


@dataclass(frozen=True)
class SecuritySpec:
    """What ``Guard`` enforces: ``api_key`` (``None``: no key needed), the allowed browser
    ``cors_origins`` (``"*"`` allows any), ``max_body_size`` in bytes (``None``: no
    limit), and the ``Host`` names served besides loopback ones: ``allowed_hosts`` (lower
    case, no port; ``"*"`` allows any, as a server bound to every interface does)."""

    api_key: str | None = field(default=None, repr=False)  # never in a repr or a log
    cors_origins: tuple[str, ...] = ()
    max_body_size: int | None = DEFAULT_MAX_BODY_SIZE
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        host: str,
        auth: bool | str | None,
        cors_origins: Iterable[str] | None,
        max_body_size: int | None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> SecuritySpec:
        """The spec for a server on ``host``: ``auth=None`` means a key is generated exactly
        when ``host`` is not loopback; ``True`` always generates one, a string is the key,
        ``False`` turns keys off. ``host`` itself is an allowed ``Host`` name (any name,
        when it is every interface). Raises ``ValueError`` on a malformed option."""
        if isinstance(auth, str):
            if not auth.strip() or any(c.isspace() for c in auth):
                raise ValueError("auth must be a non-empty key without spaces, True or False")
            key: str | None = auth
        elif auth is None:
            key = None if is_loopback(host) else new_key()
        elif isinstance(auth, bool):
            key = new_key() if auth else None
        else:
            raise ValueError(f"auth must be True, False, None or a key string, got {auth!r}")
        origins = tuple(
            _origin(o)
            for o in ([cors_origins] if isinstance(cors_origins, str) else cors_origins or ())
        )
        if max_body_size is not None and (
            not isinstance(max_body_size, int)
            or isinstance(max_body_size, bool)
            or max_body_size < 1
        ):
            raise ValueError(f"max_body_size must be a positive int or None, got {max_body_size!r}")
        names = [allowed_hosts] if isinstance(allowed_hosts, str) else list(allowed_hosts or ())
        hosts = {_host_name(name) for name in names}
        hosts.add("*" if host in WILDCARD_HOSTS else _host_name(host))
        return cls(key, origins, max_body_size, tuple(sorted(hosts - _always_allowed(hosts))))

    @property
    def active(self) -> bool:
        """False when there is nothing to check (no key, no list, no body limit, any
        host)."""
        return self != SecuritySpec(max_body_size=None, allowed_hosts=("*",))

    def allows_host(self, name: str) -> bool:
        """True when ``name`` (a ``Host`` header's name: lower case, no port) is served."""
        return (
            "*" in self.allowed_hosts
            or name in self.allowed_hosts
            or name == "localhost"
            or name.endswith(".localhost")  # RFC 6761: loopback, never an attacker's name
            or _is_loopback_address(name)
            or not name  # no Host at all: HTTP/1.0 tools, never a browser
        )

    def allows(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins


def _host_name(value: str) -> str:
    """The name part of a ``Host`` value (``[::1]:80`` -> ``::1``), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_loopback_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _always_allowed(names: set[str]) -> set[str]:
    return {n for n in names if n != "*" and SecuritySpec(allowed_hosts=()).allows_host(n)}


def _origin(value: str) -> str:
    if value == "*":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(
            f"cors origin {value!r} must look like 'https://example.com' or "
            "'http://localhost:3000' (scheme and host, no path), or be '*'"
        )
    return f"{parts.scheme}://{parts.netloc}"


class _Headers:
    """The few request headers the guard reads, from one pass over the raw list."""

    __slots__ = (
        "authorization",
        "chunked",
        "content_length",
        "forwarded_context",
        "host",
        "origin",
    )

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.authorization = self.origin = self.host = self.forwarded_context = b""
        self.content_length: bytes | None = None
        self.chunked = False
        for name, value in raw:
            if name == b"content-length":
                self.content_length = value
            elif name == b"origin":
                self.origin = value
            elif name == b"authorization":
                self.authorization = value
            elif name == b"host":
                self.host = value
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"x-forwarded-context":
                self.forwarded_context = value


class Guard:
    """ASGI middleware enforcing a ``SecuritySpec`` on HTTP requests and WebSocket
    handshakes; lifespan and other scopes pass through untouched."""

    def __init__(self, app: ASGIApp, spec: SecuritySpec, proxy_root: str = "") -> None:
        self.app = app
        self.spec = spec
        self._key = f"Key {spec.api_key}".encode() if spec.api_key else None
        # Behind jupyter-server-proxy (a hub): the path it serves this server under.
        self._proxy_root = proxy_root.encode("latin-1")
        self._hosts: dict[bytes, bool] = {}  # Host header -> allowed, remembered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _Headers(scope["headers"])
        origin = headers.origin.decode("latin-1")
        if not self._host_allowed(headers, scope):
            host = headers.host.decode("latin-1")
            await self._refuse(scope, receive, send, 403, _foreign_host(host))
            return
        foreign = (
            bool(origin)
            and not self._same_origin(origin, headers, scope)
            and not (self.spec.allows(origin))
        )
        if kind == "websocket":
            await self._websocket(scope, receive, send, headers, foreign, origin)
            return
        if scope["method"] == "OPTIONS" and origin and _is_preflight(scope):
            requested = header(scope, b"access-control-request-headers") or b""
            await self._preflight(send, origin, foreign, requested)
            return
        refusal = self._refusal(headers, foreign, origin)
        if refusal is not None:
            await _reply(send, *refusal)
            return
        if headers.chunked and self.spec.max_body_size is not None:
            buffered = await self._buffered(receive, send)
            if buffered is None:
                return
            receive = buffered
        if origin and not foreign:
            send = _with_cors(send, origin)
        await self.app(scope, receive, send)

    # -- decisions --

    def _host_allowed(self, headers: _Headers, scope: Scope) -> bool:
        allowed = self._hosts.get(headers.host)
        if allowed is None:
            allowed = self.spec.allows_host(_host_name(headers.host.decode("latin-1")))
            if len(self._hosts) < 256:  # a bounded memo: Host values are the client's
                self._hosts[headers.host] = allowed
        if allowed or not self._proxy_root:
            return allowed
        if scope["type"] == "http":
            return headers.forwarded_context == self._proxy_root
        origin = headers.origin.decode("latin-1")
        return bool(origin) and self._same_origin(origin, headers, scope)

    def _same_origin(self, origin: str, headers: _Headers, scope: Scope) -> bool:
        parts = urlsplit(origin)
        if parts.netloc.encode("latin-1") != headers.host:
            return False
        # Behind a hub the proxy (and the hub's TLS) sits between: only the name is compared.
        secure = scope.get("scheme") in ("https", "wss")
        return bool(self._proxy_root) or parts.scheme == ("https" if secure else "http")

    def _authorized(self, headers: _Headers) -> bool:
        return self._key is None or hmac.compare_digest(headers.authorization, self._key)

    def _refusal(self, headers: _Headers, foreign: bool, origin: str) -> tuple[int, str] | None:
        if foreign:
            return 403, (
                f"origin {origin} is not allowed; serve with cors_origins=[{origin!r}] "
                "to let that page call this server"
            )
        if not self._authorized(headers):
            return 401, "missing or wrong API key: send the header 'Authorization: Key <key>'"
        limit = self.spec.max_body_size
        if limit is not None and headers.content_length is not None:
            try:
                size = int(headers.content_length)
            except ValueError:
                return 400, "malformed Content-Length header"
            if size > limit:
                return 413, _too_large(size, limit)
        return None

    # -- answers --

    async def _websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: _Headers,
        foreign: bool,
        origin: str,
    ) -> None:
        if foreign or not self._authorized(headers):
            await _close_handshake(receive, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, detail: str
    ) -> None:
        if scope["type"] == "websocket":
            await _close_handshake(receive, send)
        else:
            await _reply(send, status, detail)

    async def _preflight(
        self, send: Send, origin: str, foreign: bool, requested: bytes = b""
    ) -> None:
        if foreign:
            await _reply(send, 403, f"origin {origin} is not allowed (CORS preflight)")
            return
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
            # fal-js sends x-fal-* headers (the proxy's target, hints, lifecycles): a page
            # whose origin is allowed may send what it asks for.
            (b"access-control-allow-headers", requested or _ALLOWED_HEADERS),
            (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _buffered(self, receive: Receive, send: Send) -> Receive | None:
        """A chunked body is read up to the limit first (it declares no length); the app
        then reads it from memory. ``None`` when it was too large (413 already sent)."""
        limit = self.spec.max_body_size
        assert limit is not None
        body, messages = await read_body(receive, limit=limit)
        if len(body) > limit:
            await _reply(send, 413, _too_large(len(body), limit, at_least=True))
            return None
        if messages[-1]["type"] == "http.request":
            messages = [{"type": "http.request", "body": body, "more_body": False}]
        return replay(messages, receive)


async def _close_handshake(receive: Receive, send: Send) -> None:
    # Closing before accepting makes the server answer the handshake with 403.
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def _foreign_host(host: str) -> str:
    return (
        f"host {host!r} is not allowed: this server answers its loopback names and "
        "addresses. To reach it under another name, serve with "
        f"allowed_hosts=[{_host_name(host)!r}] (or `--allow-host {_host_name(host)}`)"
    )


def _is_preflight(scope: Scope) -> bool:
    return header(scope, b"access-control-request-method") is not None


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (
        f"request body of {more}{size} bytes exceeds the limit of {limit} bytes; "
        "raise it with falkit.serve(..., max_body_size=...)"
    )


def _with_cors(send: Send, origin: str) -> Send:
    value = origin.encode("latin-1")

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                *message.get("headers", ()),
                (b"access-control-allow-origin", value),
                (b"access-control-expose-headers", _EXPOSED_HEADERS),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors


async def _reply(send: Send, status: int, detail: str) -> None:
    headers = [(b"www-authenticate", b"Key")] if status == 401 else []
    await send_json(send, status, {"detail": detail}, headers)
