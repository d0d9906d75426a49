"""Start-up costs a notebook user waits for, each measured in fresh subprocesses:

* ``import falkit`` (goal <= 0.5 s), against ``import fastapi, uvicorn`` (the floor of any
  FastAPI server);
* ``%fal serve`` to ready for an App without ``setup()`` (goal <= 0.3 s), through the magic
  in an IPython shell, first serve in the process (imports included) and a second App in the
  same process; against a bare FastAPI app started by uvicorn in a thread.

Rounds alternate between the measurements; medians are printed.

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPORT_FALKIT = "import falkit"
IMPORT_FLOOR = "import fastapi, uvicorn"

IMPORT_TIMER = """
import time, json
t = time.perf_counter()
{stmt}
print(json.dumps({{"s": time.perf_counter() - t}}))
"""

SERVE_MAGIC = """
import json, time
{preimport}
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_cell('''
import falkit as fal
from pydantic import BaseModel
class In(BaseModel):
    prompt: str
class First(fal.App):
    @fal.endpoint("/")
    def echo(self, input: In) -> dict:
        return {"output": input.prompt}
class Second(First):
    app_name = "second"
''')
out = {}
for name in ("First", "Second"):
    t = time.perf_counter()
    assert shell.run_cell(f"%fal serve {name}").success
    out[name] = time.perf_counter() - t
import httpx, falkit
assert httpx.post(falkit.get_server("First").url + "/", json={"prompt": "x"}).status_code == 200
falkit.stop_all()
print(json.dumps(out))
"""

# What any FastAPI+uvicorn server imports on its first start (uvicorn's protocols, FastAPI's
# pydantic-v1 check): imported beforehand, the first serve shows falkit's own cost.
WARM = (
    "import fastapi, pydantic.v1, uvicorn, uvloop, httptools, "
    "uvicorn.protocols.http.httptools_impl, uvicorn.protocols.websockets.websockets_sansio_impl"
)

BARE_THREAD = """
import json, socket, threading, time
t = time.perf_counter()
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
class In(BaseModel):
    prompt: str
app = FastAPI()
@app.post("/")
def echo(input: In) -> dict:
    return {"output": input.prompt}
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
thread.start()
while not server.started:
    time.sleep(0.005)
s = time.perf_counter() - t
server.should_exit = True
thread.join(5)
print(json.dumps({"s": s}))
"""


def run_child(code: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(rounds: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {
        "import falkit": [],
        "import fastapi, uvicorn": [],
        "%fal serve (first, imports incl.)": [],
        "%fal serve (second app)": [],
        "%fal serve (first, FastAPI warm)": [],
        "bare uvicorn thread (imports incl.)": [],
    }
    for _ in range(rounds):
        runs["import falkit"].append(run_child(IMPORT_TIMER.format(stmt=IMPORT_FALKIT))["s"])
        runs["import fastapi, uvicorn"].append(
            run_child(IMPORT_TIMER.format(stmt=IMPORT_FLOOR))["s"]
        )
        served = run_child(SERVE_MAGIC.replace("{preimport}", ""))
        runs["%fal serve (first, imports incl.)"].append(served["First"])
        runs["%fal serve (second app)"].append(served["Second"])
        warm = run_child(SERVE_MAGIC.replace("{preimport}", WARM))
        runs["%fal serve (first, FastAPI warm)"].append(warm["First"])
        runs["bare uvicorn thread (imports incl.)"].append(run_child(BARE_THREAD)["s"])
    return runs


def figures(rounds: int = 5) -> dict[str, float]:
    """Medians (seconds) of each measurement; used by run_all.py."""
    return {name: statistics.median(xs) for name, xs in measure(rounds).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs = measure(args.rounds)
    med = {name: statistics.median(xs) for name, xs in runs.items()}
    print(f"{'measurement':<38}{'median s':>10}  runs")
    for name, xs in runs.items():
        print(f"{name:<38}{med[name]:>10.3f}  {[round(x, 3) for x in xs]}")
    print(
        f"import falkit: {med['import falkit']:.3f} s (goal <= 0.5), "
        f"{med['import falkit'] / med['import fastapi, uvicorn']:.2f}x import fastapi+uvicorn"
    )
    print(
        f"%fal serve to ready (goal <= 0.3 s): first in a fresh kernel "
        f"{med['%fal serve (first, imports incl.)']:.3f} s (bare uvicorn thread, imports "
        f"incl.: {med['bare uvicorn thread (imports incl.)']:.3f} s); first with FastAPI's "
        f"imports warm {med['%fal serve (first, FastAPI warm)']:.3f} s; "
        f"second app {med['%fal serve (second app)']:.3f} s"
    )


if __name__ == "__main__":
    main()
