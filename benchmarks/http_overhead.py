"""HTTP echo throughput: falkit's server vs a bare FastAPI+uvicorn app, same handler.

Load comes from wrk in another process; each stack runs in its own child process, in
alternating rounds, and the ratio of medians is printed. Goal: >= 0.95.

    python benchmarks/http_overhead.py [--seconds 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import statistics

from _load import child_server, free_port, wrk_post

HANDLER = """
from pydantic import BaseModel

class Input(BaseModel):
    prompt: str

class Output(BaseModel):
    output: str

def echo(input: Input) -> Output:
    return Output(output=input.prompt)
"""

FALKIT = (
    HANDLER
    + """
import os, time
import falkit as fal

class EchoApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return echo(input)

server = fal.serve(EchoApp, port=int(os.environ["PORT"]))
while True:
    time.sleep(3600)
"""
)

BARE = (
    HANDLER
    + """
import os
import uvicorn
from fastapi import FastAPI

app = FastAPI()
app.post("/")(echo)
app.get("/health")(lambda: {})
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
            access_log=False)
"""
)


def measure(code: str, args: argparse.Namespace) -> float:
    port = free_port()
    with child_server(code, port) as url:
        wrk_post(url + "/", '{"prompt":"hi"}', seconds=1, connections=args.connections)  # warm
        return wrk_post(
            url + "/", '{"prompt":"hi"}', seconds=args.seconds, connections=args.connections
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    bare, falkit = [], []
    for _ in range(args.rounds):
        bare.append(measure(BARE, args))
        falkit.append(measure(FALKIT, args))
    b, f = statistics.median(bare), statistics.median(falkit)
    print(f"{'stack':<22}{'req/s (median)':>16}{'runs':>40}")
    print(f"{'bare FastAPI+uvicorn':<22}{b:>16.0f}{[round(x) for x in bare]!s:>40}")
    print(f"{'falkit':<22}{f:>16.0f}{[round(x) for x in falkit]!s:>40}")
    print(f"ratio falkit / bare = {f / b:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
