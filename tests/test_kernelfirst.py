"""Cells first (``falkit.serving.kernel``), in a real kernel: serving tunes the kernel's GIL
switch interval and collector threshold unless the user set them, marks the kernel busy
exactly while ipykernel handles a message, and a cell that waits for its own server is not
held up by it. Outside a kernel nothing changes."""

from __future__ import annotations

import gc
import json
import sys
import textwrap

import httpx
from _support import run_in_kernel as run

import falkit as fal
from falkit.serving import kernel as _kernelfirst

APP = textwrap.dedent(
    """
    import json, sys, gc
    import falkit as fal
    from falkit.serving import kernel as kf

    class Probe(fal.App):
        @fal.endpoint("/")
        def probe(self) -> dict:
            # what a server thread sees of the kernel, at this request
            return {"kernel_idle": kf._kernel_idle.is_set()}

    server = fal.serve(Probe)
    print(json.dumps({"url": server.url}))
    """
)


def test_serving_tunes_the_kernel_and_marks_its_busy_time(kernel):
    before = json.loads(
        run(
            kernel,
            "import gc, sys, json\n"
            "print(json.dumps([gc.get_threshold(), sys.getswitchinterval()]))",
        )
    )
    url = json.loads(run(kernel, APP).strip().splitlines()[-1])["url"]
    state = json.loads(
        run(
            kernel,
            "print(json.dumps([gc.get_threshold(), sys.getswitchinterval(), "
            "kf._kernel_idle.is_set(), kf._state['user_since'] > 0]))",
        )
    )
    assert before == [[700, 10, 10], 0.005]
    assert state[0] == [_kernelfirst.GC_THRESHOLD, 10, 10]
    assert state[1] == _kernelfirst.SWITCH_INTERVAL
    # during a cell's own code: the kernel is handling a message, its user code has begun
    assert state[2:] == [False, True]

    # Between cells the kernel is idle: a request from outside sees it so.
    with httpx.Client(timeout=10) as client:
        assert client.post(url + "/", json={}).json() == {"kernel_idle": True}

    # A cell that waits for its own server: every call is answered (the server sees the
    # kernel busy), and the cell ends normally.
    calls = run(
        kernel,
        textwrap.dedent(
            """
            with fal.Client(server.url) as c:
                seen = [c.call("/", {})["kernel_idle"] for _ in range(30)]
            print(json.dumps(seen))
            """
        ),
    )
    assert json.loads(calls) == [False] * 30
    # ... and once that message is handled the kernel is idle again.
    with httpx.Client(timeout=10) as client:
        assert client.post(url + "/", json={}).json() == {"kernel_idle": True}


def test_values_the_user_set_are_left_alone(kernel):
    run(kernel, "import gc, sys; gc.set_threshold(1234, 5, 6); sys.setswitchinterval(0.003)")
    run(kernel, APP)
    tuned = run(kernel, "print(json.dumps([gc.get_threshold(), sys.getswitchinterval()]))")
    assert json.loads(tuned) == [[1234, 5, 6], 0.003]


def test_outside_a_kernel_nothing_changes(serve):
    class Plain(fal.App):
        @fal.endpoint("/")
        def run(self) -> dict:
            return {"ok": True}

    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    server = serve(Plain)
    assert _kernelfirst.install() is False
    assert (gc.get_threshold(), sys.getswitchinterval()) == (thresholds, interval)
    assert _kernelfirst._kernel_idle.is_set()
    with httpx.Client(timeout=10) as client:
        assert client.post(server.url + "/", json={}).json() == {"ok": True}
