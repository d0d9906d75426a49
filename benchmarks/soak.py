"""Soak: many mixed requests from 50 concurrent clients in another process, against a server
running in this process (as a kernel hosts it). Checks zero errors, every request sent
answered with its own payload, and states the server process's RSS growth.

The mix, by request number: HTTP POST, a message on a WebSocket echo route, an input on a
``@fal.realtime`` route (msgpack), in turn. Each client reopens its WebSocket and realtime
sessions every 20 uses, so sessions open and close all along the run.

    python benchmarks/soak.py                      # 10,000 requests, 50 clients
    python benchmarks/soak.py --requests 1000 --clients 20
    python benchmarks/soak.py --seconds 20         # stop sending after 20 s (still all answered)

Exit status 1 when any request failed or went unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from fastapi import WebSocket
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

import falkit as fal

REOPEN_EVERY = 20
KINDS = ("http", "websocket", "realtime")


class Item(BaseModel):
    id: int
    text: str = ""


class SoakApp(fal.App):
    @fal.endpoint("/")
    def echo(self, input: Item) -> Item:
        return input

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            return

    @fal.realtime("/rt")
    def rt(self, input: Item) -> Item:
        return input


# -- the client process ------------------------------------------------------------------


class _Sessions:
    """One client's WebSocket and realtime connections, reopened every ``REOPEN_EVERY``."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.open: dict[str, Any] = {}
        self.uses: dict[str, int] = {}

    async def get(self, kind: str) -> Any:
        from websockets.asyncio.client import connect

        if self.uses.get(kind, 0) >= REOPEN_EVERY:
            await self.open.pop(kind).close()
        if kind not in self.open:
            path = "/ws" if kind == "websocket" else "/rt"
            self.open[kind] = await connect(self.ws_url + path, max_size=None, open_timeout=30)
            self.uses[kind] = 0
        self.uses[kind] += 1
        return self.open[kind]

    async def close(self) -> None:
        for conn in self.open.values():
            await conn.close()


async def _one(kind: str, i: int, http: Any, sessions: _Sessions) -> None:
    import msgpack

    payload = {"id": i, "text": f"soak-{i}"}
    if kind == "http":
        response = await http.post("/", json=payload)
        response.raise_for_status()
        got = response.json()
    elif kind == "websocket":
        ws = await sessions.get(kind)
        await ws.send(json.dumps(payload))
        got = json.loads(await asyncio.wait_for(ws.recv(), 30))
    else:
        rt = await sessions.get(kind)
        await rt.send(msgpack.packb(payload))
        frame = await asyncio.wait_for(rt.recv(), 30)
        if isinstance(frame, str):
            raise RuntimeError(f"error frame: {frame}")
        got = msgpack.unpackb(frame)
    if got != payload:
        raise RuntimeError(f"answer {got!r} is not request {payload!r}")


async def _client_main(url: str, total: int, clients: int, seconds: float | None) -> dict:
    import httpx

    counter = itertools.count()
    stop_at = time.monotonic() + seconds if seconds else float("inf")
    tally: dict[str, Any] = {
        "sent": 0,
        "answered": 0,
        "errors": [],
        "by_kind": dict.fromkeys(KINDS, 0),
    }

    async def worker() -> None:
        sessions = _Sessions("ws" + url[len("http") :])
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while (i := next(counter)) < total and time.monotonic() < stop_at:
                kind = KINDS[i % len(KINDS)]
                tally["sent"] += 1
                try:
                    await _one(kind, i, http, sessions)
                except Exception as exc:
                    tally["errors"].append(f"{kind} #{i}: {exc!r}")
                    sessions.open.pop(kind, None)
                    continue
                tally["answered"] += 1
                tally["by_kind"][kind] += 1
        await sessions.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    tally["seconds"] = time.perf_counter() - began
    return tally


def client_process(url: str, total: int, clients: int, seconds: float | None) -> None:
    """The load generator's entry point (runs in the child process); prints one JSON line."""
    print(json.dumps(asyncio.run(_client_main(url, total, clients, seconds))), flush=True)


# -- the server process ------------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.peak = rss_mib()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, rss_mib())


def soak(
    server: fal.Server, requests: int, clients: int = 50, seconds: float | None = None
) -> dict[str, Any]:
    """Drive ``server`` (a served ``SoakApp``) from a child process; the client's tally plus
    the server's RSS at start, peak and end (MiB) and its own request stats."""
    with server.client as client:  # warm every path once: imports and first-use caches
        client.call("/", {"id": -1})
    gc.collect()
    start = rss_mib()
    sampler = _RssSampler()
    sampler.start()
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import soak; "
        f"soak.client_process({server.url!r}, {requests}, {clients}, {seconds!r})"
    )
    limit = 600 if seconds is None else seconds + 120
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=limit, check=False
    )
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"client process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    tally = json.loads(proc.stdout.strip().splitlines()[-1])
    gc.collect()
    tally.update(rss_start=start, rss_peak=sampler.peak, rss_end=rss_mib(), stats=server.stats())
    return tally


def report(tally: dict[str, Any], clients: int) -> str:
    rate = tally["answered"] / tally["seconds"] if tally["seconds"] else 0.0
    kinds = ", ".join(f"{k} {v}" for k, v in tally["by_kind"].items())
    lines = [
        f"soak: {tally['sent']} requests from {clients} clients in another process "
        f"({kinds}) in {tally['seconds']:.1f} s, {rate:.0f} req/s",
        f"answered {tally['answered']} of {tally['sent']}, errors {len(tally['errors'])} "
        "(goal: all answered, 0 errors)",
        f"server RSS MiB: start {tally['rss_start']:.0f}, peak {tally['rss_peak']:.0f}, "
        f"end {tally['rss_end']:.0f}; growth {tally['rss_end'] - tally['rss_start']:+.1f} "
        f"(peak {tally['rss_peak'] - tally['rss_start']:+.1f}) (goal: growth < 64 MiB)",
        f"server HTTP stats: {tally['stats']}",
    ]
    lines += [f"  error: {e}" for e in tally["errors"][:10]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=None, help="stop sending after this")
    args = parser.parse_args()
    server = fal.serve(SoakApp)
    try:
        tally = soak(server, args.requests, args.clients, args.seconds)
    finally:
        server.stop()
    print(report(tally, args.clients))
    ok = not tally["errors"] and tally["answered"] == tally["sent"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
