"""Headless Ardour 7 as the JACK transport source: Ardour rolls, relocates and crosses a tempo
change on a ``jackd -d dummy`` server; the bridge's JACK follower and live bridge request frames,
and each is checked against what JACK said at the frame's due time (sampled by a separate client)
and against Ardour's own bar|beat|tick published as timebase master."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bendbridge.bridge.live import LiveBridge
from bendbridge.bridge.live_status import percentile
from bendbridge.bridge.mapping import MusicMapping
from bendbridge.bridge.projects import read_project
from bendbridge.bridge.sync_jack import JackTransport
from bendbridge.bridge.timeline import FrameGrid, Timeline

sys.path.insert(0, os.path.dirname(__file__))
from jack_helpers import RATE, Recorder, TransportLog, run_bridge, start_jack_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("frozen_heap")  # as the live bridge runs (see run_live)
DATA = Path(__file__).parent / "data" / "ardour_transport"
PERIOD = 256
CHANGE = 14.4  # seconds: 130 BPM from bar 9 (24 quarters at 100 BPM)
jack_server = pytest.fixture(lambda: (yield from start_jack_server(PERIOD)))


@pytest.mark.slow
def test_ardour_on_jack_rolls_relocates_and_changes_tempo_and_the_bridge_follows(jack_server, tmp_path):
    exe = shutil.which("ardour7-lua")
    if exe is None:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("headless Ardour 7 is required (apt install ardour)")
        pytest.skip("headless Ardour 7 is not installed (apt install ardour)")
    home = tmp_path / "home"
    (home / ".config" / "ardour7").mkdir(parents=True)
    shutil.copy(DATA / "config", home / ".config" / "ardour7" / "config")  # JACK Transport is Ardour's master
    env = {**os.environ, "HOME": str(home), "BB_SESSION_DIR": str(tmp_path / "session")}
    ardour = subprocess.Popen([exe, str(DATA / "roll.lua")], env=env, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(ardour.stdout.readline, "")), daemon=True).start()
    watcher_client = jack_server.Client("watcher", no_start_server=True)
    watcher_client.activate()
    watcher = TransportLog(jack_server, watcher_client, PERIOD)
    deadline = time.monotonic() + 60
    while not any("READY" in line for line in lines):
        assert ardour.poll() is None and time.monotonic() < deadline, "Ardour did not start: " + "".join(lines)
        time.sleep(0.05)
    session = read_project(tmp_path / "session" / "session.ardour")  # Ardour's saved tempo map
    follower = JackTransport(RATE)
    bridge = LiveBridge(Recorder(), Timeline(FrameGrid(30, RATE), session.tempo, session.meter),
                        MusicMapping([]), follower.playhead, 0.3, sync=follower)  # fmt: skip
    states, stop = [], threading.Event()
    thread = run_bridge(bridge, stop, states)
    try:
        assert ardour.wait(60) == 0 and any("DONE" in line for line in lines)
    finally:
        stop.set()
        thread.join()
        follower.close()
        watcher.close()
        watcher_client.close()
    assert "rolling" in states and states[-1] == "stopped"  # Ardour's roll and stop reached the bridge
    errors, beat_errors = [], []
    for _, at_send, truth, req in watcher.at_due(bridge.client.sent):
        errors.append(req.sample - truth)
        seconds = truth / RATE
        if not at_send / RATE < CHANGE + 0.15 <= seconds + 0.15:  # not requested before the change and due after
            beat_errors.append(
                float(req.beats - session.tempo.beats_at(seconds)) * 60 / (100 if seconds < CHANGE else 130)
            )
    worst_beat_ms = max(abs(e) for e in beat_errors) * 1000
    print(f"Ardour JACK transport offset: p50 {percentile([abs(e) for e in errors], 0.5):.0f} samples, "
          f"max {max(abs(e) for e in errors):.0f}; beats max {worst_beat_ms:.2f} ms")  # fmt: skip
    assert len(errors) > 80 and max(abs(e) for e in errors) <= PERIOD  # within one JACK period
    assert max(abs(e) for e in beat_errors) <= PERIOD / RATE  # Ardour's beats, within one period of time
    frames = [req.frame for _, req in bridge.client.sent]
    assert 13 * 30 in frames and all(frames.count(f) == 1 for f in frames if f >= 13 * 30)  # relocated, once each
    assert abs(float(follower.master_speed) * 60 - 130) < 1  # Ardour's beats moved at 130 BPM after bar 9 …
    assert {b[7] for *_, b in watcher.log if b and b[0] >= 10} == {100.0}  # … while its BBT field still said 100
