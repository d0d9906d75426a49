"""The soak benchmark, short: 1,000 mixed HTTP, WebSocket and realtime requests from 50
concurrent clients in another process. Zero errors, every request answered with its own
payload, server RSS growth under a bound (the full 10,000-request run is
``benchmarks/soak.py``; its figures are in the README)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

SOAK = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak_module():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_thousand_mixed_requests_from_fifty_clients(serve, soak_module):
    server = serve(soak_module.SoakApp)
    tally = soak_module.soak(server, requests=1000, clients=50)
    assert tally["errors"] == []
    assert tally["sent"] == tally["answered"] == 1000
    assert tally["by_kind"] == {"http": 334, "websocket": 333, "realtime": 333}
    # the server saw each HTTP request once (plus the warm-up call) and none failed
    assert server.stats()["requests"] == 335 and server.stats()["errors"] == 0
    # measured +9 MiB for 1,000 requests on the dev machine (imports and pools warming up);
    # a per-request leak of even 64 KiB would add ~64 MiB
    growth = tally["rss_end"] - tally["rss_start"]
    assert growth < 48, soak_module.report(tally, 50)
    # and the server still answers afterwards
    assert server.client.call("/", {"id": 7}) == {"id": 7, "text": ""}
