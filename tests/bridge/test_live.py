"""Live input: MIDI CC mapping and clock, OSC over UDP loopback, live features, the live bridge."""

from __future__ import annotations

import threading
import time
from fractions import Fraction as F

import mido
import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from bendbridge.bridge.client import RenderClient
from bendbridge.bridge.live import LiveBridge, LiveFeatures, ValueLane
from bendbridge.bridge.mapping import load_mapping
from bendbridge.bridge.midi_live import CcMapping, CcRouter, ClockFollower, learn_from, parse_cc_source
from bendbridge.bridge.osc_input import OscInput
from bendbridge.bridge.tempo import TempoMap
from bendbridge.bridge.timeline import FrameGrid, Timeline
from bendbridge.protocol import FrameReady, SessionSetup
from bendbridge.protocol.plan import BendPlan
from bendbridge.server.net.app import RenderServer, ServerConfig


def cc(n: int, v: int, ch: int = 1) -> mido.Message:
    return mido.Message("control_change", channel=ch - 1, control=n, value=v)


def test_absolute_cc_with_soft_takeover_waits_for_pickup():
    r = CcRouter([CcMapping("cc:1:74", "spin", "angle", 0.0, 10.0)], {("spin", "angle"): 5.0})
    assert r.feed(cc(74, 0)) == {}  # far from 5: not picked up
    assert r.feed(cc(74, 64))["spin"]["angle"] == pytest.approx(64 / 127 * 10)  # within 2 %: picked up
    assert r.feed(cc(74, 127))["spin"]["angle"] == 10.0
    r.set_value("spin", "angle", 2.0)  # automation moved it: pick up again
    assert r.feed(cc(74, 127)) == {}


def test_relative_and_centred_modes_and_14_bit_and_nrpn_sources():
    r = CcRouter(
        [
            CcMapping("cc:1:20", "a", "x", 0, 1, mode="relative", step=0.1),
            CcMapping("cc14:2:1", "b", "y", -1, 1, mode="centred", takeover=False),
            CcMapping("nrpn:1:130", "c", "z", 0, 100, takeover=False),
        ]
    )
    assert r.feed(cc(20, 2))["a"]["x"] == pytest.approx(0.7)  # starts mid-range, +2 ticks of 10 %
    assert r.feed(cc(20, 127))["a"]["x"] == pytest.approx(0.6)  # 127 = −1 in two's complement
    assert r.feed(cc(1, 64, ch=2))["b"]["y"] == 0.0  # MSB 64 = centre
    assert r.feed(cc(33, 127, ch=2))["b"]["y"] == pytest.approx(127 / 8191)
    for m in (cc(99, 1), cc(98, 2), cc(6, 127), cc(38, 127)):
        out = r.feed(m)
    assert out["c"]["z"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "text,match",
    [
        ("cc:1:200", r"CC 200 is out of range; allowed 0-127"),
        ("cc:17:1", r"channel 17 is out of range; allowed 1-16"),
        ("cc14:1:40", r"out of range; allowed 0-31"),
        ("knob:1:1", r"expected cc:CHANNEL:NUMBER"),
    ],
)
def test_bad_cc_sources_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        parse_cc_source(text)


def test_midi_learn_recognises_7_bit_14_bit_and_nrpn_controls():
    assert learn_from([mido.Message("note_on"), cc(74, 3)]) == "cc:1:74"
    assert learn_from([cc(7, 3), cc(39, 5)]) == "cc14:1:7"
    assert learn_from([cc(7, 3), cc(10, 5)]) == "cc:1:7"
    assert learn_from([cc(99, 1, ch=3), cc(98, 2, ch=3), cc(6, 9, ch=3)]) == "nrpn:3:130"
    assert learn_from([mido.Message("note_on")]) is None


def test_midi_clock_song_position_and_tempo():
    c = ClockFollower()
    c.feed(mido.Message("songpos", pos=16), 0.0)  # 16 sixteenths = beat 4
    assert c.beats == 4 and not c.playing
    c.feed(mido.Message("continue"), 0.0)
    for k in range(48):
        c.feed(mido.Message("clock"), 0.02 * k)
    assert c.beats == 6 and c.tempo == pytest.approx(125.0)  # 24 clocks per 0.48 s
    c.feed(mido.Message("stop"), 1.0)
    c.feed(mido.Message("clock"), 1.02)
    assert c.beats == 6
    c.feed(mido.Message("start"), 2.0)
    assert c.beats == 0 and c.playing


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.01)
    assert cond()


def test_osc_transport_follows_reaper_and_ardour_messages_over_udp():
    with OscInput(port=0) as osc:
        send = SimpleUDPClient("127.0.0.1", osc.port)
        t = osc.transport
        send.send_message("/tempo/raw", 128.0)
        send.send_message("/time", 12.5)
        send.send_message("/track/2/volume", 0.7)
        send.send_message("/track/1/fx/1/fxparam/3/value", 1.5)  # clamped
        send.send_message("/beat/str", "5.2.00")
        send.send_message("/time", "not a number")  # ignored, not fatal
        _wait(lambda: t.messages >= 6)
        assert t.tempo == 128 and t.position() == F(25, 2) and t.bar_beat == "5.2.00"
        assert t.lanes == {"/track/2/volume": pytest.approx(0.7), "/track/1/fx/1/fxparam/3/value": 1.0}
        send.send_message("/play", 1)
        _wait(lambda: t.playing)
        time.sleep(0.05)
        assert t.position() > F(25, 2)
        send.send_message("/transport_frame", 96_000)  # Ardour, in samples
        send.send_message("/transport_stop", 1)
        _wait(lambda: not t.playing)
        assert t.position() >= 2 and t.position() < 3


def test_live_features_normalise_with_fixed_or_calibrated_ranges():
    lf = LiveFeatures(22_050, ranges={"rms": (0.0, 1.0)})
    assert lf.current() == {}  # no audio yet: no features (neutral in the mapping), not zeros
    tone = (0.5 * np.sin(np.arange(4410) / 22_050 * 2 * np.pi * 440)).astype(np.float32)
    for k in range(4):
        lf.push(tone[k * 1102 : (k + 1) * 1102])
    f = lf.current()
    assert f["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    lf.push(np.zeros(2205, np.float32))
    assert lf.current()["rms"] < 0.05
    assert 0.0 <= lf.current()["centroid"] <= 1.0


def test_the_live_bridge_requests_frames_ahead_of_the_playhead_and_follows_seeks(tiny_model, tmp_path):
    plan = BendPlan.from_specs(["rotate_plane:angle=0@latent:step=0:id=spin"])
    server = RenderServer(
        ServerConfig(control="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*", output_root=tmp_path), tiny_model
    )
    stop = threading.Event()
    th = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    th.start()
    try:
        with RenderClient(server.control_endpoint) as c, OscInput(port=0) as osc:
            c.setup(
                SessionSetup(
                    prompts=("a red circle",), output="live", steps=2, guidance=1.0, plan=plan.to_dict(), mode="live"
                )
            )
            mapping = load_mapping(
                {
                    "param": [
                        {
                            "bend": "spin",
                            "name": "angle",
                            "source": [{"kind": "lane", "name": "/track/1/volume", "depth": 3.0}],
                        }
                    ]
                },
                plan,
            )
            lane = ValueLane()
            tl = Timeline(FrameGrid(F(10), 48_000), TempoMap.constant(120))
            send = SimpleUDPClient("127.0.0.1", osc.port)
            send.send_message("/time", 0.0)
            send.send_message("/track/1/volume", 0.5)
            _wait(lambda: osc.transport.messages >= 2)
            lane.value = osc.transport.lanes["/track/1/volume"]
            bridge = LiveBridge(c, tl, mapping, osc.transport.position, lookahead=0.5, lanes={"/track/1/volume": lane})
            assert bridge.tick() == [0, 1, 2, 3, 4]  # stopped at 0 s: the next half second
            assert bridge.tick() == []  # nothing new until the playhead moves
            send.send_message("/time", 30.0)  # seek
            _wait(lambda: osc.transport.position() == 30)
            assert bridge.tick() == [300, 301, 302, 303, 304]
            got = {}
            deadline = time.monotonic() + 30
            while len(got) < 10 and time.monotonic() < deadline:
                m = c.expect(FrameReady).message
                got[m.frame] = m.status
        assert set(got) == {0, 1, 2, 3, 4, 300, 301, 302, 303, 304}
        import json

        lines = [json.loads(line) for line in (tmp_path / "live" / "manifest.jsonl").read_text().splitlines()]
        assert all(e["params"]["spin"]["angle"] == pytest.approx(1.5) for e in lines)
    finally:
        stop.set()
        th.join(10)
        server.close()


def test_live_smoothing_is_the_offline_follower_in_time():
    from bendbridge.bridge.features import Smoothing, smooth
    from bendbridge.bridge.live import LiveSmoother

    s = Smoothing(attack=0.05, release=0.3)
    steps = np.r_[np.zeros(10), np.ones(30), np.zeros(40)]  # a feature jumping up and down, at 50 per second
    live = LiveSmoother(s)
    got = [live.step(float(v), i / 50) for i, v in enumerate(steps)]
    assert got == pytest.approx(smooth(steps, s, 50.0), abs=1e-12)  # the same follower, causal by nature
    med = LiveSmoother(Smoothing(median=0.1))
    spiky = [med.step(v, i / 50) for i, v in enumerate([0, 0, 0, 9, 0, 0, 0])]
    assert max(spiky) == 0  # a one-tick spike is gone, as offline


def test_a_playhead_read_interrupted_by_a_pause_is_read_again_so_deadlines_keep_the_hosts_time():
    class Sent:
        def __init__(self):
            self.requests = []

        def send(self, request, pos=None):
            self.requests.append(request)

    start, reads = time.time(), []

    def rolling_playhead() -> F:
        pos = F(time.time() - start).limit_denominator(1_000_000)  # a host rolling since `start`
        reads.append(pos)
        if len(reads) == 1:
            time.sleep(0.05)  # the first read is paused after it took the host's time (a collector pass)
        return pos

    sent = Sent()
    bridge = LiveBridge(sent, Timeline(FrameGrid(F(30), 48_000)), load_mapping({}, BendPlan()), rolling_playhead, 0.5)
    bridge.tick()
    assert len(reads) == 2 and sent.requests  # read again after the pause
    for r in sent.requests:  # each frame is due when the host reaches it: its wall time is start + its seconds
        assert abs(r.deadline - (start + r.sample / 48_000)) < 0.003


def test_the_live_loop_runs_with_its_startup_heap_frozen_and_gives_it_back_after():
    import gc

    from bendbridge.bridge.live_run import run_live

    startup = [[i] for i in range(1000)]  # objects built before the loop, as the bridge's are
    frozen_during: list[int] = []
    stop = threading.Event()

    class Run:
        def step(self):
            frozen_during.append(gc.get_freeze_count())
            stop.set()

        def finish(self):
            return "done"

    assert run_live(Run(), stop, period=0.0) == "done"
    assert frozen_during and frozen_during[0] >= len(startup)  # a collection during the loop skips them
    assert gc.get_freeze_count() == 0  # unfrozen when the session ends
