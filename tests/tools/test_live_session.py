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
from jack_helpers import RATE, Master, MtcWriter, Player, start_jack_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("frozen_heap")  # as the live bridge runs (see run_live)
jack_server = pytest.fixture(start_jack_server)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hear_ctrl_c() -> None:
    """In the bridge's process before it starts: SIGINT back to its default. A shell without job
    control starts background commands (a test run launched with ``&``) with SIGINT ignored, the
    children inherit that, and the Ctrl-C these tests send would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_bridge(demo, *options: str) -> tuple[subprocess.Popen, list[str]]:
    """``bendbridge bridge --config DEMO OPTIONS`` in its own process; its output lines, collected as
    they come."""
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bendbridge.tools.cli", "bridge", "--config", str(demo["config"]), *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=_hear_ctrl_c,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(bridge.stdout.readline, "")), daemon=True).start()
    return bridge, lines


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_the_demo_runs_live_on_osc_without_audio_and_the_page_shows_its_frames(server_process, demo, tmp_path):
    server = server_process(EMBEDDED_MODEL, tmp_path / "out")
    osc_port = _free_udp_port()
    bridge, lines = _start_bridge(
        demo, "--server", server.url, "--osc-port", str(osc_port), "--view-port", "0", "--output", "live"
    )  # fmt: skip
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
    bridge, lines = _start_bridge(
        demo, "--server", server.url, "--osc-port", str(osc_port), "--no-view", "--audio-in", "jack:player:out_1"
    )  # fmt: skip
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


@pytest.mark.slow
def test_the_demo_follows_jack_transport_from_a_timebase_master(server_process, demo, tmp_path, jack_server):
    daw = Master(jack_server, 512, bpm=90.0, name="daw")
    roller = daw.client
    server = server_process(EMBEDDED_MODEL, tmp_path / "out")
    bridge, lines = _start_bridge(
        demo, "--server", server.url, "--osc-port", str(_free_udp_port()), "--no-view", "--sync", "jack",
        "--output", "jack",
    )  # fmt: skip
    try:
        _wait(lambda: any("playhead from jack" in line for line in lines), 120, "the bridge: " + "".join(lines))
        time.sleep(0.5)
        roller.transport_frame = RATE * 8  # 8 s at 90 BPM in 3/4: beat 12, bar 5
        time.sleep(0.2)  # a locate, then play (JACK may roll one cycle from the old place if both come at once)
        roller.transport_start()
        _wait(lambda: any(re.search(r"delivered ([1-9]\d)", line) for line in lines), 120, "ten frames")
    finally:
        bridge.send_signal(signal.SIGINT)
        bridge.wait(60)
        roller.transport_stop()
        daw.close()
    out = "".join(lines)
    assert bridge.returncode == 0 and "Traceback" not in out, out
    status = [line for line in lines if "sync jack rolling" in line]
    assert status and "90.00 BPM, 3/4" in status[-1] and "offset p50" in status[-1]
    assert re.search(r"▶ (5|6|7):\d:\d+ \((8|9|10)\.\d\d s\)", status[0])  # the master's bars and seconds
    frames = sorted(int(p.stem.split("_")[-1]) for p in (tmp_path / "out" / "jack").glob("*.png"))
    assert frames and all(f == 0 or f >= 8 * 24 for f in frames)  # stopped: the frame at 0 only; then from 8 s
    assert "sync jack" in next(line for line in lines if line.startswith("live session:"))


@pytest.mark.slow
def test_the_demo_follows_midi_time_code_on_a_jack_midi_port(server_process, demo, tmp_path, jack_server):
    from fractions import Fraction

    pytest.importorskip("rtmidi")
    writer = MtcWriter(jack_server)
    server = server_process(EMBEDDED_MODEL, tmp_path / "out")
    bridge, lines = _start_bridge(
        demo, "--server", server.url, "--osc-port", str(_free_udp_port()), "--no-view", "--sync", "mtc",
        "--midi-in", "mtcgen:out", "--midi-backend", "mido.backends.rtmidi/UNIX_JACK", "--output", "mtc",
    )  # fmt: skip
    try:
        _wait(lambda: any("playhead from mtc" in line for line in lines), 120, "the bridge: " + "".join(lines))
        writer.play(Fraction(6), 1, 30.0)  # 00:00:06:00 at 25 fps, running
        _wait(lambda: any(re.search(r"delivered ([1-9]\d)", line) for line in lines), 120, "ten frames")
    finally:
        bridge.send_signal(signal.SIGINT)
        bridge.wait(60)
        writer.close()
    out = "".join(lines)
    assert bridge.returncode == 0 and "Traceback" not in out, out
    assert "MTC locked at 00:00:06:00 (25 fps)" in out
    status = [line for line in lines if "sync mtc rolling (25 fps)" in line]
    assert status and re.search(r"\((6|7|8|9|10)\.\d\d s\)", status[0])
    frames = sorted(int(p.stem.split("_")[-1]) for p in (tmp_path / "out" / "mtc").glob("*.png"))
    assert frames and frames[0] >= 6 * 24  # rendered from where the code is


@pytest.mark.parametrize(
    "options, match",
    [
        (["--sync", "mtc"], "--midi-in: --sync mtc reads MIDI: name the input port with --midi-in"),
        (["--sync", "link", "--quantum", "0"], "--quantum"),
        (["--quantum", "3"], "--quantum: only --sync link uses it"),
        (["--sync", "jack", "--link", "tcp://127.0.0.1:5557"], "give --link (the plugin's transport) or --sync jack"),
        (["--clock", "--sync", "jack"], "--clock is --sync clock"),
        (["--midi", "a.mid", "--rpp", "b.rpp"], "give one project file"),
        (["--sync", "osc", "--rpp", "missing.rpp"], "missing.rpp: no such file"),
    ],
)
def test_bad_sync_options_are_one_line_and_exit_2(demo, options, match):
    r = subprocess.run(
        [sys.executable, "-m", "bendbridge.tools.cli", "bridge", "--config", str(demo["config"]), "--server",
         "tcp://127.0.0.1:9", *options],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_following_jack_with_no_server_is_one_line_and_exit_2(demo):
    env = {**os.environ, "JACK_DEFAULT_SERVER": "absent-bendbridge", "JACK_NO_START_SERVER": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "bendbridge.tools.cli", "bridge", "--config", str(demo["config"]), "--sync", "jack"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "no JACK server 'absent-bendbridge' to follow" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
