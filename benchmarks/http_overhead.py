"""HTTP echo throughput: falkit's server vs a bare FastAPI+uvicorn app, same handler.

Load comes from wrk in another process; each stack runs in its own child process, in
alternating rounds, and the ratio of medians is printed. Goal: >= 0.95.

    python benchmarks/http_overhead.py [--seconds 5] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import statistics

from _load import child_server, free_port, stack_sources, wrk_post

HANDLER = """
from pydantic import BaseModel

class Input(BaseModel):
    prompt: str

class Output(BaseModel):
    output: str

def echo(input: Input) -> Output:
    return Output(output=input.prompt)
"""

STACKS = stack_sources(HANDLER, "echo")


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
        bare.append(measure(STACKS["bare"], args))
        falkit.append(measure(STACKS["falkit"], args))
    b, f = statistics.median(bare), statistics.median(falkit)
    print(f"{'stack':<22}{'req/s (median)':>16}{'runs':>40}")
    print(f"{'bare FastAPI+uvicorn':<22}{b:>16.0f}{[round(x) for x in bare]!s:>40}")
    print(f"{'falkit':<22}{f:>16.0f}{[round(x) for x in falkit]!s:>40}")
    print(f"ratio falkit / bare = {f / b:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
