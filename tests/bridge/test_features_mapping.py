"""Audio features on files written with pedalboard, smoothing, and parameter mapping."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
from pedalboard.io import AudioFile

from bendbridge.bridge.features import (
    FeatureConfig,
    FeatureError,
    Smoothing,
    extract_features,
    load_audio,
    normalise,
    smooth,
)
from bendbridge.bridge.lanes import AutomationLane, LanePoint
from bendbridge.bridge.mapping import MappingError, curve, load_mapping
from bendbridge.bridge.tempo import TempoMap, TimeSignature, TimeSignatureMap
from bendbridge.bridge.timeline import FrameGrid, Timeline
from bendbridge.protocol.plan import BendPlan


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, audio: np.ndarray, rate: int, channels: int = 1):
    with AudioFile(str(path), "w", rate, channels) as f:
        f.write(np.tile(audio, (channels, 1)))


def test_features_follow_loudness_and_brightness_at_exact_frame_times(tmp_path):
    rate = 44_100
    audio = np.concatenate([np.zeros(rate, np.float32), tone(200, 1, rate), tone(4000, 1, rate, 0.2)])
    write(tmp_path / "a.wav", audio, rate, channels=2)
    a = load_audio(tmp_path / "a.wav", 22_050)
    assert len(a) == 3 * 22_050
    times = [F(1, 2), F(3, 2), F(5, 2)]
    f = extract_features(a, times)
    assert f["rms"][0] < 1e-4 < f["rms"][2] < f["rms"][1]
    assert f["rms"][1] == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert f["centroid"][1] == pytest.approx(200, rel=0.15) and f["centroid"][2] == pytest.approx(4000, rel=0.05)
    assert f["low"][1] > 100 * f["high"][1] and f["high"][2] > 100 * f["low"][2]


def test_onset_and_flux_fire_at_a_transient():
    rate = 22_050
    a = np.zeros(rate * 2, np.float32)
    a[rate : rate + 2000] = tone(1000, 2000 / rate, rate)
    f = extract_features(a, [F(1, 2), F(1) + F(1, 100), F(3, 2)])
    assert f["onset"][1] > 10 * max(f["onset"][0], f["onset"][2], 1e-6)
    assert f["flux"][1] > f["flux"][0]


def test_window_length_is_configurable_and_windows_are_centred():
    rate = 22_050
    a = np.zeros(rate, np.float32)
    a[rate // 2] = 1.0  # one click at 0.5 s
    short = extract_features(a, [F(1, 2), F(1, 2) + F(3, 100)], FeatureConfig(window=0.05))
    long = extract_features(a, [F(1, 2) + F(3, 100)], FeatureConfig(window=0.1))
    assert short["peak"][0] == 1.0 and short["peak"][1] == 0.0 and long["peak"][0] == 1.0


def test_missing_or_broken_audio_is_named(tmp_path):
    with pytest.raises(FeatureError, match=r"nope\.wav: no such audio file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(FeatureError, match=r"bad\.wav: cannot read audio"):
        load_audio(tmp_path / "bad.wav")


def test_smoothing_median_envelope_and_gate():
    v = np.array([0, 0, 1, 0, 0, 0, 5, 5, 5, 0, 0, 0], float)
    assert smooth(v, Smoothing(median=3 / 24), 24)[2] == 0  # a one-frame spike is removed
    env = smooth(v, Smoothing(attack=0, release=0.5), 24)
    assert env[6] == 5 and 0 < env[9] < 5 and env[10] < env[9]  # instant attack, exponential release
    gated = smooth(np.array([0.01, 0.02, 1.0]), Smoothing(gate=0.1), 24)
    assert list(gated) == [0, 0, 1.0]
    assert list(normalise(np.array([2.0, 4.0, 3.0]))) == [0, 1, 0.5] and list(
        normalise(np.array([5.0, 15.0]), 0, 10)
    ) == [0.5, 1.0]


PLAN = BendPlan.from_specs(
    ["rotate_plane:plane=0,1:angle=0@latent:step=0:id=spin", "multiply:factor=1@mid_block:id=amp"]
)


def test_mapping_sums_sources_through_curves_and_clamps_to_the_operator_range():
    config = {
        "param": [
            {
                "bend": "spin",
                "name": "angle",
                "base": 0.5,
                "source": [
                    {"kind": "feature", "name": "centroid", "depth": 2.0},
                    {"kind": "const", "value": 1.0, "depth": 0.25},
                ],
            },
            {
                "bend": "amp",
                "name": "factor",
                "base": 9.0,
                "source": [{"kind": "lane", "name": "cc:1:74", "depth": 5, "curve": "s"}],
            },
            {
                "bend": "amp",
                "name": "mix",
                "source": [{"kind": "lfo", "shape": "square", "rate": 1, "unit": "beats", "depth": -1}],
            },
        ]
    }
    m = load_mapping(config, PLAN, {"cc:1:74"})
    tl = Timeline(FrameGrid(F(4), 48_000), TempoMap.constant(120))
    pos = [tl.position(i) for i in range(4)]  # beats 0, 0.5, 1, 1.5
    lane = AutomationLane("cc:1:74", [LanePoint(F(0), 0.0, 0), LanePoint(F(2), 1.0)], "beats")
    out = m.resolve(pos, tl, {"centroid": np.array([0, 0.5, 1, 0.25])}, {"cc:1:74": lane})
    assert [o["spin"]["angle"] for o in out] == pytest.approx([0.75, 1.75, 2.75, 1.25])
    assert out[0]["amp"]["factor"] == 9.0 and out[2]["amp"]["factor"] == 10.0  # 9 + 5·S(0.5) clamped to 10
    assert [o["amp"]["mix"] for o in out] == [0.0, 1.0, 0.0, 1.0]  # base 1 − square LFO, clamped to [0, 1]


def test_a_lane_before_its_first_point_leaves_the_parameter_at_its_base():
    config = {
        "param": [
            {
                "bend": "spin",
                "name": "angle",
                "base": 0.5,
                "source": [
                    {"kind": "lane", "name": "cc:1:64", "depth": 2.0},
                    {"kind": "const", "value": 1, "depth": 1},
                ],
            }
        ]
    }
    m = load_mapping(config, PLAN, {"cc:1:64"})
    tl = Timeline(FrameGrid(F(4), 48_000), TempoMap.constant(120))
    pos = [tl.position(i) for i in range(4)]  # beats 0, 0.5, 1, 1.5
    pedal = AutomationLane("cc:1:64", [LanePoint(F(1), 1.0, 1)], "beats")  # pressed at beat 1
    out = m.resolve(pos, tl, {}, {"cc:1:64": pedal})
    assert [o["spin"]["angle"] for o in out] == [1.5, 1.5, 3.5, 3.5]  # other sources still count


def test_lfos_in_bars_follow_the_time_signature():
    config = {
        "param": [
            {
                "bend": "spin",
                "name": "angle",
                "base": 0,
                "source": [{"kind": "lfo", "shape": "saw", "unit": "bars", "rate": 1}],
            }
        ]
    }
    m = load_mapping(config, PLAN)
    tl = Timeline(FrameGrid(F(2), 48_000), TempoMap.constant(120), TimeSignatureMap([TimeSignature(1, 3, 4)]))
    out = m.resolve([tl.position(i) for i in range(4)], tl, {}, {})
    assert [o["spin"]["angle"] for o in out] == pytest.approx([0, 1 / 3, 2 / 3, 0])


@pytest.mark.parametrize(
    "config,match",
    [
        ({"param": [{"bend": "spn", "name": "angle"}]}, r"param\[0\]\.bend: no bend with id 'spn'; did you mean spin"),
        (
            {"param": [{"bend": "spin", "name": "angel"}]},
            r"param\[0\]\.name: 'angel' is not a per-frame parameter of 'rotate_plane'; did you mean angle",
        ),
        (
            {"param": [{"bend": "spin", "name": "angle", "source": [{"kind": "feature", "name": "loudness"}]}]},
            r"param\[0\]\.source\[0\]\.name: unknown feature 'loudness'",
        ),
        (
            {"param": [{"bend": "spin", "name": "angle", "source": [{"kind": "lane", "name": "cc:1:7"}]}]},
            r"unknown lane 'cc:1:7'; did you mean cc:1:74",
        ),
        (
            {"param": [{"bend": "spin", "name": "angle", "source": [{"kind": "wobble"}]}]},
            r"source\[0\]\.kind: 'wobble' is not valid",
        ),
        (
            {"param": [{"bend": "spin", "name": "angle", "source": [{"kind": "lfo", "shape": "sine", "rate": 0}]}]},
            r"source\[0\]\.rate: 0 is out of range; allowed \(0, 64\]",
        ),
        (
            {
                "param": [
                    {
                        "bend": "spin",
                        "name": "angle",
                        "source": [{"kind": "feature", "name": "rms", "depth": float("nan")}],
                    }
                ]
            },
            r"source\[0\]\.depth: nan is not finite",
        ),
        ({"smoothing": {"rms": {"relese": 0.3}}}, r"smoothing\.rms\.relese: unknown field"),
    ],
)
def test_bad_mappings_name_the_field(config, match):
    with pytest.raises(MappingError, match=match):
        load_mapping(config, PLAN, {"cc:1:74"})


def test_curves_map_the_unit_interval_onto_itself():
    x = np.linspace(0, 1, 11)
    for name in ("linear", "exp", "log", "s"):
        y = np.asarray(curve(name, x))
        assert y[0] == pytest.approx(0) and y[-1] == pytest.approx(1) and np.all(np.diff(y) >= 0)
