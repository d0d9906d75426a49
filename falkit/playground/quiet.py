"""Quiet comms: no ``busy`` status for the messages of a widget that streams frames.

ipykernel publishes ``busy`` before it handles each message from the page and ``idle``
after, comm messages included. JupyterLab redraws its kernel status (the toolbar's
indicator, the favicon, the status bar) on every change, and on this machine that took
~12 ms of the page's main thread a message: an anywidget echoing a 4 KB buffer through a
real JupyterLab and Chromium answered in 17 ms p50, and in 4.3 ms with no ``busy`` for
it (the same echo from a page with no JupyterLab: 4.8 ms). A live source sends up to
dozens of frames a second, each handled in microseconds (put in a mailbox), so its
``busy`` says nothing and only costs the page a redraw each.

``quiet(comm_id)`` drops the ``busy`` status of messages to that comm; ``idle`` still goes
out, so the page's status stays ``idle`` (JupyterLab draws nothing when it does not change)
and every client still sees each message completed (JupyterLab disposes a message's
future on ``idle``). Other comms, cells and every other request keep both. Without a
running ipykernel (or one without ``_publish_status``) nothing is changed.
"""

from __future__ import annotations

from typing import Any

from ..serving import running_kernel

_quiet: set[str] = set()
_installed_on: Any = None


def quiet(comm_id: str) -> None:
    """No ``busy`` status for messages to ``comm_id`` from now on."""
    _install()
    _quiet.add(comm_id)


def unquiet(comm_id: str) -> None:
    _quiet.discard(comm_id)


def is_quiet(message: Any) -> bool:
    """True for a message to a quiet comm (``message``: ipykernel's parent message)."""
    if not _quiet or not isinstance(message, dict):
        return False
    header = message.get("header") or {}
    if header.get("msg_type") != "comm_msg":
        return False
    content = message.get("content") or {}
    return content.get("comm_id") in _quiet


def _install() -> None:
    global _installed_on
    kernel = running_kernel()
    if kernel is None or _installed_on is kernel:
        return
    publish = getattr(kernel, "_publish_status", None)
    get_parent = getattr(kernel, "get_parent", None)
    if publish is None or get_parent is None:
        return

    def _publish_status(status: str, channel: str, parent: Any = None) -> Any:
        if status == "busy" and is_quiet(parent or get_parent(channel)):
            return None
        return publish(status, channel, parent)

    kernel._publish_status = _publish_status
    _installed_on = kernel
