"""Scaling: falkit vs bare FastAPI+uvicorn (same handler, each in a child process) as
concurrent clients grow (1, 8, 64; small body) and as the request body grows (1 KB to
16 MB; 4 clients). Load comes from ``falkit.bench``'s load generator, another process.
Prints a table and saves a plot to ``benchmarks/results/scaling.png``.

    python benchmarks/scaling.py [--seconds 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from typing import Any

from _load import child_server, free_port, stack_sources

import falkit

HANDLER = """
from pydantic import BaseModel

class Input(BaseModel):
    data: str

def size(input: Input) -> dict:
    return {"size": len(input.data)}
"""

STACKS = stack_sources(HANDLER, "size")

CLIENTS = (1, 8, 64)
SIZES = (1 << 10, 16 << 10, 256 << 10, 4 << 20, 16 << 20)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def label(size: int) -> str:
    return f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"


def point(url: str, clients: int, size: int, seconds: float) -> dict[str, Any]:
    report = falkit.bench(
        url, "/", n=100_000, c=clients, payload={"data": "x" * size}, duration=seconds, timeout=30
    )
    if report.errors:
        raise RuntimeError(f"{url}: errors {report.error_kinds}")
    return {"rps": report.rps, "p50": report.p50_ms, "p99": report.p99_ms}


POINTS = [("clients", c) for c in CLIENTS] + [("size", size) for size in SIZES]


def measure(seconds: float, rounds: int) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """Medians per stack and point. Both servers run at once and each point is measured on
    one right after the other, so a change in the machine's load hits both alike."""
    runs: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {
        name: {key: [] for key in POINTS} for name in STACKS
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(child_server(code, free_port()))
            for name, code in STACKS.items()
        }
        for url in urls.values():
            point(url, 8, 1 << 10, 0.5)  # warm
        for _ in range(rounds):
            for kind, value in POINTS:
                clients, size = (value, 1 << 10) if kind == "clients" else (4, value)
                for name, url in urls.items():
                    runs[name][(kind, value)].append(point(url, clients, size, seconds))
    return {
        name: {
            key: {f: statistics.median(r[f] for r in rs) for f in ("rps", "p50", "p99")}
            for key, rs in points.items()
        }
        for name, points in runs.items()
    }


def table(res: dict[str, dict[tuple[str, int], dict[str, Any]]]) -> str:
    rows = [
        f"{'point':<18}{'bare req/s':>11}{'falkit req/s':>13}{'ratio':>7}"
        f"{'bare p50':>10}{'falkit p50':>11}{'falkit p99':>11}"
    ]
    for key in res["bare"]:
        b, f = res["bare"][key], res["falkit"][key]
        name = f"{key[1]} clients" if key[0] == "clients" else f"{label(key[1])} body"
        rows.append(
            f"{name:<18}{b['rps']:>11.0f}{f['rps']:>13.0f}{f['rps'] / b['rps']:>7.2f}"
            f"{b['p50']:>9.1f}ms{f['p50']:>9.1f}ms{f['p99']:>9.1f}ms"
        )
    return "\n".join(rows)


def plot(res: dict[str, dict[tuple[str, int], dict[str, Any]]], path: str) -> str | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, marker in (("bare", "o"), ("falkit", "s")):
        left.plot(CLIENTS, [res[name][("clients", c)]["rps"] for c in CLIENTS], marker=marker)
        right.plot(SIZES, [res[name][("size", s)]["p50"] for s in SIZES], marker=marker)
    left.set(xscale="log", xlabel="concurrent clients (1 KB body)", ylabel="req/s")
    left.set_xticks(CLIENTS, [str(c) for c in CLIENTS])
    right.set(xscale="log", yscale="log", xlabel="request body (4 clients)", ylabel="p50 ms")
    right.set_xticks(SIZES, [label(s) for s in SIZES])
    left.legend(["bare FastAPI+uvicorn", "falkit"])
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    FigureCanvasAgg(fig).print_png(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    res = measure(args.seconds, args.rounds)
    print(table(res))
    saved = plot(res, os.path.join(RESULTS, "scaling.png"))
    print(f"plot: {saved}" if saved else "plot skipped: matplotlib is not installed")


if __name__ == "__main__":
    main()
