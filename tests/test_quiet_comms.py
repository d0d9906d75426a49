"""A live source's comm is quiet (falkit.playground.quiet): in a real ipykernel, driven
over its channels as JupyterLab drives it, messages to the live view's comm get no
``busy`` status (JupyterLab redrew its kernel status for each) but still their ``idle``
and their answers; other widgets' comms and cells keep both; a closed view's comm is
back to normal."""

from __future__ import annotations

import json
import time
from typing import Any

from _support import run_in_kernel as run

SETUP = """
import json
import ipywidgets as W
from falkit.playground.live_view import LiveView

view = LiveView()
view.on_msg(lambda widget, content, buffers: view.send({"echo": content, "n": len(buffers)}))
slider = W.IntSlider()
print(json.dumps({"view": view.comm.comm_id, "slider": slider.comm.comm_id}))
"""


def send_comm(kc: Any, comm_id: str, data: dict, buffers: list[bytes] | None = None) -> list:
    """Send a comm message as a page does; the iopub messages it caused, up to its idle."""
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    kc.session.send(kc.shell_channel.socket, msg, buffers=buffers or [])
    caused: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if got["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        caused.append(got)
        if got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
            return caused
    raise AssertionError(f"no idle for the comm message; saw {caused}")


def kinds(caused: list[dict]) -> list[str]:
    return [
        m["content"]["execution_state"] if m["msg_type"] == "status" else m["msg_type"]
        for m in caused
    ]


def test_a_live_views_comm_has_no_busy_but_idle_and_its_answer(kernel) -> None:
    ids = json.loads(run(kernel, SETUP).strip().splitlines()[-1])
    frame = {"method": "custom", "content": {"kind": "frame", "seq": 1, "mime": "image/jpeg"}}
    for _ in range(3):
        caused = send_comm(kernel, ids["view"], frame, [b"\xff\xd8 not much of a jpeg"])
        assert kinds(caused) == ["comm_msg", "idle"]
        answer = caused[0]["content"]["data"]
        assert answer["content"] == {"echo": frame["content"], "n": 1}
    # Another widget's comm, and a cell: busy and idle as ipykernel sends them.
    update = {"method": "update", "state": {"value": 5}, "buffer_paths": []}
    assert kinds(send_comm(kernel, ids["slider"], update))[0] == "busy"
    assert run(kernel, "print(slider.value)").strip() == "5"
    # Closed, the view's comm id is not quiet any more.
    run(kernel, "view.close()")
    from_closed = kinds(send_comm(kernel, ids["view"], frame, [b"x"]))
    assert from_closed[0] == "busy" and from_closed[-1] == "idle"


def test_cells_keep_their_busy_status_once_a_view_is_quiet(kernel) -> None:
    run(kernel, SETUP)
    msg_id = kernel.execute("1 + 1")
    states = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "idle" not in states:
        got = kernel.get_iopub_msg(timeout=30)
        if got["parent_header"].get("msg_id") == msg_id and got["msg_type"] == "status":
            states.append(got["content"]["execution_state"])
    assert states == ["busy", "idle"]
