"""Live media through the playground: frames/s and round-trip p50/p99 for 512x512 JPEG
frames from Chromium's fake camera through the comm path (page -> widget comm -> kernel
-> loopback -> server, and back to the page), against ``Client.realtime`` from the kernel
alone on the same route with the same frames. Everything is real: JupyterLab, Debian's
Chromium, the kernel, uvicorn.

The route decodes the JPEG, inverts it and encodes it again (Pillow), as a small image
filter would. The comm path is measured with the throttle off, with 1, 2 (the default) and
4 frames in flight; round trips are what the page measured (frame sent to output received),
after a warm-up. Goals: comm p50 within 1.5x the kernel-only p50, and >= 15 frames/s.

The floor under any comm path is measured too: an anywidget echoing a buffer of about a
frame's size, page to kernel and back, with no falkit in it. Jupyter Server runs with
falkit's extension (``falkit.jupyter``: TCP_NODELAY on kernel WebSockets), as installing
falkit sets it up; ``--nagle`` turns it off for the before/after.

    python benchmarks/live_media.py [--seconds 8] [--nagle]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_browser import (  # the suite's JupyterLab and Chromium plumbing
    CHROMIUM,
    CHROMIUM_ARGS,
    _run_all_cells,
    jupyter,
    write_notebook,
)

APP = """\
import io, json, time
import falkit as fal
from PIL import Image, ImageOps
from pydantic import BaseModel

FRAMES = []
WORK_S = 0.0  # model-sized work on top of the filter (set by the benchmark)

class Frame(BaseModel):
    image: bytes

class LiveBench(fal.App):
    @fal.realtime("/filter")
    def filter(self, input: Frame) -> dict:
        if len(FRAMES) < 4:
            FRAMES.append(input.image)
        if WORK_S:
            time.sleep(WORK_S)  # as a model waiting on its device
        image = ImageOps.invert(Image.open(io.BytesIO(input.image)).convert("RGB"))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return {"image": out.getvalue()}
"""

OPEN = """\
server = fal.get_server("LiveBench")
pg = fal.playground(server)
live = pg.open_route("/filter").live
live.throttle.value = 0
pg
"""

KERNEL_ONLY = """\
import json, statistics, time
frame = FRAMES[-1]
with server.client.realtime("/filter") as rt:
    for _ in range(20):
        rt.send({{"image": frame}}); rt.recv(timeout=30)
    took, began = [], time.perf_counter()
    while time.perf_counter() - began < {seconds}:
        t = time.perf_counter()
        rt.send({{"image": frame}})
        rt.recv(timeout=30)
        took.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - began
print(json.dumps({{"ms": took, "fps": len(took) / wall, "bytes": len(frame)}}))
"""


# The floor under any comm path: an anywidget that echoes a buffer of the frame's size
# (page -> Jupyter Server -> kernel -> Jupyter Server -> page), no falkit, no route; once
# as any widget's comm, then quiet as the live view's (falkit.playground.quiet), started
# when the first is done.
ECHO = """\
import anywidget
import traitlets
from falkit.playground.quiet import quiet


class Echo(anywidget.AnyWidget):
    _esm = '''
    export default { render({ model, el }) {
      const name = model.get("name"), payload = new Uint8Array(%(size)d), rtts = [];
      let sentAt = 0;
      const ping = () => {
        sentAt = performance.now();
        model.send({}, undefined, [payload.buffer.slice(0)]);
      };
      model.on("msg:custom", () => {
        rtts.push(performance.now() - sentAt);
        if (rtts.length < %(count)d) return ping();
        el.dataset.rtts = JSON.stringify(rtts);
        el.classList.add(`falkit-echo-${name}-done`);
      });
      const after = model.get("after");
      const go = () => after && !document.querySelector(`.falkit-echo-${after}-done`)
        ? setTimeout(go, 100) : setTimeout(ping, 1000);
      go();
    } }
    '''
    name = traitlets.Unicode().tag(sync=True)
    after = traitlets.Unicode().tag(sync=True)

    def __init__(self, name: str, after: str = "", quiet_comm: bool = False) -> None:
        super().__init__(name=name, after=after)
        if quiet_comm:
            quiet(self.comm.comm_id)
        self.on_msg(lambda widget, content, buffers: self.send({}, buffers))


display(Echo("plain"), Echo("quiet", after="plain", quiet_comm=True))
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Kernel:
    """A second client on the notebook's kernel (what the page's kernel runs)."""

    def __init__(self, base: str, token: str, runtime: Path) -> None:
        from jupyter_client import BlockingKernelClient

        sessions = httpx.get(f"{base}/api/sessions", params={"token": token}, timeout=10).json()
        kernel_id = sessions[0]["kernel"]["id"]
        self.client = BlockingKernelClient(
            connection_file=str(runtime / f"kernel-{kernel_id}.json")
        )
        self.client.load_connection_file()
        self.client.start_channels()

    def run(self, code: str, timeout: float = 120) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        return "".join(out)

    def json(self, code: str, timeout: float = 120) -> dict:
        text = self.run(code, timeout)
        try:
            return json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"kernel said:\n{text}") from None

    def close(self) -> None:
        self.client.stop_channels()


def comm_path(page, kernel: Kernel, in_flight: int, seconds: float, warm: float) -> dict:
    kernel.run(f"live.in_flight.value = {in_flight}")
    page.locator(".falkit-live-start").click()
    page.wait_for_function(
        "() => Number(document.querySelector('.falkit-live-counter')?.dataset.outputs) >= 10",
        timeout=60_000,
    )
    time.sleep(warm)
    mark = kernel.json("print(json.dumps([live.received, len(live.stream.stats.page_ms)]))")
    began = time.perf_counter()
    time.sleep(seconds)
    end = kernel.json("print(json.dumps([live.received, len(live.stream.stats.page_ms)]))")
    wall = time.perf_counter() - began
    page.locator(".falkit-live-stop").click()
    time.sleep(1.5)  # the page's last round trips arrive
    stats = kernel.json(
        "print(json.dumps({'page': list(live.stream.stats.page_ms), **live.summary()}))"
    )
    page_ms = stats["page"][mark[1] : end[1]]
    return {
        "fps": (end[0] - mark[0]) / wall,
        "ms": page_ms,
        "dropped": stats["dropped"],
        "kernel_p50": stats["p50_ms"],
    }


def comm_floor(page, name: str) -> list[float]:
    """Round trips of an echo widget (the notebook's last cell), after its first 30."""
    done = page.locator(f".falkit-echo-{name}-done")
    done.wait_for(state="attached", timeout=120_000)
    return json.loads(done.get_attribute("data-rtts"))[30:]


def notebook(root: Path, echo_bytes: int) -> None:
    echo = ECHO % {"size": echo_bytes, "count": 330}
    write_notebook(root / "bench.ipynb", [APP, "%fal serve LiveBench", OPEN, echo])


def line(name: str, fps: float, ms: list[float]) -> str:
    return (
        f"{name:<34} {fps:6.1f} frames/s   round trip p50 {statistics.median(ms):6.1f} ms"
        f"   p99 {pct(ms, 0.99):6.1f} ms   (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warm", type=float, default=2.0)
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="without falkit's Jupyter Server extension (Nagle on the kernel WebSockets)",
    )
    parser.add_argument(
        "--work-ms", type=float, default=25.0, help="the model-sized route's extra work"
    )
    parser.add_argument("--echo-bytes", type=int, default=4096)  # about a fake-camera JPEG
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="falkit-live-bench-") as tmp:
        root = Path(tmp)
        notebook(root, args.echo_bytes)
        # over the jupyter_server_config.d file falkit installs
        off = {"ServerApp": {"jpserver_extensions": {"falkit.jupyter": False}}}
        setup = jupyter(root, config=off if args.nagle else None)
        with setup as (base, token, _), sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    *CHROMIUM_ARGS,
                    "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream",
                ],
            )
            kernel = None
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/bench.ipynb?token={token}")
                _run_all_cells(page)
                page.locator(".falkit-live").wait_for(timeout=90_000)
                floor = {name: comm_floor(page, name) for name in ("plain", "quiet")}
                kernel = Kernel(base, token, root / "runtime")
                comm = {n: comm_path(page, kernel, n, args.seconds, args.warm) for n in (1, 2, 4)}
                alone = kernel.json(KERNEL_ONLY.format(seconds=args.seconds))
                kernel.run(f"WORK_S = {args.work_ms / 1000}")
                model_comm = comm_path(page, kernel, 1, args.seconds, args.warm)
                model_alone = kernel.json(KERNEL_ONLY.format(seconds=args.seconds))
                kernel.run('fal.stop("LiveBench")')
            finally:
                browser.close()
                if kernel is not None:
                    kernel.close()

    server = (
        "Nagle on (falkit.jupyter disabled)"
        if args.nagle
        else "kernel WebSockets with TCP_NODELAY (falkit.jupyter)"
    )
    print(f"512x512 JPEG frames from Chromium's fake camera, {alone['bytes']} bytes; {server}")
    print(line("Client.realtime in the kernel", alone["fps"], alone["ms"]))
    for name, rtts in floor.items():
        label = f"comm echo, {args.echo_bytes} B, {name} comm"
        print(line(label, 1000 / statistics.mean(rtts), rtts))
    for n, run in comm.items():
        print(line(f"comm path, {n} in flight", run["fps"], run["ms"]))
        print(
            f"    of which kernel<->server p50 {run['kernel_p50']:.1f} ms, {run['dropped']} dropped"
        )
    base_p50 = statistics.median(alone["ms"])
    for n, run in comm.items():
        ratio = statistics.median(run["ms"]) / base_p50
        verdict = "goal met" if ratio <= 1.5 else "MISSED"
        print(f"comm path ({n} in flight) p50 ratio to kernel-only: {ratio:.2f}x "
              f"(goal <= 1.5x: {verdict})")  # fmt: skip
    quiet_p50 = statistics.median(floor["quiet"])
    print(f"comm echo, quiet (the floor under the comm path): {quiet_p50:.1f} ms, "
          f"{quiet_p50 / base_p50:.2f}x kernel-only p50 by itself")  # fmt: skip
    print(line(f"kernel alone, route + {args.work_ms:g} ms", model_alone["fps"], model_alone["ms"]))
    print(line(f"comm path, route + {args.work_ms:g} ms", model_comm["fps"], model_comm["ms"]))
    ratio = statistics.median(model_comm["ms"]) / statistics.median(model_alone["ms"])
    print(f"comm path p50 ratio to kernel-only, route + {args.work_ms:g} ms: {ratio:.2f}x "
          f"(goal <= 1.5x: {'goal met' if ratio <= 1.5 else 'MISSED'})")  # fmt: skip
    overhead = [statistics.median(run["ms"]) - base_p50 for run in comm.values()]
    print(f"comm path's own cost (p50, comm minus kernel-only): {min(overhead):.1f} ms")
    best = max(run["fps"] for run in comm.values())
    print(f"comm path frames/s, throttle off: {best:.1f} "
          f"(goal >= 15: {'goal met' if best >= 15 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
