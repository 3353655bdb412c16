"""Tempo and automation sources from real files: MIDI (mido), REAPER .rpp, JSON/CSV lanes."""

from __future__ import annotations

from fractions import Fraction as F

import mido
import pytest

from bendbridge.bridge.lanes import AutomationLane, LaneError, LanePoint, load_lanes
from bendbridge.bridge.midifile import MidiFileError, read_midi
from bendbridge.bridge.rpp import RppError, read_rpp


def write_midi(path, ppq=480):
    mid = mido.MidiFile(ticks_per_beat=ppq)
    meta, cc = mido.MidiTrack(), mido.MidiTrack()
    mid.tracks += [meta, cc]
    meta += [
        mido.MetaMessage("set_tempo", tempo=500_000, time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90), time=8 * ppq),
        mido.MetaMessage("time_signature", numerator=3, denominator=4, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(150), time=6 * ppq),
    ]
    cc += [
        mido.Message("control_change", channel=0, control=74, value=0, time=0),
        mido.Message("control_change", channel=0, control=74, value=127, time=4 * ppq),
        mido.Message("control_change", channel=1, control=1, value=64, time=0),  # 14-bit MSB
        mido.Message("control_change", channel=1, control=33, value=64, time=0),  # its LSB
        mido.Message("control_change", channel=0, control=99, value=1, time=ppq),  # NRPN 1:2
        mido.Message("control_change", channel=0, control=98, value=2, time=0),
        mido.Message("control_change", channel=0, control=6, value=100, time=0),
        mido.Message("control_change", channel=0, control=38, value=5, time=0),
        mido.Message("control_change", channel=0, control=96, value=0, time=ppq),
        mido.Message("pitchwheel", channel=2, pitch=8191, time=0),
    ]
    mid.save(path)


def test_midi_tempo_map_and_signatures_follow_the_file(tmp_path):
    write_midi(tmp_path / "s.mid")
    s = read_midi(tmp_path / "s.mid")
    # 90 BPM is stored as whole µs per quarter note (666667), and that is what counts
    assert s.tempo.seconds_at(8) == 4 and s.tempo.seconds_at(14) == 4 + F(6 * mido.bpm2tempo(90), 10**6)
    assert s.tempo.bpm_at(100) == 150
    assert str(s.meter.bar_beat(8)) == "3:1:000" and str(s.meter.bar_beat(11)) == "4:1:000"
    # against mido's own clock: the tempo map agrees with mido's tick → second conversion
    tick_s = mido.tick2second(6 * 480, 480, mido.bpm2tempo(90))
    assert float(s.tempo.seconds_at(14) - s.tempo.seconds_at(8)) == pytest.approx(tick_s, abs=1e-12)


def test_midi_cc_lanes_hold_values_and_decode_14_bit_and_nrpn(tmp_path):
    write_midi(tmp_path / "s.mid")
    lanes = read_midi(tmp_path / "s.mid").lanes
    cc = lanes["cc:1:74"]
    assert cc.value_at(0) == 0 and cc.value_at(F(39, 10)) == 0 and cc.value_at(4) == 1.0
    assert lanes["cc14:2:1"].value_at(10) == pytest.approx((64 * 128 + 64) / 16383)
    nrpn = lanes["nrpn:1:130"]
    assert nrpn.value_at(5) == pytest.approx((100 * 128 + 5) / 16383) and nrpn.value_at(6) == pytest.approx(
        (100 * 128 + 6) / 16383
    )
    assert lanes["pitchbend:3"].value_at(7) == pytest.approx(1.0)


def test_a_corrupt_midi_file_is_named(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\xff\xff")
    with pytest.raises(MidiFileError, match=r"bad\.mid: not a readable Standard MIDI File"):
        read_midi(bad)
    with pytest.raises(MidiFileError, match="no such MIDI file"):
        read_midi(tmp_path / "missing.mid")


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
    assert vol.value_at(5) == pytest.approx(1.0)  # slow start/end 2 → 0: halfway is the midpoint
    assert vol.value_at(F(9, 2)) == pytest.approx(2 - 2 * (0.5 - 0.5 * 2**-0.5))  # … and eases in
    assert vol.value_at(7) == pytest.approx(0.75)  # fast start 0 → 1: 75 % done at half time
    assert vol.value_at(9) == pytest.approx(0.75)  # fast end 1 → 0: 25 % done at half time
    assert vol.value_at(11) == pytest.approx(0.5)  # Bézier (smooth S) midpoint
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
