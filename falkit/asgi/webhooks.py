"""fal's queue webhooks, locally: a request submitted with ``?fal_webhook=URL`` (what
``fal_client.submit(..., webhook_url=URL)`` sends) has its outcome POSTed to that URL once
it completes, in fal's body (fal's docs, "Webhooks")::

    {"request_id": ..., "gateway_request_id": ..., "status": "OK" | "ERROR",
     "payload": <the result's JSON, or null>, "error": null | "Invalid status code: 422"}

with ``payload_error`` instead of a payload when the result is not JSON.

A local server never calls out: only loopback URLs (``127.0.0.0/8``, ``::1``,
``localhost``) are taken, any other is refused at submit with a 400 that says so. The POST
goes straight to the URL (no proxy from the environment, no redirects followed), with
fal's ``X-Fal-Webhook-Request-Id`` and ``X-Fal-Webhook-Timestamp`` headers but no
signature: there is no fal key to sign with. A failed delivery is tried ``ATTEMPTS`` times
in all, then written to the server's log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from .guard import is_loopback

logger = logging.getLogger("falkit.server")

ATTEMPTS = 3
TIMEOUT = 15.0  # seconds per attempt, fal's own delivery timeout
_NOT_JSON = "the result is not JSON: fetch it from the request's response_url instead"


def problem(url: str) -> str | None:
    """Why the local queue refuses ``url`` as a webhook, or ``None`` when it takes it."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return f"fal_webhook is not a valid URL: {url!r}"
    if parts.scheme not in ("http", "https") or not host:
        return f"fal_webhook must be an http(s) URL, got {url!r}"
    if not is_loopback(host):
        return (
            f"fal_webhook {url!r} is not on this machine: the local queue only calls "
            "loopback URLs (http://127.0.0.1:<port>/..., http://localhost:<port>/...), "
            "never the internet"
        )
    return None


def payload(request_id: str, status: int, body: bytes) -> dict[str, Any]:
    """fal's webhook body for a request answered ``status`` with ``body``."""
    out: dict[str, Any] = {"request_id": request_id, "gateway_request_id": request_id}
    ok = 200 <= status < 300
    out["status"] = "OK" if ok else "ERROR"
    try:
        out["payload"] = json.loads(body) if body else None
    except ValueError:
        out["payload"] = None
        out["payload_error"] = _NOT_JSON
    out["error"] = None if ok else f"Invalid status code: {status}"
    return out


async def deliver(url: str, body: dict[str, Any]) -> bool:
    """POST ``body`` to ``url`` (already checked by ``problem``); True once it is taken
    (a 2xx answer), False after ``ATTEMPTS`` failures, which are logged."""
    import httpx

    headers = {
        "X-Fal-Webhook-Request-Id": body["request_id"],
        "X-Fal-Webhook-Timestamp": str(int(time.time())),
    }
    failure = ""
    # trust_env=False: an HTTP(S)_PROXY from the environment must not carry this off-host.
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            try:
                answer = await client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            if answer.is_success:
                return True
            failure = f"it answered {answer.status_code}"
    logger.warning(
        "webhook for request %s to %s not delivered after %d attempts (%s)",
        body["request_id"],
        url,
        ATTEMPTS,
        failure,
    )
    return False
