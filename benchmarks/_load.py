"""Shared benchmark plumbing: start a server in a child process, drive it with wrk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def child_server(code: str, port: int, *, ready_path: str = "/health") -> Iterator[str]:
    """Run ``code`` (which must serve on ``port``) in a child process until ready."""
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(url + ready_path, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready in 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wrk_post(url: str, body: str, *, seconds: int, connections: int, threads: int = 1) -> float:
    """Requests per second that wrk gets POSTing ``body`` as JSON to ``url``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        escaped = body.replace("\\", "\\\\").replace('"', '\\"')
        script.write(
            f'wrk.method = "POST"\nwrk.body = "{escaped}"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def stack_sources(handler_src: str, function: str) -> dict[str, str]:
    """Child-process programs serving the same handler ``function`` (defined, with its
    models, in ``handler_src``) at ``POST /`` on ``$PORT``: as a falkit App and as a bare
    FastAPI app under ``uvicorn.run``."""
    falkit_src = f"""{handler_src}
import os, time
import falkit as fal

class BenchApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input):
        return {function}(input)

    # the bare app's response model too, so both stacks validate the same way
    generate.__annotations__.update({function}.__annotations__)

server = fal.serve(BenchApp, port=int(os.environ["PORT"]))
while True:
    time.sleep(3600)
"""
    bare_src = f"""{handler_src}
import os
import uvicorn
from fastapi import FastAPI

app = FastAPI()
app.post("/")({function})
app.get("/health")(lambda: {{}})
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
            access_log=False)
"""
    return {"bare": bare_src, "falkit": falkit_src}
