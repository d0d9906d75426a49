"""The card ``%fal serve`` shows (and a ``Server``'s own display): URL, app, device,
setup time, status, limits and each route's kind and path, as text and as HTML."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ..asgi import describe_limits
from ..routes import KIND_LABELS
from .proxy import browser_url, proxy_root_path

if TYPE_CHECKING:
    from .server import Server


def card_rows(server: Server) -> list[tuple[str, str]]:
    """The facts the card shows, as (label, value) pairs."""
    setup = f"{server.setup_seconds:.2f} s" if server.setup_seconds is not None else "-"
    rows = [
        ("app", server.app_name),
        ("url", server.url),
        ("device", server.device.describe()),
        ("setup", setup),
        ("status", server.last_action or ("running" if server.running else "stopped")),
    ]
    if proxy_root_path(server.port):
        # On JupyterHub/Binder the browser cannot reach the loopback URL; this link it can.
        rows.insert(2, ("browser", browser_url(server)))
    limits = describe_limits(server.limits)
    return [*rows, ("limits", limits)] if limits else rows


def card_text(server: Server) -> str:
    """The plain-text card (the fallback of the HTML one)."""
    lines = [f"{label:>7}: {value}" for label, value in card_rows(server)]
    lines += [f"  {KIND_LABELS[r.kind]:>5} {r.path}  ({r.method})" for r in server.routes]
    return "\n".join(lines)


def _fact_html(label: str, value: str) -> str:
    code = f"<code>{html.escape(value)}</code>"
    if label != "browser":
        return code
    link = html.escape(value, quote=True)
    docs = html.escape(value.rstrip("/") + "/docs", quote=True)
    new_tab = "target='_blank'"
    return f"<a href='{link}' {new_tab}>{code}</a> (<a href='{docs}' {new_tab}>docs</a>)"


def card_html(server: Server) -> str:
    """The rich card: URL, app name, each route's kind and path, device, setup time."""
    esc = html.escape
    facts = "".join(
        f"<tr><th style='text-align:right;padding-right:8px'>{esc(label)}</th>"
        f"<td>{_fact_html(label, value)}</td></tr>"
        for label, value in card_rows(server)
    )
    routes = "".join(
        f"<tr><td><b>{KIND_LABELS[r.kind]}</b></td><td><code>{esc(r.path)}</code></td>"
        f"<td>{esc(r.method)}</td></tr>"
        for r in server.routes
    )
    return (
        "<div class='falkit-card' style='border:1px solid #ccc;border-radius:6px;"
        "padding:6px 10px;display:inline-block'>"
        f"<table>{facts}</table><table>{routes}</table></div>"
    )
