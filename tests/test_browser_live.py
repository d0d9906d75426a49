"""Live media in a real browser: JupyterLab on loopback, Debian's Chromium with its fake
camera, driven by Playwright. The notebook serves an app with two realtime routes and
opens the playground; the test starts the camera source, sees output frames appear in the
page and the counter grow, stops it and sees the server's session end, then does the same
with the sketch pad and synthetic strokes, and with the fake microphone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import poller
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _run_all_cells, write_notebook
from test_browser import lab as lab  # the JupyterLab fixture, reused

# Chromium's own fake camera (a moving test pattern) and microphone, granted without a
# permission prompt.
MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

APP_CELL = """\
import io
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import falkit as fal
from PIL import Image, ImageOps
from pydantic import BaseModel

SESSIONS = Path({sessions!r})
SESSIONS.write_text(json.dumps({{"opened": 0, "closed": 0}}))


def count(key):
    state = json.loads(SESSIONS.read_text())
    state[key] += 1
    SESSIONS.write_text(json.dumps(state))


def invert(data: bytes) -> bytes:
    image = ImageOps.invert(Image.open(io.BytesIO(data)).convert("RGB"))
    out = io.BytesIO()
    image.save(out, format="JPEG")
    return out.getvalue()


class Frame(BaseModel):
    image: bytes


class Clip(BaseModel):
    audio: bytes


class LiveApp(fal.App):
    @fal.realtime("/camera")
    async def camera(self, inputs: AsyncIterator[Frame]) -> AsyncIterator[dict]:
        count("opened")
        try:
            async for frame in inputs:
                yield {{"image": invert(frame.image), "size": len(frame.image)}}
        finally:
            count("closed")

    @fal.realtime("/sketch")
    def sketch(self, input: Frame) -> dict:
        return {{"image": invert(input.image)}}

    @fal.realtime("/listen")
    def listen(self, input: Clip) -> dict:
        with wave.open(io.BytesIO(input.audio)) as clip:
            rate = clip.getframerate()
            return {{"rate": rate, "seconds": clip.getnframes() / rate}}
"""


def _notebook(root: Path) -> Path:
    return write_notebook(
        root / "live.ipynb",
        [
            APP_CELL.format(sessions=str(root / "sessions.json")),
            "%fal serve LiveApp",
            "pg = fal.playground(fal.get_server('LiveApp'))\npg.open_route('/camera')\npg",
        ],
    )


def _sessions(root: Path) -> dict[str, int]:
    try:
        return json.loads((root / "sessions.json").read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return {}


_until = poller(30.0, interval=0.1)


def _outputs(page) -> int:
    return int(page.locator(".falkit-live-counter").get_attribute("data-outputs") or 0)


def _wait_outputs(page, count: int) -> None:
    page.wait_for_function(
        "n => Number(document.querySelector('.falkit-live-counter')?.dataset.outputs) >= n",
        arg=count,
        timeout=60_000,
    )


@pytest.mark.timeout(300)
def test_camera_and_sketch_pad_stream_from_a_real_browser(lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    _notebook(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    failure = ARTIFACTS / "live-failure.png"
    failure.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + MEDIA_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(60_000)
            try:
                page.goto(f"{base}/lab/tree/live.ipynb?token={token}")
                _run_all_cells(page)
                live = page.locator(".falkit-live")
                expect(live).to_be_visible(timeout=90_000)

                # the camera: frames go out, inverted frames come back and are shown
                page.locator(".falkit-live-start").click()
                _wait_outputs(page, 5)
                src = page.locator(".falkit-live-output").get_attribute("src") or ""
                assert src.startswith("blob:"), src
                grown = _outputs(page)
                _wait_outputs(page, grown + 5)  # the counter keeps growing
                assert _sessions(tmp_path)["opened"] == 1
                expect(page.locator(".falkit-live-stats")).to_contain_text("frames/s")
                expect(page.locator(".falkit-live-stats svg")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "live-camera.png"), full_page=True)

                # stop: the session ends on the server and the camera is released
                page.locator(".falkit-live-stop").click()
                assert _until(lambda: _sessions(tmp_path).get("closed") == 1), _sessions(tmp_path)
                page.wait_for_function(
                    "() => document.querySelector('.falkit-live-video').srcObject === null"
                )
                expect(page.locator(".falkit-live-state")).to_contain_text("stopped")

                # the sketch pad: synthetic strokes are sent stroke by stroke
                page.get_by_role("button", name="/sketch", exact=True).click()
                expect(page.get_by_text("/sketch (sketch, msgpack)")).to_be_visible()
                page.locator(".falkit-live-source select").select_option(label="sketch pad")
                page.locator(".falkit-live-start").click()
                pad = page.locator(".falkit-live-sketch")
                expect(pad).to_be_visible()
                box = pad.bounding_box()
                assert box is not None
                for stroke in range(3):
                    y = box["y"] + box["height"] * (0.25 + 0.25 * stroke)
                    page.mouse.move(box["x"] + 20, y)
                    page.mouse.down()
                    for step in range(1, 11):
                        page.mouse.move(box["x"] + 20 + step * (box["width"] - 40) / 10, y)
                        page.wait_for_timeout(30)
                    page.mouse.up()
                _wait_outputs(page, 3)
                src = page.locator(".falkit-live-output").get_attribute("src") or ""
                assert src.startswith("blob:"), src
                page.screenshot(path=str(ARTIFACTS / "live-sketch.png"), full_page=True)
                page.locator(".falkit-live-stop").click()
                expect(page.locator(".falkit-live-state")).to_contain_text("stopped")

                # the microphone: WAV chunks of the fake device's tone, answered as text
                page.get_by_role("button", name="/listen", exact=True).click()
                expect(page.get_by_text("/listen (listen, msgpack)")).to_be_visible()
                page.locator(".falkit-live-start").click()
                _wait_outputs(page, 3)
                expect(page.locator(".falkit-live-log")).to_contain_text('"rate": 16000')
                page.locator(".falkit-live-stop").click()
                expect(page.locator(".falkit-live-state")).to_contain_text("stopped")
                errors = page.locator(".falkit-live-error").all_inner_texts()
                assert not any(errors), errors
            except Exception:
                page.screenshot(path=str(failure), full_page=True)
                raise
        finally:
            browser.close()
