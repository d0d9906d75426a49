"""The load generator behind ``falkit.bench``, run in its own process so that it does not
compete with the served app for the kernel's GIL::

    echo '{"url": "http://127.0.0.1:8000/", "n": 200, "c": 8}' | python -m falkit.bench.loadgen

It reads one JSON config on stdin (``url``, ``kind`` "http" or "realtime", ``n`` requests,
``c`` connections, ``payload``, ``duration`` and ``timeout`` in seconds), sends at most
``n`` requests over ``c`` keep-alive connections, stops taking new ones after ``duration``,
and writes one JSON result on stdout: per-request latencies (ms), error counts by kind, the
wall time, and the ``Server-Timing`` phases the server reported.

HTTP is spoken directly on asyncio streams (HTTP/1.1, keep-alive, content-length or
chunked answers): a general client (httpx) spends more CPU per request than a small echo
server does, and on a small machine would measure itself. Realtime routes use
``websockets`` and msgpack frames, as fal's clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024


@dataclass
class Tally:
    """What the workers share (one event loop: no locks)."""

    left: int
    deadline: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    timing: list[str] = field(default_factory=list)

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() > self.deadline:
            return False
        self.left -= 1
        return True

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


# -- HTTP ----------------------------------------------------------------------------------


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, lower-cased headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.read()
    return status, headers, body


def _request(url: str, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def _http_worker(tally: Tally, url: str, body: bytes, timeout: float) -> None:
    host, port, request = _request(url, body)
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while tally.take():
        began = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            reader, writer = conn
            writer.write(request)
            status, headers, _ = await asyncio.wait_for(read_response(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
            tally.error("timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__)
            _close(conn)
            conn = None
            continue
        tally.latencies.append((time.perf_counter() - began) * 1000)
        if status >= 400:
            tally.error(f"HTTP {status}")
        if "server-timing" in headers:
            tally.timing.append(headers["server-timing"])
        if headers.get("connection", "").lower() == "close":
            _close(conn)
            conn = None
    _close(conn)


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()


# -- realtime ------------------------------------------------------------------------------


async def _rt_round_trip(ws: Any, frame: bytes) -> str | None:
    """Send one input and wait for its output; an error kind, or ``None`` on success."""
    await ws.send(frame)
    while True:
        reply = await ws.recv()
        if isinstance(reply, bytes):
            return None
        message = json.loads(reply)
        if isinstance(message, dict) and message.get("type") == "x-fal-error":
            return f"x-fal-error {message.get('error')}"
        # other text frames (x-fal-message timings) are metadata: skipped as fal_client does


async def _rt_worker(tally: Tally, url: str, frame: bytes, timeout: float) -> None:
    from websockets.asyncio.client import connect

    ws: Any = None
    while tally.take():
        began = time.perf_counter()
        try:
            if ws is None:
                ws = await asyncio.wait_for(
                    connect(url, max_size=None, compression=None, open_timeout=timeout), timeout
                )
            failure = await asyncio.wait_for(_rt_round_trip(ws, frame), timeout)
        except Exception as exc:  # any failure of this round trip is an error to count
            tally.error("timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__)
            await _rt_close(ws)
            ws = None
            continue
        tally.latencies.append((time.perf_counter() - began) * 1000)
        if failure is not None:
            tally.error(failure)
            await _rt_close(ws)  # fal closes the session after an error frame
            ws = None
    await _rt_close(ws)


async def _rt_close(ws: Any) -> None:
    if ws is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)


# -- driver --------------------------------------------------------------------------------


async def run(config: dict[str, Any]) -> dict[str, Any]:
    """Drive the target as ``config`` says and return the result (see the module doc)."""
    n, c = int(config.get("n", 1000)), int(config.get("c", 8))
    timeout = float(config.get("timeout", 10.0))
    tally = Tally(left=n, deadline=time.monotonic() + float(config.get("duration", 30.0)))
    worker: Callable[[Tally, str, bytes, float], Awaitable[None]]
    if config.get("kind", "http") == "realtime":
        import msgpack

        data, worker = msgpack.packb(config.get("payload")), _rt_worker
    else:
        data, worker = json.dumps(config.get("payload")).encode(), _http_worker
    began = time.perf_counter()
    await asyncio.gather(
        *(worker(tally, config["url"], data, timeout) for _ in range(max(1, min(c, n))))
    )
    return {
        "seconds": time.perf_counter() - began,
        "latencies_ms": [round(x, 4) for x in tally.latencies],
        "errors": tally.errors,
        "server_timing": tally.timing,
        "unsent": tally.left,
    }


def main() -> None:
    config = json.loads(sys.stdin.read())
    json.dump(asyncio.run(run(config)), sys.stdout)


if __name__ == "__main__":
    main()
