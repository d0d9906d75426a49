"""``falkit.bench``: put a served route under load from another process and report what a
user wants to know about it: requests per second, p50 / p90 / p99 latency, errors, the
server's own decode / handler / encode split and a latency histogram.

The load comes from ``falkit/bench/loadgen.py`` in a child process, so that it does not compete
with the server for the kernel's GIL. It only targets loopback, is bounded by a request
count and a duration, and stops by itself.
"""

from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..asgi import is_loopback, parse_server_timing
from ..client import ws_url
from ..exceptions import BenchError
from ..serving import percentile

if TYPE_CHECKING:
    from ..serving import Server

MAX_REQUESTS = 1_000_000
_LOADGEN = os.path.join(os.path.dirname(__file__), "loadgen.py")
_PHASES = ("decode", "handler", "encode")


@dataclass(frozen=True)
class BenchReport:
    """The outcome of one ``bench`` run. ``requests`` were sent, ``errors`` of them failed
    (an HTTP status >= 400, an ``x-fal-error`` frame, a timeout or a dropped connection;
    by kind in ``error_kinds``); latencies are those of the answered requests, sorted."""

    url: str
    kind: str
    n: int
    c: int
    requests: int
    errors: int
    error_kinds: dict[str, int]
    seconds: float
    latencies_ms: tuple[float, ...]
    server_timing_ms: dict[str, float]

    @property
    def rps(self) -> float:
        """Answered requests per second (errors included, as wrk counts them)."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p90_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.90)

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies_ms, 0.99)

    def summary(self) -> dict[str, Any]:
        """The figures as a plain dict (for tables and JSON)."""
        return {
            "url": self.url,
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            **{f"{k}_ms": v for k, v in self.server_timing_ms.items()},
        }

    def _headline(self) -> list[str]:
        verb = "POST" if self.kind == "http" else "RT"
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items()))
        lines = [
            f"{verb} {self.url}  n={self.n} c={self.c}",
            f"requests {self.requests} in {self.seconds:.2f} s, {self.rps:.1f} req/s, "
            f"errors {self.errors}" + (f" ({kinds})" if kinds else ""),
        ]
        if self.latencies_ms:
            lines.append(
                f"latency  p50 {self.p50_ms:.2f} ms  p90 {self.p90_ms:.2f} ms  "
                f"p99 {self.p99_ms:.2f} ms  max {self.latencies_ms[-1]:.2f} ms"
            )
        if self.server_timing_ms:
            split = "  ".join(f"{k} {v:.3f} ms" for k, v in self.server_timing_ms.items())
            lines.append(f"server   {split}  (medians of Server-Timing)")
        return lines

    def histogram_text(self, bins: int = 10, width: int = 40) -> str:
        """The latency histogram drawn with ``#`` (the fallback when matplotlib is absent)."""
        if not self.latencies_ms:
            return "(no answered requests)"
        low, high = self.latencies_ms[0], self.latencies_ms[-1]
        step = (high - low) / bins or 1.0
        counts = [0] * bins
        for x in self.latencies_ms:
            counts[min(bins - 1, int((x - low) / step))] += 1
        top = max(counts)
        return "\n".join(
            f"{low + i * step:9.2f} ms |{'#' * round(width * n / top):<{width}} {n}"
            for i, n in enumerate(counts)
        )

    def histogram_png(self) -> bytes | None:
        """The latency histogram as a PNG, or ``None`` without matplotlib (it comes with
        ``pip install 'falkit[notebooks]'``)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        import io

        fig = Figure(figsize=(5, 2.2), dpi=100)
        ax = fig.add_subplot()
        ax.hist(self.latencies_ms or [0.0], bins=40, color="#4a7fb5")
        for q, style in ((self.p50_ms, "-"), (self.p99_ms, "--")):
            if q is not None:
                ax.axvline(q, color="k", linestyle=style, linewidth=1)
        ax.set_xlabel("latency (ms); lines: p50, p99")
        ax.set_ylabel("requests")
        fig.tight_layout()
        buf = io.BytesIO()
        FigureCanvasAgg(fig).print_png(buf)
        return buf.getvalue()

    def text(self) -> str:
        return "\n".join([*self._headline(), self.histogram_text()])

    def __repr__(self) -> str:
        return f"<falkit.BenchReport {self.url}: {self.rps:.1f} req/s, {self.errors} errors>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text())

    def _repr_html_(self) -> str:
        png = self.histogram_png()
        head = html.escape("\n".join(self._headline()))
        if png is None:
            return f"<pre>{head}\n{html.escape(self.histogram_text())}</pre>"
        data = base64.b64encode(png).decode()
        return f"<pre>{head}</pre><img alt='latency histogram' src='data:image/png;base64,{data}'>"


def _target(target: Server | str, path: str, kind: str | None) -> tuple[str, str]:
    """The full URL to load and its kind ("http" or "realtime")."""
    if isinstance(target, str):
        base = target.rstrip("/")
        scheme = urlsplit(base).scheme
        kind = kind or ("realtime" if scheme in ("ws", "wss") else "http")
    else:
        base = target.url
        if kind is None:
            found = [r for r in target.routes if r.path == path]
            if not found:
                routes = ", ".join(r.path for r in target.routes) or "none"
                raise BenchError(f"{target.app_name} has no route {path!r} (routes: {routes})")
            kind = found[0].kind
    if kind not in ("http", "realtime"):
        raise BenchError(
            f"bench drives HTTP and realtime routes; {path!r} is a {kind} route, "
            "whose messages only its handler knows"
        )
    parts = urlsplit(base)
    if not is_loopback(parts.hostname or ""):
        raise BenchError(f"bench only targets loopback (127.0.0.1), not {parts.hostname!r}")
    if kind == "realtime":
        base = ws_url(base)
    return base + path, kind


def _check_bounds(n: int, c: int, duration: float) -> None:
    if not 1 <= n <= MAX_REQUESTS:
        raise BenchError(f"n must be between 1 and {MAX_REQUESTS}, got {n}")
    if c < 1:
        raise BenchError(f"c (concurrent connections) must be at least 1, got {c}")
    if duration <= 0:
        raise BenchError(f"duration must be positive, got {duration}")


def _run_loadgen(config: dict[str, Any], limit: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, _LOADGEN],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the load generator did not finish in {limit:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"the load generator failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _medians(headers: list[str]) -> dict[str, float]:
    import statistics

    parsed = [parse_server_timing(h) for h in headers]
    return {
        phase: round(statistics.median(p[phase] for p in parsed if phase in p), 4)
        for phase in _PHASES
        if any(phase in p for p in parsed)
    }


def bench(
    target: Server | str,
    path: str = "/",
    *,
    n: int = 1000,
    c: int = 8,
    payload: Any = None,
    kind: str | None = None,
    duration: float = 30.0,
    timeout: float = 10.0,
) -> BenchReport:
    """Send ``n`` requests (at most ``duration`` seconds of them) with ``payload`` to
    ``path`` of ``target`` (a running ``Server`` or a loopback URL) over ``c`` concurrent
    connections, from a child process, and report the figures::

        report = falkit.bench(server, "/", n=2000, c=16, payload={"prompt": "hi"})
        report.rps, report.p99_ms, report.errors

    HTTP routes get ``payload`` as a JSON POST body; realtime routes (``kind="realtime"``,
    found by itself for a ``Server``; a ``ws://`` URL means it too) a msgpack frame per
    request, each waiting for its output. ``timeout`` bounds each request."""
    _check_bounds(n, c, duration)
    url, kind = _target(target, path, kind)
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"payload must be JSON-serialisable: {exc}") from None
    config = {
        "url": url,
        "kind": kind,
        "n": n,
        "c": c,
        "payload": payload,
        "duration": duration,
        "timeout": timeout,
    }
    result = _run_loadgen(config, limit=duration + timeout + 60)
    latencies = tuple(sorted(result["latencies_ms"]))
    return BenchReport(
        url=url,
        kind=kind,
        n=n,
        c=c,
        requests=n - result["unsent"],
        errors=sum(result["errors"].values()),
        error_kinds=result["errors"],
        seconds=result["seconds"],
        latencies_ms=latencies,
        server_timing_ms=_medians(result["server_timing"]),
    )
