"""``falkit.bench``: load a served route from another process (``loadgen``, a script with
no falkit imports) and report throughput, latency percentiles, errors, the server's own
decode / handler / encode split and a histogram (``report``)."""

from __future__ import annotations

from .report import BenchReport, bench

__all__ = ["BenchReport", "bench"]
