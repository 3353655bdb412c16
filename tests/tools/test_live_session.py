"""A live session as a performer runs it: ``bendbridge serve``, ``bendbridge bridge`` on the demo config
with REAPER-style OSC and no audio source, and the viewer page open in headless Chromium."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from pythonosc.udp_client import SimpleUDPClient

from bendbridge.server.model import EMBEDDED_MODEL

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bridge"))
from headless_chromium import Browser  # noqa: E402
from jack_helpers import RATE, Player, start_jack_server  # noqa: E402

jack_server = pytest.fixture(start_jack_server)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_the_demo_runs_live_on_osc_without_audio_and_the_page_shows_its_frames(server_process, demo, tmp_path):
    server = server_process(EMBEDDED_MODEL, tmp_path / "out")
    osc_port = _free_udp_port()
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bendbridge.tools.cli", "bridge", "--config", str(demo["config"]), "--server",
         server.url, "--osc-port", str(osc_port), "--view-port", "0", "--output", "live"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(bridge.stdout.readline, "")), daemon=True).start()
    browser = None
    try:
        _wait(lambda: any("viewer http://" in line for line in lines), 120, "the bridge to start")
        url = re.search(r"viewer (http://[^\s,]+)", "".join(lines)).group(1)
        browser = Browser()
        browser.call("Page.navigate", url=url)
        osc = SimpleUDPClient("127.0.0.1", osc_port)
        osc.send_message("/tempo/raw", 120.0)
        osc.send_message("/time", 0.0)
        osc.send_message("/play", 1)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\xffnot osc\x00" * 8, ("127.0.0.1", osc_port))
        shown = lambda: browser.evaluate("window.bb.shown") or -1  # noqa: E731
        _wait(lambda: shown() >= 24, 120, "a second of frames on the page: " + "".join(lines[-3:]))
        shot = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB"))
        assert shot[100:380, 200:440].std() > 5  # a rendered picture, not the black page
        assert bridge.poll() is None  # garbage on the OSC port did not stop it
    finally:
        if browser is not None:
            browser.close()
        bridge.send_signal(signal.SIGINT)  # how a performer ends the session
        bridge.wait(60)
    out = "".join(lines)
    assert bridge.returncode == 0, out
    assert "no data from feature centroid: it holds a neutral value" in out  # named once …
    assert out.count("no data from feature centroid") == 1  # … not on every frame
    summary = next(line for line in lines if line.startswith("live session:"))
    delivered = int(re.search(r"(\d+) delivered", summary).group(1))
    assert delivered >= 8 and "inputs with no data: feature centroid" in summary and "Traceback" not in out
    assert len(list((tmp_path / "out" / "live").glob("*.png"))) >= delivered  # every delivered frame is on disk


@pytest.mark.slow
def test_the_demo_runs_live_on_jack_audio_from_a_file(server_process, demo, tmp_path, jack_server):
    from bendbridge.bridge.features import load_audio

    song = load_audio(demo["audio"], RATE).astype(np.float32)
    player = Player(jack_server, song)
    server = server_process(EMBEDDED_MODEL, tmp_path / "out")
    osc_port = _free_udp_port()
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bendbridge.tools.cli", "bridge", "--config", str(demo["config"]), "--server",
         server.url, "--osc-port", str(osc_port), "--no-view", "--audio-in", "jack:player:out_1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(bridge.stdout.readline, "")), daemon=True).start()
    try:
        _wait(lambda: any("audio: JACK audio from player:out_1" in line for line in lines), 120, "the bridge")
        player.go = True
        osc = SimpleUDPClient("127.0.0.1", osc_port)
        osc.send_message("/tempo/raw", 120.0)
        osc.send_message("/time", 0.0)
        osc.send_message("/play", 1)
        _wait(lambda: any(re.search(r"delivered ([1-9]\d)", line) for line in lines), 120, "ten frames")
    finally:
        bridge.send_signal(signal.SIGINT)
        bridge.wait(60)
        player.close()
    out = "".join(lines)
    assert bridge.returncode == 0, out
    assert "no data from feature" not in out  # the demo's audio features hear the song through JACK
    assert "Traceback" not in out
