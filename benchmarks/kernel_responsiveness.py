"""Kernel responsiveness: how long a trivial cell takes to execute in a real Jupyter kernel
(jupyter_client) while the falkit server inside that kernel is under wrk load, against the
same cell with the server idle. Goal: p99 <= 50 ms under load.

The cell's time is from the execute request leaving this process to its reply arriving:
what a user waits for after pressing shift-enter.

    python benchmarks/kernel_responsiveness.py [--seconds 5] [--connections 16]
        [--without gc|switch|yield ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

from _load import child_server, free_port
from http_overhead import STACKS
from jupyter_client.manager import start_new_kernel

APP_CELL = """
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

server = fal.serve(EchoApp)
print(server.url)
"""


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


def wrk_in_background(url: str, seconds: int, connections: int) -> subprocess.Popen[str]:
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
    return proc


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def under_load(kc: Any, url: str, seconds: int, connections: int) -> tuple[list[float], float]:
    """Cell latencies while wrk loads ``url``, and wrk's req/s."""
    wrk = wrk_in_background(url + "/", seconds, connections)
    time.sleep(0.5)  # let the load build up
    loaded = cell_times(kc, seconds - 1)
    wrk_out, _ = wrk.communicate(timeout=seconds + 30)
    return loaded, float(wrk_out.split("Requests/sec:")[1].split()[0])


def measure(seconds: int, connections: int, setup: str = "") -> dict[str, Any]:
    """Cells with the server idle, under load in the kernel, and (the baseline) with the
    same app in another process under the same load: the machine is as busy, but the
    kernel shares no GIL with the server."""
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        if setup:
            execute(kc, setup)
        _, out = execute(kc, APP_CELL, timeout=120)
        url = out.strip().splitlines()[-1]
        idle = cell_times(kc, min(seconds, 3))
        loaded, rps = under_load(kc, url, seconds, connections)
        execute(kc, "server.stop()")
        with child_server(STACKS["falkit"], free_port()) as other:
            outside, outside_rps = under_load(kc, other, seconds, connections)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {
        "idle": idle,
        "loaded": loaded,
        "rps": rps,
        "outside": outside,
        "outside_rps": outside_rps,
    }


def figures(seconds: int = 5, connections: int = 16, setup: str = "") -> dict[str, float]:
    """p50/p99 (ms) of a trivial cell: idle, under load, and with the loaded server in
    another process; and the load's req/s."""
    m = measure(seconds, connections, setup)
    return {
        "idle p50 ms": pct(m["idle"], 0.5),
        "idle p99 ms": pct(m["idle"], 0.99),
        "loaded p50 ms": pct(m["loaded"], 0.5),
        "loaded p99 ms": pct(m["loaded"], 0.99),
        "server req/s": m["rps"],
        "cells": len(m["loaded"]),
        "outside p50 ms": pct(m["outside"], 0.5),
        "outside p99 ms": pct(m["outside"], 0.99),
        "outside req/s": m["outside_rps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
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
    setup = "\n".join([*(ABLATIONS[name] for name in args.without), args.setup])
    f = figures(args.seconds, args.connections, setup)
    rows = [
        ("trivial cell, server idle", "idle", ""),
        ("trivial cell, in-kernel server under wrk", "loaded", f"{f['server req/s']:.0f} req/s"),
        ("baseline: the server in another process", "outside", f"{f['outside req/s']:.0f} req/s"),
    ]
    for label, key, note in rows:
        p50, p99 = f[f"{key} p50 ms"], f[f"{key} p99 ms"]
        print(f"{label:<42} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  {note}")
    print(f"goal: p99 under load <= 50 ms: {'met' if f['loaded p99 ms'] <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
