"""Hot swap against the full restart it replaces, with a setup() that takes 2 s.

Measures, in one process and one run:
- swap: ``falkit.serve(EditedApp)`` when setup is unchanged (handlers replaced in place);
- in-place restart: ``falkit.serve(App, fresh=True)`` (new instance set up while the old
  one serves, then switched to);
- full restart: ``server.stop()`` then ``falkit.serve(App)`` (what a notebook loop without
  hot swap does);
and for each, the longest gap a client polling the server all along saw between two
successful answers (its "downtime"), against the same client's longest gap while nothing
changes (scheduling noise on a busy machine). Goal: swap <= 50 ms.

    python benchmarks/hot_swap.py [--swaps 20] [--setup 2.0]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import httpx

import falkit as fal

SETUP_SECONDS = 2.0


def make_app(version: int) -> type[fal.App]:
    class Model(fal.App):
        def setup(self):
            time.sleep(SETUP_SECONDS)  # stands in for loading weights
            self.weights = list(range(1000))

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"version": version, "n": len(self.weights)}

    return Model


class Poller:
    """A client calling the server in a loop; records the longest gap between successes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.longest_gap = 0.0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        time.sleep(0.5)  # the client is up and answered before anything is measured
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last_ok: float | None = None  # counted from the first answer, not the client's start
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    ok = http.post("/", json={}).status_code == 200
                except httpx.TransportError:
                    ok = False
                now = time.perf_counter()
                if ok:
                    if last_ok is not None:
                        self.longest_gap = max(self.longest_gap, now - last_ok)
                    last_ok = now
                else:
                    self.failures += 1
                    time.sleep(0.005)


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def main() -> None:
    global SETUP_SECONDS
    parser = argparse.ArgumentParser()
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--setup", type=float, default=SETUP_SECONDS)
    args = parser.parse_args()
    SETUP_SECONDS = args.setup

    server = fal.serve(make_app(0))
    client = fal.Client(server.url)
    client.call("/")

    with Poller(server.url) as idle_poll:  # the baseline: the same client, nothing changing
        time.sleep(2.0)

    swaps = []
    with Poller(server.url) as swap_poll:
        for i in range(1, args.swaps + 1):
            app = make_app(i)
            swaps.append(timed(lambda app=app: fal.serve(app)))
            assert client.call("/")["version"] == i
    assert server.last_action.endswith("(setup kept)"), server.last_action

    in_place = []
    with Poller(server.url) as fresh_poll:
        for _ in range(args.restarts):
            in_place.append(timed(lambda: fal.serve(make_app(0), fresh=True)))

    full = []
    with Poller(server.url) as full_poll:
        for _ in range(args.restarts):

            def stop_and_serve() -> None:
                fal.get_server("model").stop()
                fal.serve(make_app(0), port=server.port)

            full.append(timed(stop_and_serve))
    fal.stop_all()

    ms = 1000
    swap_median = statistics.median(swaps)
    full_median = statistics.median(full)
    print(f"setup() takes {SETUP_SECONDS:.1f} s; {args.swaps} swaps, {args.restarts} restarts each")
    print(
        f"idle (baseline):{' ' * 45}client downtime {idle_poll.longest_gap * ms:6.1f} ms"
        f"   failed requests {idle_poll.failures}"
    )
    print(
        f"swap (setup kept):        median {swap_median * ms:7.1f} ms   "
        f"max {max(swaps) * ms:7.1f} ms   client downtime {swap_poll.longest_gap * ms:6.1f} ms"
        f"   failed requests {swap_poll.failures}"
    )
    print(
        f"in-place restart (fresh): median {statistics.median(in_place) * ms:7.1f} ms   "
        f"max {max(in_place) * ms:7.1f} ms   client downtime {fresh_poll.longest_gap * ms:6.1f} ms"
        f"   failed requests {fresh_poll.failures}"
    )
    print(
        f"full restart (stop+serve): median {full_median * ms:6.1f} ms   "
        f"max {max(full) * ms:7.1f} ms   client downtime {full_poll.longest_gap * ms:6.1f} ms"
        f"   failed requests {full_poll.failures}"
    )
    print(f"swap / full restart: {swap_median / full_median:.4f}  (goal: swap <= 50 ms)")


if __name__ == "__main__":
    main()
