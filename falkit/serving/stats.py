"""Request counts and latency percentiles of a server, in bounded memory."""

from __future__ import annotations

from collections import deque
from typing import Any


def percentile(ordered: list[float] | tuple[float, ...], q: float) -> float | None:
    """The ``q`` quantile (0..1) of values sorted ascending (nearest rank, no
    interpolation); ``None`` for no values."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RequestStats:
    """Counts and recent latencies of a server's HTTP requests (bounded memory)."""

    def __init__(self, window: int = 2048) -> None:
        self.requests = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=window)

    def record(self, seconds: float, status: int) -> None:
        self.requests += 1
        self.errors += status >= 500
        self._latencies.append(seconds)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._latencies)

        def pct(q: float) -> float | None:
            value = percentile(ordered, q)
            return None if value is None else round(value * 1000, 3)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        }
