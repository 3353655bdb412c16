"""REAPER projects as REAPER writes them: meter markers, partial measures, bypassed envelopes."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from bendbridge.bridge.rpp import RppError, read_rpp


def _project(tmp_path, tempo_points: str, tracks: str = "", master: str = ""):
    f = tmp_path / "p.rpp"
    f.write_text(
        '<REAPER_PROJECT 0.1 "7.22/linux-x86_64" 1730000000\n  TEMPO 120 4 4\n'
        f"  <TEMPOENVEX\n    ACT 1 -1\n{tempo_points}  >\n{master}{tracks}>\n"
    )
    return f


def test_a_meter_marker_rounded_to_12_digits_lands_on_its_bar_line(tmp_path):
    # 3/4 from bar 3 of 4/4 (beat 8): a ramp 120 → 70 BPM over 2 s (19/6 beats), then 70 BPM for
    # 29/6 beats = 4.142857142857… s; REAPER writes the marker's time rounded to 12 digits
    pts = "    PT 0 120 0\n    PT 2 70 1\n    PT 6.142857142857 70 1 262147 0 1\n"
    p = read_rpp(_project(tmp_path, pts))
    beats = p.tempo.beats_at(F("6.142857142857"))
    assert beats != 8 and abs(beats - 8) < F(1, 10**9)  # the written time is not exactly on beat 8 …
    assert str(p.meter.bar_beat(8)) == "3:1:000" and p.meter.at_beats(8).num == 3  # … but the bar is
    assert not p.warnings


def test_a_marker_allowing_a_partial_measure_starts_a_bar_where_it_is(tmp_path):
    # 7/8 at 3 s = beat 6, halfway through bar 2 of 4/4; flags 5 = signature + partial measure
    p = read_rpp(_project(tmp_path, "    PT 0 120 1\n    PT 3 120 1 524295 0 5\n"))
    assert [str(p.meter.bar_beat(b)) for b in (4, 6, F(19, 2))] == ["2:1:000", "3:1:000", "4:1:000"]
    assert not p.warnings


def test_a_marker_off_the_bar_line_without_the_partial_flag_is_named(tmp_path):
    p = read_rpp(_project(tmp_path, "    PT 0 120 1\n    PT 3 120 1 524295 0 1\n"))
    assert str(p.meter.bar_beat(6)) == "3:1:000"
    (w,) = p.warnings
    assert "meter marker 7/8 at 3 s lies 2 quarter notes into bar 2 without 'allow a partial measure'" in w


def test_before_the_first_tempo_marker_the_project_tempo_holds(tmp_path):
    p = read_rpp(_project(tmp_path, "    PT 4 60 1\n"))
    assert p.tempo.bpm_at(1) == 120 and p.tempo.beats_at(4) == 8 and p.tempo.bpm_at(5) == 60


TRACK = """  <TRACK
    NAME Keys
    <VOLENV2
      ACT 0 -1
      PT 0 1 0
      PT 4 0 0
    >
    <PANENV2
      ACT 1 -1
      PT 0 -1 0
      PT 2 1 0
    >
    <WIDTHENV2
      ACT 1 -1
      PT 1 0.5 5 0 0 0 0.7
    >
    <FXCHAIN
      <VST "VST: ReaEQ" reaeq.so 0 "" 1
      >
      <PARMENV 2:2 0 1 0.5 "Gain / ReaEQ"
        ACT 1 -1
        POOLEDENVINST 1 4 2 0 1 0 0.5 1 1 0 0 1 0 0 0.012 0
        PT 0 0 0
        PT 8 1 0
      >
    >
  >
"""
MASTER = """  <MASTERVOLENV2
    ACT 1 -1
    VOLTYPE 1
    PT 0 0.25118864 0
    PT 2 1 0
  >
"""


def test_a_bypassed_envelope_drives_nothing_and_is_named(tmp_path):
    p = read_rpp(_project(tmp_path, "    PT 0 120 1\n", TRACK, MASTER))
    assert "Keys/volume" not in p.lanes and "Keys/pan" in p.lanes
    assert any("'Keys/volume' is bypassed in REAPER (ACT 0)" in w for w in p.warnings)


def test_master_envelopes_automation_items_and_fader_scaling_are_read_and_named(tmp_path):
    p = read_rpp(_project(tmp_path, "    PT 0 120 1\n", TRACK, MASTER))
    master = p.lanes["master/volume"]
    assert master.value_at(0) == pytest.approx(10 ** (-12 / 20)) and master.value_at(2) == 1
    assert any("'master/volume' uses fader scaling (VOLTYPE 1)" in w for w in p.warnings)
    assert any("'Keys/fx1/2' has automation items, which are not read" in w for w in p.warnings)
    width = p.lanes["Keys/width"]
    assert width.points[0].shape == 5 and width.points[0].tension == pytest.approx(0.7)


def test_an_envelope_point_of_an_unknown_shape_is_named_by_line(tmp_path):
    f = _project(tmp_path, "    PT 0 120 1\n", "  <TRACK\n    <PANENV2\n      PT 0 0 9\n    >\n  >\n")
    with pytest.raises(RppError, match=r"p\.rpp: line 9: envelope point shape 9 is not one of REAPER's 0-5"):
        read_rpp(f)
