"""Tempo and automation sources from files: REAPER .rpp, JSON/CSV lanes."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from bendbridge.bridge.lanes import AutomationLane, LaneError, LanePoint, load_lanes
from bendbridge.bridge.rpp import RppError, read_rpp

RPP = """<REAPER_PROJECT 0.1 "7.0/linux64" 1700000000
  TEMPO 120 4 4
  <TEMPOENVEX
    ACT 1 -1
    PT 0 120 1
    PT 4 120 0 262147
    PT 10 60 1
  >
  <TRACK {A}
    NAME "Drums"
    <VOLENV2
      ACT 1 -1
      PT 0 1 0
      PT 2 0.5 1
      PT 4 2 2
      PT 6 0 3
      PT 8 1 4
      PT 10 0 5
      PT 12 1 0
    >
    <PANENV2
      PT 0 -1 0
      PT 1 1 0
    >
    <FXCHAIN
      <VST "VST: ReaEQ" reaeq.so 0 "" 1
      >
      <PARMENV 3 0 10 5 "Gain"
        PT 0 0 0
        PT 1 10 0
      >
    >
  >
>
"""


def test_rpp_tempo_envelope_shapes_and_signature(tmp_path):
    f = tmp_path / "p.rpp"
    f.write_text(RPP)
    p = read_rpp(f)
    assert p.tempo.beats_at(4) == 8  # square: held 120 BPM
    assert p.tempo.beats_at(10) == 8 + (120 * 6 - 60 * 6 / 2 * 1) / 60  # linear ramp 120 → 60 over 6 s
    assert p.tempo.bpm_at(7) == 90 and p.tempo.bpm_at(20) == 60
    assert (p.meter.at_beats(8).num, p.meter.at_beats(8).den) == (3, 4) and str(p.meter.bar_beat(8)) == "3:1:000"


def test_rpp_envelopes_of_every_shape_become_lanes(tmp_path):
    f = tmp_path / "p.rpp"
    f.write_text(RPP)
    lanes = read_rpp(f).lanes
    vol = lanes["Drums/volume"]
    assert vol.value_at(1) == pytest.approx(0.75)  # linear 1 → 0.5
    assert vol.value_at(3) == 0.5  # square holds
    assert vol.value_at(5) == pytest.approx(1.0)  # slow start/end 2 → 0: x²(3 − 2x), halfway is the midpoint
    assert vol.value_at(F(9, 2)) == pytest.approx(2 - 2 * (0.25**2 * 2.5))  # … and eases in
    assert vol.value_at(7) == pytest.approx(0.875)  # fast start 0 → 1: 1 − (1 − x)³
    assert vol.value_at(9) == pytest.approx(0.875)  # fast end 1 → 0: x³ of the change done at half time
    assert 0 < vol.value_at(11) < 1 and vol.value_at(12) == 1  # Bézier from 0 to 1
    assert vol.normalised_at(4) == 1.0 and lanes["Drums/pan"].normalised_at(F(1, 2)) == pytest.approx(0.5)
    gain = lanes["Drums/fx1/3"]
    assert (gain.lo, gain.hi) == (0, 10) and gain.normalised_at(F(1, 2)) == pytest.approx(0.5)


def test_rpp_without_a_tempo_or_with_broken_chunks_is_named(tmp_path):
    f = tmp_path / "p.rpp"
    f.write_text("<REAPER_PROJECT 0.1\n  <TRACK\n  >\n>\n")
    with pytest.raises(RppError, match=r"p\.rpp: the project has no TEMPO line"):
        read_rpp(f)
    f.write_text("<REAPER_PROJECT 0.1\n  TEMPO 120 4 4\n  <TRACK\n")
    with pytest.raises(RppError, match=r"chunk <TRACK> opened on line 3 is never closed"):
        read_rpp(f)
    f.write_text("hello")
    with pytest.raises(RppError, match="not a REAPER project"):
        read_rpp(f)


def test_json_and_csv_lanes(tmp_path):
    j = tmp_path / "l.json"
    j.write_text('{"lanes": [{"name": "sweep", "domain": "beats", "points": [[0, 0], [4, 1, "square"], [8, 0]]}]}')
    (lane,) = load_lanes(j)
    assert lane.domain == "beats" and lane.value_at(2) == 0.5 and lane.value_at(6) == 1
    c = tmp_path / "bright.csv"
    c.write_text("seconds,value,shape\n0,0,linear\n1.5,1,\n")
    (lane,) = load_lanes(c)
    assert lane.name == "bright" and lane.value_at(F(3, 4)) == 0.5
    c.write_text("seconds,value\n0,0\n1,abc\n")
    with pytest.raises(LaneError, match=r"bright\.csv: line 3: expected time,value"):
        load_lanes(c)
    c.write_text("time,value\n")
    with pytest.raises(LaneError, match="line 1: expected a header"):
        load_lanes(c)


def test_lanes_refuse_nan_and_unknown_shapes():
    with pytest.raises(LaneError, match="not finite"):
        AutomationLane("x", [LanePoint(F(0), float("nan"))])
    with pytest.raises(LaneError, match="shape 9 is not valid"):
        AutomationLane("x", [LanePoint(F(0), 0.0, 9)])
