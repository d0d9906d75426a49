"""What every console shares: the server's public surface, one client, the OpenAPI
document, and browser-facing URLs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..client import Client
from ..serving import browser_url
from .schema import JSON, components_of, model_schemas, route_schemas


def fetch_openapi(client: Client) -> tuple[JSON, str]:
    """The server's ``/openapi.json`` and an error text ("" when it came back)."""
    try:
        return client.get("/openapi.json"), ""
    except Exception as exc:  # shown in the playground; the route list still works
        return {}, f"could not read /openapi.json: {exc}"


@dataclass
class Context:
    """A server as the widgets see it: only its public API and a ``falkit.Client``."""

    server: Any
    client: Client
    openapi: JSON = field(default_factory=dict)
    openapi_error: str = ""

    @classmethod
    def of(cls, server: Any) -> Context:
        client = server.client  # sends the server's API key, if it has one
        openapi, error = fetch_openapi(client)
        return cls(server, client, openapi, error)

    def reload_openapi(self) -> None:
        self.openapi, self.openapi_error = fetch_openapi(self.client)

    def schemas(self, spec: Any) -> tuple[JSON | None, JSON | None, JSON]:
        """A route's (input, output) schemas and the components their refs point into."""
        inp, out = route_schemas(self.openapi, spec.path)
        if inp is None and out is None and spec.kind == "realtime":
            inp, out = model_schemas(self.server.app_cls, spec)
        source = inp or out
        if source and "x-falkit-defs" in source:
            defs = {**(inp or {}).get("x-falkit-defs", {}), **(out or {}).get("x-falkit-defs", {})}
            return inp, out, defs
        return inp, out, components_of(self.openapi)

    def browser_url(self, path: str = "") -> str:
        return browser_url(self.server, path)

    def rewrite(self, url: str) -> str:
        """An image URL on this server, made reachable from the browser (hub proxy)."""
        base = self.server.url
        return self.browser_url(url[len(base) :]) if url.startswith(base) else url

    def error_hint(self, since: float, request_id: str | None = None) -> str:
        """The last line of the error a 500 came from (the one logged with its request id,
        else the newest since ``since``), pointing at the Logs panel for the traceback."""
        ring = getattr(self.server, "ring", None)
        if ring is None:
            return ""
        errors = [e for e in ring.entries() if e.time >= since - 0.001 and e.level == "ERROR"]
        if request_id is not None:
            errors = [e for e in errors if f"(request {request_id})" in e.message] or errors
        if not errors:
            return ""
        last = errors[-1].message.strip().splitlines()[-1]
        return f"server log: {last} (full traceback in Logs)"

    def close(self) -> None:
        self.client.close()


def now() -> float:
    return time.time()
