"""Standard MIDI Files: tempo map, meters and CC lanes, as the SMF specification and mido read them."""

from __future__ import annotations

from fractions import Fraction as F

import mido
import pytest

from bendbridge.bridge.midifile import MidiFileError, read_midi


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
    with pytest.raises(MidiFileError, match=r"bad\.mid: track 1 at byte 14: its length 65535 runs past the end"):
        read_midi(bad)
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x03\x00\x01\x01\xe0MTrk\x00\x00\x00\x00")
    with pytest.raises(MidiFileError, match=r"header: format 3 is not 0, 1 or 2"):
        read_midi(bad)
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\xe7\x28MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    with pytest.raises(MidiFileError, match=r"header: SMPTE time division is not supported"):
        read_midi(bad)
    with pytest.raises(MidiFileError, match="no such MIDI file"):
        read_midi(tmp_path / "missing.mid")


def _song(path, *tracks, ppq=480, kind=1):
    """A file of tracks given as lists of ``(delta ticks, message)``."""
    mid = mido.MidiFile(type=kind, ticks_per_beat=ppq)
    for events in tracks:
        mid.tracks.append(mido.MidiTrack(m.copy(time=dt) for dt, m in events))
    mid.save(path)
    return path


def _tempo(bpm):
    return mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))


def _sig(num, den):
    return mido.MetaMessage("time_signature", numerator=num, denominator=den)


def _mido_seconds(path):
    """Seconds of every event by mido's own player clock (which applies tempo in merged file order)."""
    t, out = 0.0, []
    for msg in mido.MidiFile(path):
        t += msg.time
        out.append(t)
    return out


def test_of_two_tempos_at_one_tick_the_later_in_the_file_is_in_force(tmp_path):
    f = _song(tmp_path / "t.mid", [(0, _tempo(150)), (0, _tempo(60)), (960, _sig(4, 4))])
    s = read_midi(f)
    assert s.tempo.bpm_at(0) == 60 and s.tempo.seconds_at(2) == 2
    assert float(s.tempo.seconds_at(2)) == pytest.approx(_mido_seconds(f)[-1], abs=1e-12)


def test_tempo_in_a_later_track_at_the_same_tick_follows_track_order(tmp_path):
    f = _song(tmp_path / "t.mid", [(0, _tempo(100))], [(0, _tempo(75)), (480, _tempo(200))])
    s = read_midi(f)
    assert s.tempo.bpm_at(0) == 75 and s.tempo.seconds_at(1) == F(60, 75)


def test_before_the_first_set_tempo_the_tempo_is_120_bpm(tmp_path):
    f = _song(tmp_path / "t.mid", [(0, _sig(4, 4)), (960, _tempo(60)), (480, _sig(4, 4))])
    s = read_midi(f)
    assert s.tempo.bpm_at(0) == 120 and s.tempo.seconds_at(2) == 1 and s.tempo.seconds_at(3) == 2
    assert float(s.tempo.seconds_at(3)) == pytest.approx(_mido_seconds(f)[-1], abs=1e-12)


def test_a_file_without_set_tempo_plays_at_120_bpm(tmp_path):
    s = read_midi(_song(tmp_path / "t.mid", [(0, _sig(3, 4)), (1920, _sig(3, 4))]))
    assert s.tempo.bpm_at(100) == 120 and s.tempo.seconds_at(4) == 2


def test_a_pickup_bar_starts_a_new_bar_and_is_named_once(tmp_path):
    # a one-beat pickup in 1/4 then 4/4; later a 3/4 change in the middle of a 4/4 bar (beat 7)
    f = _song(tmp_path / "t.mid", [(0, _sig(1, 4)), (480, _sig(4, 4)), (6 * 480, _sig(3, 4))])
    s = read_midi(f)
    assert str(s.meter.bar_beat(0)) == "1:1:000" and str(s.meter.bar_beat(1)) == "2:1:000"
    assert str(s.meter.bar_beat(5)) == "3:1:000" and str(s.meter.bar_beat(6)) == "3:2:000"
    assert str(s.meter.bar_beat(7)) == "4:1:000" and str(s.meter.bar_beat(10)) == "5:1:000"
    (w,) = s.warnings
    assert "3/4 at beat 7 does not fall on a bar line of 4/4" in w and "bar 3 is cut short" in w


def test_compound_and_odd_meters_count_their_bars(tmp_path):
    f = _song(tmp_path / "t.mid", [(0, _sig(12, 8)), (4 * 6 * 480, _sig(7, 8)), (2 * 7 * 240, _sig(5, 4))])
    s = read_midi(f)
    assert str(s.meter.bar_beat(24)) == "5:1:000" and str(s.meter.bar_beat(31)) == "7:1:000"
    assert s.meter.at_beats(31).num == 5 and not s.warnings


def test_a_cc_lane_has_no_value_before_its_first_event(tmp_path):
    cc = mido.Message("control_change", channel=0, control=64, value=127)
    lane = read_midi(_song(tmp_path / "t.mid", [(0, _tempo(120))], [(4800, cc)])).lanes["cc:1:64"]
    assert lane.normalised_at(F(99, 10)) is None and lane.normalised_at(10) == 1.0


def test_a_format_2_file_reads_its_first_sequence_and_says_so(tmp_path):
    f = _song(tmp_path / "t.mid", [(0, _tempo(90))], [(0, _tempo(200))], kind=2)
    s = read_midi(f)
    assert s.tempo.bpm_at(0) == F(60_000_000, mido.bpm2tempo(90)) and "format 2" in s.warnings[0]
