"""What Ray Serve costs per request: the same App on falkit's in-process server and on a
local Ray Serve deployment (falkit.ray.deploy, one replica), measured in one run.

One sequential client (send, wait, repeat) over loopback, for HTTP POST and for realtime
round trips; rows give p50 latency per stack and the ratio Ray / in-kernel. Ray Serve adds
a proxy hop and a replica hop per request, so its latency is the larger; the ratio says by
how much. Ray is started here (2 CPUs, no dashboard) and shut down at the end.

    python benchmarks/ray_overhead.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import falkit
from falkit.cli import load_app

APP = """
import falkit as fal
from pydantic import BaseModel


class Msg(BaseModel):
    prompt: str


class Bench(fal.App):
    machine_type = "XS"

    @fal.endpoint("/")
    def echo(self, input: Msg) -> Msg:
        return input

    @fal.realtime("/rt")
    def rt(self, input: Msg) -> Msg:
        return input
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(url: str, requests: int) -> dict[str, float]:
    """p50 latency (ms) of sequential HTTP calls and realtime round trips against ``url``."""
    http: list[float] = []
    realtime: list[float] = []
    with falkit.Client(url) as client:
        for _ in range(10):  # warm-up: connections, replicas, first-call paths
            client.call("/", {"prompt": "warm"})
        for _ in range(requests):
            began = time.perf_counter()
            client.call("/", {"prompt": "hi"})
            http.append(time.perf_counter() - began)
        with client.realtime("/rt") as session:
            for _ in range(requests):
                began = time.perf_counter()
                session.send({"prompt": "hi"})
                session.recv()
                realtime.append(time.perf_counter() - began)
    return {"http": _p50_ms(http), "realtime": _p50_ms(realtime)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    import ray
    from ray import serve

    from falkit.ray import deploy

    folder = Path(tempfile.mkdtemp(prefix="falkit-ray-bench-"))
    (folder / "bench_app.py").write_text(textwrap.dedent(APP))
    app_cls = load_app(f"{folder / 'bench_app.py'}::Bench")

    server = falkit.serve(app_cls)
    try:
        local = measure(server.url, args.requests)
    finally:
        server.stop()

    # As in tests/test_ray.py: on a small busy machine Ray's node agent must start within
    # ~15 s; rfc3987-syntax (an optional jsonschema plug-in) costs every Ray process 2.4 s
    # of CPU at import, and prestarted idle workers compete for the CPU.
    (folder / "rfc3987_syntax.py").write_text('raise ImportError("skipped for Ray")\n')
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ.update({"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        deployment = deploy(app_cls, port=_free_port(), num_replicas=1)
        remote = measure(deployment.url, args.requests)
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"{'route':<10} {'in-kernel p50':>14} {'Ray Serve p50':>14} {'ratio':>7}")
    for route in ("http", "realtime"):
        ratio = remote[route] / local[route]
        print(f"{route:<10} {local[route]:>11.2f} ms {remote[route]:>11.2f} ms {ratio:>6.1f}x")
    print(f"({args.requests} sequential requests per row; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
