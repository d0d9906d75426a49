"""Kernel responsiveness: how long a trivial cell takes to execute in a real Jupyter kernel
(jupyter_client) while the falkit server inside that kernel is under load from another
process, against the same cell with the server idle, and with the same app in another
process under the same load. Goal: p99 <= 50 ms under each load.

The loads: ``http``, wrk POSTing to an endpoint; ``realtime``, a flood of realtime sessions
(falkit's load generator, each session sending its next small msgpack frame as soon as
the previous one is answered) on a sync handler; ``realtime-async``, the same on an async
handler. The cell's time is from the execute request leaving this process to its reply
arriving: what a user waits for after pressing shift-enter.

    python benchmarks/kernel_responsiveness.py [--seconds 5] [--connections 16]
        [--load http|realtime|realtime-async ...] [--without gc|switch|yield ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from _load import child_server, free_port
from jupyter_client.manager import start_new_kernel

import falkit

APP = """
import falkit as fal
from pydantic import BaseModel

class Input(BaseModel):
    prompt: str

class Output(BaseModel):
    output: str

class EchoApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt)

    @fal.realtime("/rt")
    def rt(self, input: Input) -> Output:
        return Output(output=input.prompt)

    @fal.realtime("/rt-async")
    async def rt_async(self, input: Input) -> Output:
        return Output(output=input.prompt)
"""
APP_CELL = APP + "\nserver = fal.serve(EchoApp)\nprint(server.url)\n"
# The baseline: the same app, served by a process of its own.
OUTSIDE = (
    APP
    + """
import os, time
server = fal.serve(EchoApp, port=int(os.environ["PORT"]))
while True:
    time.sleep(3600)
"""
)

# load -> (route, what the row says)
LOADS = {
    "http": ("/", "wrk, 16 connections"),
    "realtime": ("/rt", "realtime flood, sync handler"),
    "realtime-async": ("/rt-async", "realtime flood, async handler"),
}

# Code run in the kernel before the server starts that turns one measure off: a value that
# is not the interpreter's default is left alone by falkit, and a zero pause is no pause.
ABLATIONS = {
    "gc": "import gc; gc.set_threshold(701, 10, 10)",
    "switch": "import sys; sys.setswitchinterval(0.00501)",
    "yield": "import falkit.serving.kernel as kf; kf.PAUSE_S = 0.0",
}


def execute(kc: Any, code: str, timeout: float = 30.0) -> tuple[float, str]:
    """Run ``code``; return the seconds until its reply and the text it printed."""
    began = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    spent = time.perf_counter() - began
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    out = []
    while True:  # its output, up to the kernel going idle after it
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return spent, "".join(out)


def cell_times(kc: Any, seconds: float, gap: float = 0.02) -> list[float]:
    """Latencies (ms) of ``1 + 1`` cells run back to back for ``seconds``."""
    times: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        times.append(execute(kc, "1 + 1")[0] * 1000)
        time.sleep(gap)
    return times


def wrk_in_background(url: str, seconds: int, connections: int) -> Callable[[], float]:
    """Start wrk on ``url``; the returned function waits for it and gives its req/s."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.body = "{\\"prompt\\":\\"hi\\"}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
        stdout=subprocess.PIPE,
        text=True,
    )
    threading.Timer(seconds + 5, lambda: os.unlink(script.name)).start()

    def rate() -> float:
        out, _ = proc.communicate(timeout=seconds + 30)
        return float(out.split("Requests/sec:")[1].split()[0])

    return rate


def flood_in_background(url: str, route: str, seconds: int, sessions: int) -> Callable[[], float]:
    """Start a realtime flood (falkit's load generator, another process) on ``route``;
    the returned function waits for it and gives its messages/s."""
    reports: list[falkit.BenchReport] = []
    thread = threading.Thread(
        target=lambda: reports.append(
            falkit.bench(
                url,
                route,
                kind="realtime",
                n=1_000_000,
                c=sessions,
                payload={"prompt": "hi"},
                duration=seconds,
                timeout=30,
            )
        )
    )
    thread.start()

    def rate() -> float:
        thread.join(seconds + 120)
        if not reports:
            raise RuntimeError("the realtime flood did not report")
        if reports[0].errors:
            raise RuntimeError(f"realtime flood errors: {reports[0].error_kinds}")
        return reports[0].rps

    return rate


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def under_load(
    kc: Any, url: str, load: str, seconds: int, connections: int
) -> tuple[list[float], float]:
    """Cell latencies while ``load`` runs on ``url``, and the load's rate."""
    route = LOADS[load][0]
    if load == "http":
        rate = wrk_in_background(url + route, seconds, connections)
    else:
        rate = flood_in_background(url, route, seconds, connections)
    time.sleep(0.5)  # let the load build up
    loaded = cell_times(kc, seconds - 1)
    return loaded, rate()


def measure(seconds: int, connections: int, loads: list[str], setup: str = "") -> dict[str, Any]:
    """Cells with the server idle, under each load in the kernel, and (the baseline) with
    the same app in another process under the same load: the machine is as busy, but the
    kernel shares no GIL with the server."""
    km, kc = start_new_kernel(kernel_name="python3")
    m: dict[str, Any] = {}
    try:
        if setup:
            execute(kc, setup)
        _, out = execute(kc, APP_CELL, timeout=120)
        url = out.strip().splitlines()[-1]
        m["idle"] = cell_times(kc, min(seconds, 3))
        for load in loads:
            m[load] = under_load(kc, url, load, seconds, connections)
        execute(kc, "server.stop()")
        with child_server(OUTSIDE, free_port()) as other:
            for load in loads:
                m[f"outside {load}"] = under_load(kc, other, load, seconds, connections)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return m


def figures(
    seconds: int = 5, connections: int = 16, loads: tuple[str, ...] = ("http",), setup: str = ""
) -> dict[str, float]:
    """p50/p99 (ms) of a trivial cell: idle, under each load, and with the loaded server
    in another process; and each load's rate."""
    m = measure(seconds, connections, list(loads), setup)
    f = {"idle p50 ms": pct(m["idle"], 0.5), "idle p99 ms": pct(m["idle"], 0.99)}
    for load in loads:
        for key in (load, f"outside {load}"):
            cells, rate = m[key]
            f[f"{key} p50 ms"], f[f"{key} p99 ms"] = pct(cells, 0.5), pct(cells, 0.99)
            f[f"{key} rate"], f[f"{key} cells"] = rate, len(cells)
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16, help="or realtime sessions")
    parser.add_argument(
        "--load",
        action="append",
        choices=sorted(LOADS),
        help="the load on the server (default: http and realtime); may be repeated",
    )
    parser.add_argument("--setup", default="", help="code the kernel runs first (experiments)")
    parser.add_argument(
        "--without",
        action="append",
        choices=sorted(ABLATIONS),
        default=[],
        help="turn off one of falkit's kernel measures (falkit/serving/kernel.py), for its "
        "before/after figure; may be repeated",
    )
    args = parser.parse_args()
    loads = tuple(args.load or ["http", "realtime"])
    setup = "\n".join([*(ABLATIONS[name] for name in args.without), args.setup])
    f = figures(args.seconds, args.connections, loads, setup)
    rows = [("trivial cell, server idle", "idle", "")]
    for load in loads:
        what = LOADS[load][1].replace("16", str(args.connections))
        unit = "req/s" if load == "http" else f"msg/s, {args.connections} sessions"
        rows.append((f"in-kernel server, {what}", load, f"{f[f'{load} rate']:.0f} {unit}"))
    for load in loads:
        unit = "req/s" if load == "http" else "msg/s"
        rate = f"{f[f'outside {load} rate']:.0f} {unit}"
        rows.append((f"baseline in another process, {load}", f"outside {load}", rate))
    for label, key, note in rows:
        p50, p99 = f[f"{key} p50 ms"], f[f"{key} p99 ms"]
        print(f"{label:<52} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  {note}")
    for load in loads:
        verdict = "met" if f[f"{load} p99 ms"] <= 50 else "MISSED"
        print(f"goal: p99 under {load} load <= 50 ms: {verdict}")


if __name__ == "__main__":
    main()
