"""Realtime round trips: falkit's ``@fal.realtime`` against its baselines, in one run.

Each server runs in its own child process. Rows, with their goals:

* one session, small message, realtime vs a bare FastAPI WebSocket msgpack echo: the async
  handler and the sync (``def``) handler each >= 0.9x; and the same bare echo with its
  handler run off the loop as cheaply as Python allows (one thread, a SimpleQueue there,
  ``call_soon_threadsafe`` back): the floor under a sync handler that never blocks the
  loop, and the sync handler against it
* small message, realtime vs sequential keep-alive HTTP POST to the same app (>= 4x)
* 4 MB float32 frame, realtime with the tensor codec vs the same array as JSON/base64
  over HTTP, decoded and re-encoded on both sides (>= 3x)

These come from one sequential client in this process (send, wait for the answer,
repeat), as an interactive realtime client works. Then the scaling points, with load from
``falkit.bench``'s load generator (another process): 1, 8 and 64 concurrent sessions of
small messages, and one session with messages of 100 B to 4 MB, for the async handler, the
sync handler and the bare echo at the same point; and two heavy sync handlers (1 ms asleep,
GIL released, as when waiting on a device; ~1 ms of Python, GIL held) at 1, 8 and 64
sessions. The plot goes to ``benchmarks/results/realtime_scaling.png``.

Short rounds alternate between the stacks; each ratio is the median over rounds of the
ratio within a round.

    python benchmarks/realtime.py [--seconds 1] [--rounds 5] [--no-scaling] [--against DIR]

``--against DIR`` also serves the same app from the falkit package in ``DIR`` (another
checkout, e.g. ``mkdir /tmp/before && git archive HEAD falkit | tar -x -C /tmp/before``)
and measures it in the same rounds: a before/after figure that the machine's load
drifting between two runs cannot blur.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgpack
import numpy as np
from _load import child_server, free_port
from websockets.sync.client import connect

import falkit
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

    @fal.realtime("/rt-sleep")
    def rt_sleep(self, input: Msg) -> Msg:
        time.sleep(0.001)  # the GIL is released, as while waiting on a device
        return input

    @fal.realtime("/rt-python")
    def rt_python(self, input: Msg) -> Msg:
        sum(range(25_000))  # ~1 ms of Python with the GIL held
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
import asyncio
import os
import queue
import threading
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


# The same echo with its (plain ``def``) handler off the event loop, as cheaply as Python
# allows: one long-lived thread fed through a SimpleQueue, answers handed back with
# call_soon_threadsafe. Two thread handoffs a message, nothing else: what not blocking the
# loop costs by itself, the floor under any sync handler that keeps fal's rule.
def handler(message):
    return message


jobs = queue.SimpleQueue()


def worker():
    while True:
        loop, future, message = jobs.get()
        loop.call_soon_threadsafe(future.set_result, handler(message))


threading.Thread(target=worker, daemon=True).start()


@app.websocket("/ws-thread")
async def echo_in_thread(websocket: WebSocket) -> None:
    await websocket.accept()
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = msgpack.unpackb(await websocket.receive_bytes())
            future = loop.create_future()
            jobs.put((loop, future, message))
            await websocket.send_bytes(msgpack.packb(await future, use_bin_type=True))
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


# Both handlers are held to the bare echo (an async handler): a sync handler must not cost
# a realtime client much more, though it runs in a worker thread so that a slow one
# cannot stall the other sessions.
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("rt small (async) / bare ws echo", "rt small (async handler)", "bare FastAPI ws echo", 0.9),
    ("rt small (sync) / bare ws echo", "rt small (sync handler)", "bare FastAPI ws echo", 0.9),
    # The floor: the bare echo itself pays this much for running its handler in a thread.
    (
        "bare in a thread / bare ws echo",
        "bare ws echo, handler in a thread",
        "bare FastAPI ws echo",
        None,
    ),
    (
        "rt small (sync) / bare in a thread",
        "rt small (sync handler)",
        "bare ws echo, handler in a thread",
        0.9,
    ),
    ("rt small (async) / HTTP", "rt small (async handler)", "keep-alive HTTP POST", 4.0),
    ("rt 4 MB / HTTP JSON+base64", "rt 4 MB tensor", "HTTP 4 MB JSON/base64", 3.0),
    # with --against: this checkout against the other one
    ("rt small (sync) / against", "rt small (sync handler)", "rt small (sync, against)", None),
    ("rt small (async) / against", "rt small (async handler)", "rt small (async, against)", None),
]


def against_source(directory: str) -> str:
    """The falkit app's program, importing falkit from ``directory`` (a checkout)."""
    path = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(path, "falkit", "__init__.py")):
        raise SystemExit(f"--against: no falkit package in {path}")
    check = f"import falkit\nassert falkit.__file__.startswith({path!r}), falkit.__file__\n"
    return f"import sys\nsys.path.insert(0, {path!r})\n{check}{FALKIT}"


# -- scaling: sessions and message size, load from another process -----------------------

SESSIONS = (1, 8, 64)
SIZES = (100, 16 << 10, 256 << 10, 4 << 20)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# (name, route) of the falkit app's handlers
FALKIT_ROUTES = [
    ("async", "/rt"),
    ("sync", "/rt-sync"),
    ("sync, 1 ms asleep", "/rt-sleep"),
    ("sync, 1 ms Python", "/rt-python"),
]
HEAVY = {"sync, 1 ms asleep", "sync, 1 ms Python"}
Point = tuple[str, int]  # ("sessions", n) or ("size", bytes)
POINTS: list[Point] = [("sessions", n) for n in SESSIONS] + [("size", s) for s in SIZES]


def size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MB"
    return f"{size >> 10} KB" if size >= 1 << 10 else f"{size} B"


def point_label(point: Point) -> str:
    kind, value = point
    if kind == "size":
        return f"{size_label(value)} message"
    return f"{value} session" + ("s" if value > 1 else "")


def load(base: str, route: str, point: Point, seconds: float) -> dict[str, float]:
    """Messages per second and p50 (ms) of ``point`` on the realtime ``route``."""
    kind, value = point
    sessions, size = (value, 16) if kind == "sessions" else (1, value)
    report = falkit.bench(
        base,
        route,
        kind="realtime",
        n=1_000_000,
        c=sessions,
        payload={"prompt": "x" * size},
        duration=seconds,
        timeout=30,
    )
    if report.errors:
        raise RuntimeError(f"{base}{route}: errors {report.error_kinds}")
    return {"rps": report.rps, "p50": report.p50_ms or 0.0}


def handlers(urls: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, server URL, route) of every handler measured, the bare echo first."""
    found = [("bare", urls["bare"], "/ws")]
    found += [(name, urls["falkit"], route) for name, route in FALKIT_ROUTES]
    if "against" in urls:
        found += [(f"{name} [against]", urls["against"], r) for name, r in FALKIT_ROUTES]
    return found


def is_heavy(name: str) -> bool:
    return name.removesuffix(" [against]") in HEAVY


def scaling(urls: dict[str, str], seconds: float, rounds: int) -> dict[Any, list[Any]]:
    """Per (handler, point): the round's figures; and per round the ratios to the bare
    echo at the same point, measured right before them."""
    runs: dict[Any, list[Any]] = {}
    for _, url, route in handlers(urls):
        load(url, route, ("sessions", 8), 0.5)  # warm
    for _ in range(rounds):
        for point in POINTS:
            bare = None
            for name, url, route in handlers(urls):
                if is_heavy(name) and point[0] != "sessions":
                    continue
                figures = load(url, route, point, seconds)
                bare = bare or figures
                figures["ratio"] = figures["rps"] / bare["rps"]
                runs.setdefault((name, point), []).append(figures)
    return runs


def scaling_table(runs: dict[Any, list[Any]]) -> dict[tuple[str, Point], dict[str, float]]:
    res = {
        key: {f: statistics.median(r[f] for r in rs) for f in ("rps", "p50", "ratio")}
        for key, rs in runs.items()
    }
    names = list(dict.fromkeys(name for name, _ in res))
    title = "msg/s (x bare, same point)"
    width = max(len(title), *(len(name) for name in names)) + 2
    head = "".join(f"{point_label(point):>17}" for point in POINTS)
    print(f"\n{title:<{width}}{head}")
    for name in names:
        cells = [res.get((name, point)) for point in POINTS]
        row = (f"{c['rps']:>9.0f} ({c['ratio']:4.2f}x)" if c else f"{'-':>17}" for c in cells)
        print(f"{name:<{width}}" + "".join(row))
    print(f"\n{'p50 ms':<{width}}{head}")
    for name in names:
        cells = [res.get((name, point)) for point in POINTS]
        row = (f"{c['p50']:>17.2f}" if c else f"{'-':>17}" for c in cells)
        print(f"{name:<{width}}" + "".join(row))
    return res


def scaling_plot(res: dict[tuple[str, Point], dict[str, float]], path: str) -> str | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name in dict.fromkeys(name for name, _ in res):
        marker = "o" if name == "bare" else "s"
        line = ":" if name.endswith("[against]") else "--" if is_heavy(name) else "-"
        values = [res[(name, ("sessions", n))]["rps"] for n in SESSIONS]
        (drawn,) = left.plot(SESSIONS, values, line, marker=marker, label=name)
        if not is_heavy(name):
            sizes = [res[(name, ("size", s))]["p50"] for s in SIZES]
            right.plot(SIZES, sizes, line, marker=marker, color=drawn.get_color())
    left.set(xscale="log", yscale="log", xlabel="concurrent sessions (small message)")
    left.set(ylabel="messages/s")
    left.set_xticks(SESSIONS, [str(n) for n in SESSIONS])
    right.set(xscale="log", yscale="log", xlabel="message size (one session)", ylabel="p50 ms")
    right.set_xticks(SIZES, [size_label(s) for s in SIZES])
    fig.legend(loc="outside right upper", fontsize="small")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    FigureCanvasAgg(fig).print_png(path)
    return path


def row_cases(
    urls: dict[str, str], http_url: str, seconds: float
) -> dict[str, Callable[[], float]]:
    """The rows' cases, in the order each round runs them: the small-message ones that
    are compared with each other next to each other."""
    ws, bare = urls["falkit"], urls["bare"]
    cases: dict[str, Callable[[], float]] = {
        "rt small (async handler)": lambda: small_ws(ws + "/rt", seconds),
        "bare FastAPI ws echo": lambda: small_ws(bare + "/ws", seconds),
        "rt small (sync handler)": lambda: small_ws(ws + "/rt-sync", seconds),
        "bare ws echo, handler in a thread": lambda: small_ws(bare + "/ws-thread", seconds),
    }
    if "against" in urls:
        other = urls["against"]
        cases["rt small (sync, against)"] = lambda: small_ws(other + "/rt-sync", seconds)
        cases["rt small (async, against)"] = lambda: small_ws(other + "/rt", seconds)
    cases["keep-alive HTTP POST"] = lambda: small_http(http_url + "/echo", seconds)
    cases["rt 4 MB tensor"] = lambda: big_ws(ws + "/tensor", seconds)
    cases["HTTP 4 MB JSON/base64"] = lambda: big_http(http_url + "/b64", seconds)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-scaling", action="store_true", help="the rows only")
    parser.add_argument("--against", metavar="DIR", help="also a falkit checkout in DIR")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        serving = {"falkit": FALKIT, "bare": BARE}
        if args.against:
            serving["against"] = against_source(args.against)
        http = {k: stack.enter_context(child_server(v, free_port())) for k, v in serving.items()}
        urls = {k: url.replace("http", "ws", 1) for k, url in http.items()}
        cases = row_cases(urls, http["falkit"], args.seconds)
        # Short alternating rounds: on a shared machine the load drifts between rounds,
        # so each ratio is taken within one round and the median of the rounds reported.
        for _ in range(args.rounds):
            for name, case in cases.items():
                runs.setdefault(name, []).append(case())
        report(runs)
        if args.no_scaling:
            return
        res = scaling_table(scaling(urls, args.seconds, max(1, min(args.rounds, 3))))
    saved = scaling_plot(res, os.path.join(RESULTS, "realtime_scaling.png"))
    print(f"plot: {saved}" if saved else "plot skipped: matplotlib is not installed")


def report(runs: dict[str, list[float]]) -> None:
    print(f"{'case':34} {'median round trips/s':>21}")
    for name, values in runs.items():
        print(f"{name:34} {statistics.median(values):21.1f}")
    print(f"\n{'ratio (median of rounds)':34} {'value':>7} {'goal':>6}")
    for label, num, den, goal in RATIOS:
        if num not in runs or den not in runs:
            continue
        ratio = statistics.median(a / b for a, b in zip(runs[num], runs[den], strict=True))
        if goal is None:
            print(f"{label:34} {ratio:6.2f}x {'-':>6}")
            continue
        verdict = "ok" if ratio >= goal else "MISSED"
        print(f"{label:34} {ratio:6.2f}x {goal:5.1f}x  {verdict}")


if __name__ == "__main__":
    main()
