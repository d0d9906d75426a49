"""``LiveView``: the browser half of a live source, an anywidget whose ESM module
(``live_view.js``) captures the camera, the microphone or a sketch pad and shows outputs.

Frames travel over the widget's comm as binary buffers, never base64: the page sends
``{"kind": "frame", "seq", "mime", "rtt"}`` with the encoded frame (JPEG, PNG, WAV) as its
one buffer, and ``{"kind": "rtt"}`` with the round trips it measured; the kernel sends
``{"kind": "reset"}`` when a session opens, ``{"kind": "output", "seq", "mime"}`` per
output, with the image to show as its buffer when there is one, and
``{"kind": "ack", "seq", "dropped"}`` for a dropped frame (and, where outputs are not
matched to frames, for each frame leaving the kernel's mailbox). The page captures only
when it may send: fewer than ``window`` frames unanswered (or the last one acked), and
``interval_ms`` passed. The widget's comm is quiet (``falkit.playground.quiet``): no
``busy`` status per frame, which cost the page a JupyterLab redraw each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import traitlets as T

from .quiet import quiet, unquiet

_ESM = Path(__file__).with_name("live_view.js")


class LiveView(anywidget.AnyWidget):  # type: ignore[misc]
    """The page side of a live source; the kernel side sets its traits."""

    # Read once, as text: anywidget watches a file given as a path when ANYWIDGET_HMR is
    # set, in a thread the playground does not own.
    _esm = _ESM.read_text(encoding="utf-8")

    source = T.Unicode("camera").tag(sync=True)  # camera | microphone | sketch | loop
    running = T.Bool(False).tag(sync=True)
    width = T.Int(512).tag(sync=True)
    height = T.Int(512).tag(sync=True)
    interval_ms = T.Int(128).tag(sync=True)
    window = T.Int(2).tag(sync=True)  # 0: outputs are not matched to frames
    mime = T.Unicode("image/jpeg").tag(sync=True)
    quality = T.Float(0.85).tag(sync=True)
    error = T.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Frames come dozens a second: no ``busy`` status (and page redraw) for each.
        self._comm_id = getattr(self.comm, "comm_id", None)
        if self._comm_id:
            quiet(self._comm_id)

    def close(self) -> None:
        if self._comm_id:
            unquiet(self._comm_id)
        super().close()

    def __repr__(self) -> str:
        return f"<LiveView source={self.source!r} running={self.running}>"

    def show_output(self, seq: int, image: tuple[bytes, str] | None) -> None:
        """Tell the page an output arrived for frame ``seq`` (-1: not matched), with the
        image to show as (bytes, mime) when it has one."""
        if image is None:
            self.send({"kind": "output", "seq": seq})
        else:
            self.send({"kind": "output", "seq": seq, "mime": image[1]}, buffers=[image[0]])

    def ack(self, seq: int, dropped: bool) -> None:
        self.send({"kind": "ack", "seq": seq, "dropped": dropped})

    def reset(self) -> None:
        self.send({"kind": "reset"})


def frame_message(content: Any, buffers: Any) -> tuple[int, bytes, str] | None:
    """(seq, frame bytes, mime) of a page's frame message; None for any other message
    or a malformed one (a page is not trusted to be well formed)."""
    if not isinstance(content, dict) or content.get("kind") != "frame" or not buffers:
        return None
    seq, mime = content.get("seq"), content.get("mime")
    if not isinstance(seq, int) or not isinstance(mime, str):
        return None
    return seq, bytes(buffers[0]), mime


def round_trips(content: Any) -> list[float]:
    """The page-measured round trips (ms) a frame or rtt message carries."""
    values = content.get("rtt") if isinstance(content, dict) else None
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and 0 <= v < 600_000]
