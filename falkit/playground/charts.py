"""Small inline SVG charts for latency, as the consoles show them (no plotting library)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ..serving import percentile


def histogram(
    values: Sequence[float], *, bins: int = 24, width: int = 240, height: int = 40, unit: str = "ms"
) -> str:
    """An inline SVG histogram of ``values`` with the p50 and p99 marked; "" for fewer
    than two values. Bins are even on a log scale when the values span more than 20x,
    so one slow outlier does not squash the rest into a single bar."""
    if len(values) < 2:
        return ""
    ordered = sorted(values)
    low, high = max(ordered[0], 1e-3), max(ordered[-1], 1e-3)
    log = high / low > 20
    edge_of = (lambda v: math.log(max(v, 1e-3))) if log else (lambda v: v)
    start, span = edge_of(low), (edge_of(high) - edge_of(low)) or 1.0
    counts = [0] * bins
    for value in ordered:
        counts[min(bins - 1, max(0, int((edge_of(value) - start) / span * bins)))] += 1
    top = max(counts)
    bar = width / bins
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 12 - c / top * (height - 14):.1f}' "
        f"width='{max(bar - 1, 1):.1f}' height='{c / top * (height - 14):.1f}' fill='#0969da'/>"
        for i, c in enumerate(counts)
        if c
    )
    marks = "".join(
        _mark((edge_of(q) - start) / span * width, height, label)
        for q, label in (
            (percentile(ordered, 0.5) or 0, "p50"),
            (percentile(ordered, 0.99) or 0, "p99"),
        )
    )
    scale = html.escape(f"{ordered[0]:.1f} to {ordered[-1]:.1f} {unit}" + (" (log)" if log else ""))
    return (
        f"<svg class='falkit-histogram' width='{width}' height='{height}' "
        f"style='vertical-align:middle'>{bars}{marks}"
        f"<text x='0' y='{height - 1}' font-size='9' fill='#777'>{scale}</text></svg>"
    )


def _mark(x: float, height: int, label: str) -> str:
    return (
        f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height - 12}' stroke='#cf222e' "
        f"stroke-dasharray='2,2'/><text x='{x + 2:.1f}' y='8' font-size='8' fill='#cf222e'>"
        f"{label}</text>"
    )
