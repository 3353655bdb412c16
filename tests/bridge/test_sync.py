"""Live clocks against real JACK (``jackd -d dummy``, loopback only): a timebase master that rolls,
relocates and changes tempo; a server that vanishes and returns; MIDI Time Code written by a JACK
client at exact sample positions onto a JACK MIDI port, read through python-rtmidi.

Each frame request of the live bridge is checked against the master's own position at the wall
time the frame is due, sampled from the master's side."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from fractions import Fraction as F

import mido
import pytest

from bendbridge.bridge.live import LiveBridge
from bendbridge.bridge.live_status import percentile
from bendbridge.bridge.mapping import MusicMapping
from bendbridge.bridge.mtc import MtcFollower
from bendbridge.bridge.sync import SyncError
from bendbridge.bridge.sync_jack import JackTransport
from bendbridge.bridge.timeline import FrameGrid, Timeline

sys.path.insert(0, os.path.dirname(__file__))
from jack_helpers import RATE, Master, MtcWriter, Recorder, run_bridge, start_jack_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("frozen_heap")  # as the live bridge runs (see run_live)
PERIOD = 256
jack_server = pytest.fixture(lambda: (yield from start_jack_server(PERIOD)))


@pytest.mark.slow
def test_requested_frames_land_on_the_masters_position_and_beats_within_one_period(jack_server):
    master = Master(jack_server, PERIOD)
    follower = JackTransport(RATE)
    bridge = LiveBridge(Recorder(), Timeline(FrameGrid(30, RATE)), MusicMapping([]), follower.playhead, 0.3)
    bridge.sync = follower
    stop = threading.Event()
    thread = run_bridge(bridge, stop)
    try:
        master.client.transport_frame = 2 * RATE
        master.client.transport_start()
        time.sleep(2.0)
        master.client.transport_frame = 10 * RATE  # a relocation while rolling
        time.sleep(1.5)
        tempo_change = time.time()
        master.bpm = 90.0
        time.sleep(1.5)
        master.client.transport_frame = 10 * RATE  # a loop: back to 10 s while rolling
        time.sleep(1.0)
        master.client.transport_stop()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        follower.close()
        master.close()
    errors, beat_errors = [], []
    for sent, _, truth, req in master.transport.at_due(bridge.client.sent):
        errors.append(req.sample - truth)
        bpm = 90.0 if sent > tempo_change + 0.15 else 120.0 if req.deadline < tempo_change else None
        if bpm is not None:
            beat_errors.append((float(req.beats) - truth / RATE * bpm / 60) * 60 / bpm * RATE)
    assert len(errors) > 100
    print(f"JACK transport offset: p50 {percentile([abs(e) for e in errors], 0.5):.0f} samples, "
          f"p99 {percentile([abs(e) for e in errors], 0.99):.0f}, max {max(abs(e) for e in errors):.0f}")  # fmt: skip
    assert max(abs(e) for e in errors) <= PERIOD  # within one JACK period of the master at the due time
    assert max(abs(e) for e in beat_errors) <= PERIOD  # the master's beats, in samples at its tempo
    frames = [req.frame for _, req in bridge.client.sent]
    counts = {f: frames.count(f) for f in set(frames)}
    assert all(counts[f] == 2 for f in range(302, 325))  # 10-10.8 s: once before the loop, once after
    assert all(counts[f] == 1 for f in range(340, 380))  # 11.3-12.7 s: passed once
    assert max(counts.values()) <= 2 and 299 not in counts  # nothing twice in one pass, nothing skipped back
    assert follower.offsets and percentile([abs(o) for o in follower.offsets], 0.99) < PERIOD / RATE


@pytest.mark.slow
def test_a_timebase_masters_meter_gives_bars_and_its_tempo_the_beats(jack_server):
    master = Master(jack_server, PERIOD)
    follower = JackTransport(RATE)
    try:
        master.client.transport_frame = RATE * 3  # 3 s at 120 BPM: beat 6 = bar 3, beat 1 in 3/4
        master.client.transport_start()
        time.sleep(0.3)
        pos = follower.playhead()
        beats = follower.beats_at(pos)
        assert float(beats) == pytest.approx(float(pos) * 2, abs=PERIOD / RATE * 2)
        assert follower.meter().bar_beat(beats).bar == int(float(pos) * 2 // 3) + 1
        assert "3/4" in follower.status() and "120.00 BPM" in follower.status()
    finally:
        follower.close()
        master.close()


@pytest.mark.slow
def test_a_vanished_jack_server_is_held_said_once_and_followed_again_when_it_returns():
    name = f"bbsync-{uuid.uuid4().hex[:8]}"
    server = start_jack_server(PERIOD, name)
    jack = next(server)
    master = jack.Client("roller", no_start_server=True)
    master.activate()
    master.transport_frame = RATE * 4
    master.transport_start()
    follower = JackTransport(RATE)
    bridge = LiveBridge(Recorder(), Timeline(FrameGrid(24, RATE)), MusicMapping([]), follower.playhead, 0.3)
    bridge.sync = follower
    restarted = start_jack_server(PERIOD, name)
    try:
        time.sleep(0.3)
        bridge.tick()
        without_master = [req for _, req in bridge.client.sent]
        assert without_master and all(abs(r.beats - r.sample / RATE * 2) < 1e-9 for r in without_master)  # 120 BPM map
        next(server, None)  # the server goes away
        deadline = time.monotonic() + 10
        while follower.state != "lost":
            assert time.monotonic() < deadline, "the loss was not noticed"
            time.sleep(0.05)
        held = follower.playhead()
        master.close()  # the test's own client of the dead server, closed before a new one starts
        time.sleep(0.5)
        bridge.tick()  # never raises while the server is gone
        assert follower.playhead() == held
        news = follower.news()
        assert len(news) == 1 and "JACK server gone" in news[0] and "holding" in news[0]
        next(restarted)
        deadline = time.monotonic() + 15
        while follower.client is None:
            assert time.monotonic() < deadline, "the follower did not rejoin the server"
            time.sleep(0.1)
        time.sleep(0.2)
        assert follower.playhead() is not None and follower.state == "stopped"
        assert any("back" in n for n in follower.news())
    finally:
        follower.close()
        restarted.close()  # stops it if it started; never starts it
        server.close()


def test_following_jack_without_a_server_is_one_clear_error(monkeypatch):
    pytest.importorskip("jack")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"absent-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(SyncError, match="no JACK server '.*' to follow"):
        JackTransport(RATE)


def test_a_session_rate_other_than_jacks_is_refused(jack_server):
    with pytest.raises(SyncError, match="the JACK server runs at 48000 Hz; give --rate 48000"):
        JackTransport(44_100)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0, 1, 2, 3])
def test_mtc_on_a_jack_midi_port_is_followed_through_a_relocation_and_a_dropout(jack_server, rate):
    pytest.importorskip("rtmidi")
    writer = MtcWriter(jack_server)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    port = backend.open_input(next(n for n in backend.get_input_names() if "mtcgen" in n))
    follower = MtcFollower()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            for m in port.iter_pending():
                follower.feed(m, time.monotonic())
            time.sleep(0.001)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    errors: list[float] = []

    def measure(seconds: float, skip: float = 0.25) -> None:
        end = time.monotonic() + seconds
        time.sleep(skip)  # two frames to lock, and the smoothing to settle
        while time.monotonic() < end:
            before = time.monotonic()
            truth, pos = writer.truth(writer.client.frame_time), follower.playhead()
            read_together = time.monotonic() - before <= 0.001  # not split by a pause between the two
            if truth is not None and pos is not None and follower.state == "rolling" and read_together:
                errors.append(float(pos) - truth)
            time.sleep(0.01)

    try:
        writer.play(F(3600 + 61), rate, 1.5)  # 01:01:01:00
        measure(1.5)
        writer.play(F(125), rate, 1.2)  # a relocation back to 00:02:05:00
        measure(1.2)
        time.sleep(0.6)  # the code stops: lost, held
        held = follower.playhead()
        assert follower.state == "lost"
        assert held == pytest.approx(125 + 1.2, abs=0.1)
        time.sleep(0.2)
        assert follower.playhead() == held
        writer.play(F(40), rate, 1.0)
        measure(1.0)
        assert follower.state == "rolling"
    finally:
        stop.set()
        reader.join(5)  # closing an RtMidi port while another thread reads it can deadlock
        port.close()
        writer.close()
    news = follower.news()
    assert sum("MTC stopped" in n for n in news) >= 1 and sum("locked" in n or "jumped" in n for n in news) >= 3
    p50, p99 = percentile([abs(e) for e in errors], 0.5), percentile([abs(e) for e in errors], 0.99)
    print(f"MTC rate {rate}: offset p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(errors)} samples")
    assert len(errors) > 150
    assert p50 < 2 * PERIOD / RATE and p99 < 1 / 24  # within two periods typically, always within a frame


@pytest.mark.slow
def test_a_master_whose_bar_and_beat_stand_still_is_not_trusted_for_beats(jack_server):
    master = Master(jack_server, PERIOD)
    master.frozen = True  # like Ardour 7.3 when it publishes BBT but does not follow JACK transport
    follower = JackTransport(RATE)
    try:
        master.client.transport_start()
        deadline = time.monotonic() + 5
        while not follower.bbt_frozen:
            assert time.monotonic() < deadline, "a standing master was trusted"
            follower.beats_at(follower.playhead() or F(0))
            time.sleep(0.02)
        assert follower.beats_at(follower.playhead()) is None and follower.meter() is None  # the tempo map's
        assert [n for n in follower.news() if "stands still" in n] and "frozen" in follower.status()
    finally:
        follower.close()
        master.close()
