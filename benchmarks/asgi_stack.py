"""What falkit adds per HTTP request above FastAPI, measured in-process (no sockets, no
uvicorn): CPU microseconds per ASGI call of the same echo handler through

* a bare FastAPI app (the baseline),
* the bare app plus falkit's ``Server-Timing`` (``_timing``: the middleware and the
  handler wrapper) -- its cost alone,
* falkit's whole stack as uvicorn calls it (``Server._dispatch``: stats, limits, security
  guard, fal gateway and URL layout, ``Server-Timing``, error handlers).

and, to the microsecond, what ``Server-Timing`` alone adds around a trivial ASGI app.

Unlike wrk throughput, CPU time per call hardly moves when other processes share the
machine, so small costs show. Rounds alternate; medians are printed.

    python benchmarks/asgi_stack.py [--calls 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

import falkit as fal
from falkit.asgi.timing import ServerTiming, timed


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str


def echo(input: Input) -> Output:
    return Output(output=input.prompt)


class EchoApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return echo(input)


def bare_app(with_timing: bool) -> Any:
    app = FastAPI()
    app.post("/")(timed(echo) if with_timing else echo)
    if with_timing:
        app.add_middleware(ServerTiming)
    return app


BODY = json.dumps({"prompt": "hi"}).encode()
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "state": {},
}


async def call_many(app: Callable[..., Any], calls: int) -> float:
    """CPU seconds per call of ``app`` on one POST (checked to answer 200)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(50):  # warm caches and the thread pool
        await app(dict(SCOPE), receive, send)
    began = time.process_time()
    for _ in range(calls):
        await app(dict(SCOPE), receive, send)
    spent = time.process_time() - began
    assert set(statuses) == {200}, set(statuses)
    return spent / calls


async def _trivial(scope: Any, receive: Any, send: Any) -> None:
    from falkit.asgi.timing import _marks

    marks = _marks.get()
    if marks is not None:  # as a timed handler would
        marks += [time.perf_counter(), time.perf_counter()]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _per_call(app: Any, calls: int) -> float:
    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    began = time.process_time()
    for _ in range(calls):
        await app({"type": "http"}, receive, send)
    return (time.process_time() - began) / calls


def timing_cost(calls: int = 50_000, rounds: int = 7) -> float:
    """Microseconds ``Server-Timing`` adds to one request: its middleware around a trivial
    ASGI app, plus the handler wrapper, each against the bare thing (medians of rounds)."""
    wrapped = ServerTiming(_trivial)
    mw = statistics.median(
        asyncio.run(_per_call(wrapped, calls)) - asyncio.run(_per_call(_trivial, calls))
        for _ in range(rounds)
    )

    def plain(x: int) -> int:
        return x

    def loop(fn: Callable[[int], int]) -> float:
        began = time.process_time()
        for _ in range(calls):
            fn(1)
        return (time.process_time() - began) / calls

    wrapper = statistics.median(loop(timed(plain)) - loop(plain) for _ in range(rounds))
    return (mw + wrapper) * 1e6


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    server = fal.serve(EchoApp)  # started for its ASGI stack; driven here without sockets
    stacks = {
        "bare FastAPI": bare_app(False),
        "bare + Server-Timing": bare_app(True),
        "falkit (Server._dispatch)": server._dispatch,
    }
    runs: dict[str, list[float]] = {name: [] for name in stacks}
    try:
        for _ in range(rounds):
            for name, app in stacks.items():
                runs[name].append(asyncio.run(call_many(app, calls)) * 1e6)
    finally:
        server.stop()
    return runs


def figures(calls: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Median CPU microseconds per call of each stack; used by run_all.py."""
    return {name: statistics.median(xs) for name, xs in measure(calls, rounds).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = measure(args.calls, args.rounds)
    base = statistics.median(runs["bare FastAPI"])
    print(f"{'stack':<28}{'us/call':>9}{'vs bare':>9}  runs")
    for name, xs in runs.items():
        med = statistics.median(xs)
        print(f"{name:<28}{med:>9.1f}{base / med:>9.3f}  {[round(x) for x in xs]}")
    cost = timing_cost()
    print(
        f"Server-Timing alone (middleware + handler wrapper): {cost:.1f} us per request, "
        f"{cost / base * 100:.1f}% of a bare FastAPI request here"
    )


if __name__ == "__main__":
    main()
