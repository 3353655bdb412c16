"""The live screen in a real browser: headless Chromium on the viewer page, frames pushed as they come."""

from __future__ import annotations

import io
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from bendbridge.bridge.viewer import Viewer
from bendbridge.protocol.errors import BendbridgeError

from .headless_chromium import Browser

FPS = 12  # one frame every 83 ms
COLOURS = [(255 * (i % 2), 40 + 17 * i, 255 - 20 * i) for i in range(12)]


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture()
def page():
    with Viewer() as viewer:
        browser = Browser()
        try:
            browser.call("Page.navigate", url=viewer.url)
            _wait(lambda: viewer.watchers == 1)
            yield viewer, browser
        finally:
            browser.close()


def test_the_page_shows_each_frame_within_one_frame_period_of_its_due_time(page):
    viewer, browser = page
    start = time.time() + 0.6
    for i, colour in enumerate(COLOURS):
        viewer.publish(
            i, _png(colour), start + i / FPS, {"bar_beat": f"1:{i % 4 + 1}:000", "params": {"spin": {"angle": i / 10}}}
        )
    _wait(lambda: browser.evaluate("window.bb.shown") == len(COLOURS) - 1)
    log = browser.evaluate("window.bb.log")
    assert [e["frame"] for e in log] == list(range(len(COLOURS)))  # every frame, in order
    early_late = [e["at"] - e["due"] for e in log]  # milliseconds after the due time
    print("ms after due:", early_late)
    assert min(early_late) >= -3 and max(early_late) <= 1000 / FPS, early_late
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    centre = np.asarray(shot)[shot.height // 2, shot.width // 2]
    assert np.abs(centre.astype(int) - COLOURS[-1]).max() <= 2  # the rendered frame is what is on screen
    overlay = browser.evaluate("document.getElementById('stats').textContent")
    assert "1:4:000" in overlay and "spin.angle" in browser.evaluate("document.getElementById('meters').textContent")


def test_a_frame_that_arrives_late_is_shown_at_once_and_an_older_one_never_replaces_it(page):
    viewer, browser = page
    now = time.time()
    viewer.publish(5, _png(COLOURS[5]), now - 0.2)  # already due
    _wait(lambda: browser.evaluate("window.bb.shown") == 5)
    viewer.publish(4, _png(COLOURS[4]), now - 0.3)  # due before what is on screen: skipped
    _wait(lambda: browser.evaluate("window.bb.skipped") == 1)
    assert browser.evaluate("window.bb.shown") == 5


def test_a_second_viewer_and_a_viewer_that_leaves_do_not_disturb_the_session(page):
    viewer, browser = page
    got: list[bytes] = []

    def second_viewer() -> None:
        with urllib.request.urlopen(viewer.url + "events", timeout=10) as stream:
            while len(got) < 2:
                line = stream.readline()
                if line.startswith(b"event: frame"):
                    got.append(line)
        # leaves here, mid-stream

    t = threading.Thread(target=second_viewer)
    t.start()
    _wait(lambda: viewer.watchers == 2)
    for i in range(4):
        viewer.publish(i, _png(COLOURS[i]), time.time())
        time.sleep(0.05)
    t.join(timeout=10)
    assert len(got) == 2
    for i in range(4, 8):  # the first page still gets every frame after the second one left
        viewer.publish(i, _png(COLOURS[i]), time.time())
        time.sleep(0.05)
    _wait(lambda: browser.evaluate("window.bb.shown") == 7)
    _wait(lambda: viewer.watchers == 1)


def test_a_viewer_beyond_loopback_must_be_asked_for():
    with pytest.raises(BendbridgeError, match=r"'0\.0\.0\.0' is not a loopback address; add --view-remote"):
        Viewer("0.0.0.0")
    with Viewer("0.0.0.0", allow_remote=True) as v:
        assert v.url.startswith("http://0.0.0.0:")


def test_the_page_and_its_overlay_switch(page):
    viewer, browser = page
    browser.call("Page.navigate", url=viewer.url + "?overlay=0")
    _wait(lambda: browser.evaluate("document.readyState") == "complete")
    assert browser.evaluate("document.getElementById('overlay').classList.contains('hidden')") is True
