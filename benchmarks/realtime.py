"""Realtime round trips: falkit's ``@fal.realtime`` against its baselines, in one run.

Each server runs in its own child process; the load comes from this process, one
sequential client at a time (send, wait for the answer, repeat), as an interactive
realtime client works. Rows, with their goals:

* small message, realtime vs a bare FastAPI WebSocket msgpack echo (goal >= 0.9x)
* small message, realtime vs sequential keep-alive HTTP POST to the same app (>= 4x)
* 4 MB float32 frame, realtime with the tensor codec vs the same array as JSON/base64
  over HTTP, decoded and re-encoded on both sides (>= 3x)

Short rounds alternate between the stacks; each ratio is the median over rounds.

    python benchmarks/realtime.py [--seconds 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import time
from collections.abc import Callable

import httpx
import msgpack
import numpy as np
from _load import child_server, free_port
from websockets.sync.client import connect

from falkit import codec

FALKIT = """
import base64, os, time
import numpy as np
from pydantic import BaseModel
import falkit as fal
from falkit import codec

class Msg(BaseModel):
    prompt: str
    i: int = 0

class Blob(BaseModel):
    data: str

class Bench(fal.App):
    @fal.endpoint("/echo")
    async def echo_http(self, input: Msg) -> Msg:
        return input

    @fal.endpoint("/b64")
    async def b64(self, input: Blob) -> Blob:
        array = np.frombuffer(base64.b64decode(input.data), dtype=np.float32)
        return Blob(data=base64.b64encode(array.tobytes()).decode())

    @fal.realtime("/rt")
    async def rt(self, input: Msg) -> Msg:
        return input

    @fal.realtime("/rt-sync")
    def rt_sync(self, input: Msg) -> Msg:
        return input

    @fal.realtime("/tensor", encode_message=codec.encode_tensors,
                  decode_message=codec.decode_tensors)
    async def tensor(self, input: dict) -> dict:
        return {"x": input["x"]}

server = fal.serve(Bench, port=int(os.environ["PORT"]))
while True:
    time.sleep(3600)
"""

BARE = """
import os
import msgpack
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
app.get("/health")(lambda: {})

@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = msgpack.unpackb(await websocket.receive_bytes())
            await websocket.send_bytes(msgpack.packb(message, use_bin_type=True))
    except WebSocketDisconnect:
        pass

uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
            access_log=False)
"""

SMALL = {"prompt": "hello realtime", "i": 7}
ARRAY = np.random.default_rng(0).random(1024 * 1024, dtype=np.float32)  # 4 MiB


def rate(step: Callable[[], None], seconds: float) -> float:
    """Round trips per second of ``step``, after a short warm-up."""
    warm = time.monotonic() + min(0.3, seconds / 4)
    while time.monotonic() < warm:
        step()
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        step()
        count += 1
    return count / (time.perf_counter() - began)


def ws_rate(url: str, frame: bytes, seconds: float, check: Callable[[bytes], None]) -> float:
    with connect(url, compression=None, max_size=None) as ws:

        def step() -> None:
            ws.send(frame)
            check(ws.recv(30))

        return rate(step, seconds)


def small_ws(url: str, seconds: float) -> float:
    frame = msgpack.packb(SMALL, use_bin_type=True)
    return ws_rate(url, frame, seconds, lambda b: None if msgpack.unpackb(b) == SMALL else 1 / 0)


def http_client() -> httpx.Client:
    # TCP_NODELAY on the client too: h11 writes headers and body separately, and Nagle
    # plus delayed ACKs would cap the HTTP baseline near 25 requests/s.
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(timeout=30, transport=httpx.HTTPTransport(socket_options=nodelay))


def small_http(url: str, seconds: float) -> float:
    with http_client() as client:

        def step() -> None:
            response = client.post(url, json=SMALL)
            assert response.json() == SMALL

        return rate(step, seconds)


def big_ws(url: str, seconds: float) -> float:
    with connect(url, compression=None, max_size=None) as ws:

        def step() -> None:
            ws.send(codec.encode_tensors({"x": ARRAY}))
            assert codec.decode_tensors(ws.recv(30))["x"].shape == ARRAY.shape

        return rate(step, seconds)


def big_http(url: str, seconds: float) -> float:
    with http_client() as client:

        def step() -> None:
            body = {"data": base64.b64encode(ARRAY.tobytes()).decode()}
            data = base64.b64decode(client.post(url, json=body).json()["data"])
            assert np.frombuffer(data, dtype=np.float32).shape == ARRAY.shape

        return rate(step, seconds)


# The goal compares like with like: the bare echo is an async handler. A sync handler pays
# a worker-thread hop per message (so that a slow one cannot stall every other session),
# as it does on fal; its row is shown for information (goal None).
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("rt small (async) / bare ws echo", "rt small (async handler)", "bare FastAPI ws echo", 0.9),
    ("rt small (sync) / bare ws echo", "rt small (sync handler)", "bare FastAPI ws echo", None),
    ("rt small (async) / HTTP", "rt small (async handler)", "keep-alive HTTP POST", 4.0),
    ("rt 4 MB / HTTP JSON+base64", "rt 4 MB tensor", "HTTP 4 MB JSON/base64", 3.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    with (
        child_server(FALKIT, free_port()) as falkit_url,
        child_server(BARE, free_port()) as bare_url,
    ):
        ws_falkit = falkit_url.replace("http", "ws", 1)
        ws_bare = bare_url.replace("http", "ws", 1)
        cases: dict[str, Callable[[], float]] = {
            "rt small (async handler)": lambda: small_ws(ws_falkit + "/rt", args.seconds),
            "bare FastAPI ws echo": lambda: small_ws(ws_bare + "/ws", args.seconds),
            "rt small (sync handler)": lambda: small_ws(ws_falkit + "/rt-sync", args.seconds),
            "keep-alive HTTP POST": lambda: small_http(falkit_url + "/echo", args.seconds),
            "rt 4 MB tensor": lambda: big_ws(ws_falkit + "/tensor", args.seconds),
            "HTTP 4 MB JSON/base64": lambda: big_http(falkit_url + "/b64", args.seconds),
        }
        # Short alternating rounds: on a shared machine the load drifts between rounds,
        # so each ratio is taken within one round and the median of the rounds reported.
        for _ in range(args.rounds):
            for name, case in cases.items():
                runs.setdefault(name, []).append(case())
    report(runs)


def report(runs: dict[str, list[float]]) -> None:
    print(f"{'case':28} {'median round trips/s':>21}")
    for name, values in runs.items():
        print(f"{name:28} {statistics.median(values):21.1f}")
    print(f"\n{'ratio (median of rounds)':34} {'value':>7} {'goal':>6}")
    for label, num, den, goal in RATIOS:
        ratio = statistics.median(a / b for a, b in zip(runs[num], runs[den], strict=True))
        if goal is None:
            print(f"{label:34} {ratio:6.2f}x {'-':>6}  (a thread hop per message, as on fal)")
            continue
        verdict = "ok" if ratio >= goal else "MISSED"
        print(f"{label:34} {ratio:6.2f}x {goal:5.1f}x  {verdict}")


if __name__ == "__main__":
    main()
