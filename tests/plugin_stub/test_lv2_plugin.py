"""The native LV2 plugin on its own: a valid bundle, the protocol's bytes, audio untouched, a stream
the bridge rebuilds, and drops (never a stall) when no bridge listens."""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from bendbridge.bridge.plugin_link import PluginReceiver
from bendbridge.protocol import AudioBlock, Bye, FeatureFrame, Transport, encode

from .conftest import missing


class Envelope(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_char_p),
        ("seq", ctypes.c_int64),
        ("session", ctypes.c_char_p),
        ("pos", ctypes.c_int64),
        ("rate", ctypes.c_int64),
        ("wall", ctypes.c_double),
    ]


ENVELOPES = [
    dict(msg_id="a1b2c3d4-0", seq=1, session="plugin", pos=0, rate=48_000, wall=1.5e9),
    dict(msg_id="ffffffff-1f", seq=2**40, session="my song", pos=2**40 + 17, rate=44_100, wall=1_798_000_000.123),
    dict(msg_id="x" * 64, seq=127, session="s" * 64, pos=128, rate=768_000, wall=0.0),
]


def _c_envelope(e: dict) -> Envelope:
    return Envelope(e["msg_id"].encode(), e["seq"], e["session"].encode(), e["pos"], e["rate"], e["wall"])


@pytest.fixture(scope="module")
def wire(native_build):
    lib = ctypes.CDLL(str(native_build["library"]))
    buf = ctypes.create_string_buffer(8192)

    def call(name: str, *args) -> bytes:
        n = getattr(lib, name)(buf, ctypes.c_size_t(len(buf)), *args)
        assert n > 0, f"{name} wrote nothing"
        return buf.raw[:n]

    return call


@pytest.mark.parametrize("env", ENVELOPES)
@pytest.mark.parametrize("bar", [None, (1, 0.0), (129, 6.497395992279053), (2**31, 1023.5)])
def test_transport_bytes_equal_the_protocols(wire, env, bar):
    t = Transport(True, env["pos"], 91.30000305175781, 7, 8, bar=bar and bar[0], bar_beat=bar and bar[1])
    got = wire(
        "bb_encode_transport",
        ctypes.byref(_c_envelope(env)),
        ctypes.c_int(1),
        ctypes.c_int64(t.sample),
        ctypes.c_double(t.tempo),
        ctypes.c_int64(7),
        ctypes.c_int64(8),
        ctypes.c_int(0),
        ctypes.c_int(bar is not None),
        ctypes.c_int64(bar[0] if bar else 0),
        ctypes.c_double(bar[1] if bar else 0.0),
    )
    assert got == encode(t, **env)


@pytest.mark.parametrize("env", ENVELOPES)
def test_control_features_bytes_equal_the_protocols(wire, env):
    names = [f"control:macro{i}".encode() for i in range(1, 9)]
    values = [0.0, 1.0, 0.25, 1 / 3, 1e-30, 0.999999940395, 0.5, 0.125]
    got = wire(
        "bb_encode_features",
        ctypes.byref(_c_envelope(env)),
        ctypes.c_int64(env["pos"]),
        (ctypes.c_char_p * 8)(*names),
        (ctypes.c_double * 8)(*values),
        ctypes.c_uint32(8),
    )
    features = {n.decode(): v for n, v in zip(names, values)}
    assert got == encode(FeatureFrame(env["pos"], features), **env)


@pytest.mark.parametrize("frames", [1, 255, 256])
def test_audio_bytes_equal_the_protocols(wire, frames):
    env = ENVELOPES[1]
    data = np.random.default_rng(frames).standard_normal((2, frames)).astype(np.float32)
    channels = (ctypes.POINTER(ctypes.c_float) * 2)(
        *(row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for row in np.ascontiguousarray(data))
    )
    got = wire(
        "bb_encode_audio",
        ctypes.byref(_c_envelope(env)),
        ctypes.c_int64(env["pos"]),
        ctypes.c_int64(env["rate"]),
        channels,
        ctypes.c_uint32(2),
        ctypes.c_uint32(frames),
    )
    assert got == encode(AudioBlock(env["pos"], env["rate"], data), **env)


def test_bye_bytes_equal_the_protocols(wire):
    env = ENVELOPES[0]
    assert wire("bb_encode_bye", ctypes.byref(_c_envelope(env)), b"plugin removed") == encode(
        Bye("plugin removed"), **env
    )


def test_the_bundle_passes_lv2_validate(native_build):
    if not shutil.which("lv2_validate") or not shutil.which("sord_validate"):
        missing("lv2_validate is not installed (apt install lv2-dev sordi)")
    r = subprocess.run(
        ["lv2_validate", *(str(p) for p in sorted(native_build["bundle"].glob("*.ttl")))],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "Found 0 errors" in r.stdout + r.stderr, r.stdout + r.stderr


def _host(native_build, link: str, blocks: int, realtime: bool = True) -> dict:
    r = subprocess.run(
        [str(native_build["host"]), str(native_build["library"]), "48000", "1024", str(blocks), str(int(realtime))],
        env={**os.environ, "BENDBRIDGE_LINK": link, "BENDBRIDGE_SESSION": "harness"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_audio_passes_unchanged_and_the_bridge_rebuilds_the_stream(native_build):
    blocks = 150
    with PluginReceiver("tcp://127.0.0.1:*") as rx:
        result = _host(native_build, rx.url, blocks)
        assert rx.done.wait(10), "no bye from the plugin"
        stream = rx.snapshot()
    assert result["differing_blocks"] == 0 and result["dropped"] == 0
    assert stream.problems == [] and stream.jumps == [] and stream.ended
    n = blocks * 1024
    t = np.arange(n) / 48_000
    audio = stream.audio()
    expected = np.sin(2 * math.pi * 440 * t).astype(np.float32)
    np.testing.assert_allclose(audio[0], expected, atol=1e-7)
    np.testing.assert_array_equal(audio[1], -audio[0])
    assert [t.sample for t in stream.transports] == list(range(0, n, 1024))
    # the harness steps macro 1 every block; every run() reports it at its first sample
    assert stream.controls["macro1"] == [(b * 1024, np.float32((b * b % 97) / 97)) for b in range(blocks)]


def test_a_session_from_the_plugin_has_the_hosts_tempo_and_bars(native_build, tmp_path):
    with PluginReceiver("tcp://127.0.0.1:*") as rx:
        _host(native_build, rx.url, 120)
        assert rx.done.wait(10)
        session = rx.snapshot().session(tmp_path)
    assert session.rate == 48_000 and [float(p.bpm) for p in session.tempo.points] == [120.0]
    for sample in range(0, 120 * 1024, 997):
        assert abs(session.tempo.beats_at(Fraction(sample, 48_000)) - Fraction(sample, 24_000)) <= Fraction(1, 1920)
    lane = session.lanes["macro1"]  # steps (the values lie on no line), each at its block's first sample
    for b in (0, 1, 37, 119):
        for offset in (0, 5, 1023):
            assert lane.value_at(Fraction(1024 * b + offset, 48_000)) == np.float32((b * b % 97) / 97)


def test_without_a_bridge_the_plugin_drops_records_and_never_stalls(native_build):
    start = time.monotonic()
    result = _host(native_build, "tcp://127.0.0.1:9", 2000, realtime=False)
    assert result["differing_blocks"] == 0
    assert result["dropped"] > 0  # 2000 blocks make ~12000 records; the ring holds 4096
    assert time.monotonic() - start < 10  # cleanup gives up on the absent bridge after 2 s


MACRO_CONFIG = """
[render]
prompts = ["a lighthouse"]
fps = "24"

[[bend]]
id = "lift"
op = "add"
target = "latent"
params = { value = 0.0 }

[[param]]
bend = "lift"
name = "value"
base = 0.0
[[param.source]]
kind = "lane"
name = "macro1"
depth = 0.5
"""


@pytest.mark.slow
def test_record_then_bounce_the_recording_from_the_command_line(native_build, saved_tiny_model, tmp_path):
    cli = [sys.executable, "-m", "bendbridge.tools.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rec = subprocess.Popen(
        [*cli, "record", "--link", "tcp://127.0.0.1:*", "--out", str(tmp_path / "take.bbs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        link = re.search(r"listening on (tcp://127\.0\.0\.1:\d+)", rec.stdout.readline())[1]
        result = _host(native_build, link, 100)
        out, err = rec.communicate(timeout=60)  # the plugin's bye ends the recording
    finally:
        rec.kill()
    assert rec.returncode == 0 and result["dropped"] == 0, err
    assert "2.13 s of audio at 48000 Hz" in out and "lanes ['macro1'" in out, out
    (tmp_path / "c.toml").write_text(MACRO_CONFIG)
    video = tmp_path / "v.mp4"
    r = subprocess.run(
        [*cli, "bounce", "--recorded", str(tmp_path / "take.bbs"), "--config", str(tmp_path / "c.toml")]
        + ["--out", str(video), "--model", str(saved_tiny_model), "--end", "1", "--frames", str(tmp_path / "frames")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "frames" / "manifest.jsonl").read_text().splitlines()]
    assert [x["sample"] for x in rows] == [i * 2000 for i in range(24)]  # 48 kHz / 24 fps, in the recording's rate
    # macro1 steps every 1024-sample block (no three values on a line): each frame has its block's value
    for x in rows:
        b = x["sample"] // 1024
        assert x["params"]["lift"]["value"] == pytest.approx(0.5 * float(np.float32((b * b % 97) / 97)), abs=1e-6)
    assert not (tmp_path / ".v.recorded").exists()  # the recording's audio, written for the bounce, is gone


@pytest.mark.slow
def test_bench_plugin_runs_its_four_cases(native_build, capsys):
    from bendbridge.tools.bench_plugin import main

    assert main(["--paced", "20", "--burst", "200"]) == 0
    out = capsys.readouterr().out
    for case in ("listening, real time", "listening, back to back", "no bridge", "bridge stalled"):
        row = next(line for line in out.splitlines() if line.startswith(case))
        assert row.split()[-3] == "0", row  # no block's audio was altered


class _Requests:
    """A render client that keeps the frame requests instead of sending them."""

    def __init__(self):
        self.sent = []

    def send(self, message, pos: int = 0):
        self.sent.append(message)


def test_the_live_bridge_follows_the_plugin_playhead_tempo_and_macros(native_build):
    from bendbridge.bridge.live import LiveBridge, ValueLane
    from bendbridge.bridge.mapping import load_mapping
    from bendbridge.bridge.plugin_live import PluginFollower
    from bendbridge.bridge.tempo import TempoMap
    from bendbridge.bridge.timeline import FrameGrid, Timeline
    from bendbridge.protocol.plan import BendPlan

    plan = BendPlan.from_specs(["add:value=0@latent:step=0:id=lift"])
    mapping = load_mapping(
        {"param": [{"bend": "lift", "name": "value", "source": [{"kind": "lane", "name": "macro1", "depth": 1.0}]}]},
        plan,
    )
    timeline = Timeline(FrameGrid(Fraction(10), 48_000), TempoMap.constant(90))  # the config says 90 BPM
    lanes = {"macro1": ValueLane()}
    client, said = _Requests(), []
    with PluginReceiver("tcp://127.0.0.1:*") as rx:
        follower = PluginFollower(rx, timeline, lanes, report=said.append)
        bridge = LiveBridge(client, timeline, mapping, follower.playhead, 0.3, features=follower, lanes=lanes)
        host = subprocess.Popen(
            [str(native_build["host"]), str(native_build["library"]), "48000", "1024", "150", "1"],
            env={**os.environ, "BENDBRIDGE_LINK": rx.url},
            stdout=subprocess.PIPE,
            text=True,
        )
        heard = []  # (playhead when asked, frames requested)
        while host.poll() is None:
            before = follower.playhead()
            heard.append((before, bridge.tick()))
            time.sleep(0.01)
        for _ in range(60):  # the plugin has gone: the bridge holds, reports once, never fails
            bridge.tick()
            time.sleep(0.01)
    assert json.loads(host.stdout.read())["dropped"] == 0
    frames = sorted(m.frame for m in client.sent)
    # 3.2 s of song at 10 fps, none missed (frame 0 may be behind the playhead by the first tick)
    assert frames == list(range(frames[0], frames[-1] + 1)) and frames[0] <= 1 and frames[-1] >= 32
    for playhead, todo in heard:  # every frame asked for lies ahead of the playhead, within the lookahead
        for f in todo:
            assert playhead <= Fraction(f, 10) + Fraction(1, 10) and Fraction(f, 10) < playhead + Fraction(4, 10)
    assert [float(p.bpm) for p in timeline.tempo.points] == [120.0]  # the host's tempo replaced the config's
    for m in client.sent:  # bar and beat as the host counts them at 120 BPM in 4/4
        assert (m.bar, m.beat) == (1 + int(m.seconds // 2), 1 + int(m.seconds % 2 * 2)), m
        assert 0 <= m.params["lift"]["value"] <= 1
    assert len({m.params["lift"]["value"] for m in client.sent}) > 5  # the macro moved, and the frames followed it
    assert any("went quiet" in s for s in said) and len([s for s in said if "went quiet" in s]) == 1
