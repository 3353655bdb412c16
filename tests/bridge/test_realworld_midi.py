"""Real MIDI files written by other programs (tests/data/realworld/SOURCES.md), read by bendbridge and
checked against an independent reading: mido's own messages and player clock, in exact fractions.

Nothing here compares the reader with a snapshot of its own output: each expectation is computed
from the file's messages by the rules of the SMF specification, or read off the source the file was
made from (an ABC tune, a LilyPond score, a CSV listing)."""

from __future__ import annotations

import functools
import io
import math
from fractions import Fraction as F
from pathlib import Path

import mido
import pytest

from bendbridge.bridge.midifile import MidiFileError, read_midi
from bendbridge.bridge.smf_chunks import split_chunks

CORPUS = Path(__file__).parents[1] / "data" / "realworld" / "midi"
FILES = sorted(CORPUS.glob("*.mid")) + sorted((CORPUS / "made").glob("*.mid"))
_session = functools.cache(read_midi)  # each file is read once for the checks below
TIMED = [f for f in FILES if "type_2" not in f.name]  # mido's player refuses format 2 (independent sequences)


@functools.cache
def _midifile(path: Path) -> mido.MidiFile:
    """mido's reading of the file; mido refuses alien chunks, so it gets the MIDI chunks only."""
    data = split_chunks(path.read_bytes()).rebuilt() if "non_midi" in path.name else path.read_bytes()
    return mido.MidiFile(file=io.BytesIO(data), clip=True)


@functools.cache
def _events(path: Path) -> tuple[int, list[tuple[int, mido.Message]]]:
    """(ppq, [(absolute tick, message)]) in mido's merge order: by tick, then track by track."""
    mid = _midifile(path)
    tick, out = 0, []
    for msg in mido.merge_tracks(mid.tracks):
        tick += msg.time
        out.append((tick, msg))
    return mid.ticks_per_beat, out


def test_the_corpus_has_what_the_issue_asks_for():
    kinds = {_midifile(f).type for f in TIMED}
    ppqs = {_midifile(f).ticks_per_beat for f in TIMED}
    meters = {(m.numerator, m.denominator) for f in TIMED for _, m in _events(f)[1] if m.type == "time_signature"}
    longest = max(sum(m.type == "set_tempo" for _, m in _events(f)[1]) for f in TIMED)
    assert len(FILES) >= 15 and kinds == {0, 1} and min(ppqs) == 96 and max(ppqs) == 15360
    assert {(5, 4), (7, 8), (9, 8), (12, 8)} <= meters and longest >= 500


@pytest.mark.parametrize("path", TIMED, ids=lambda p: p.name)
def test_every_event_lands_at_the_second_mido_plays_it(path):
    """The tempo map against mido's player clock (µs per quarter, in merged file order)."""
    session = _session(path)
    ppq, events = _events(path)
    clock, played = 0.0, []
    for msg in _midifile(path):  # mido's player: delta seconds at the tempo in force
        clock += msg.time
        played.append(clock)
    assert len(played) == len(events)
    step = max(1, len(events) // 400)
    for (tick, _), seconds in zip(events[::step], played[::step]):
        assert float(session.tempo.seconds_at(F(tick, ppq))) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("path", TIMED, ids=lambda p: p.name)
def test_the_tempo_in_force_is_the_last_set_tempo_at_or_before_each_tick(path):
    session = _session(path)
    ppq, events = _events(path)
    in_force: dict[int, int] = {}
    for tick, msg in events:
        if msg.type == "set_tempo":
            in_force[tick] = msg.tempo  # the later one at a tick wins
    us = 500_000  # 120 BPM until the first Set Tempo
    if 0 not in in_force:
        assert session.tempo.bpm_at(0) == 120
    for tick in sorted(in_force):
        us = in_force[tick]
        assert session.tempo.bpm_at(session.tempo.seconds_at(F(tick, ppq))) == F(60_000_000, us)
    assert session.tempo.bpm_at(10**6) == F(60_000_000, us)


@pytest.mark.parametrize("path", TIMED, ids=lambda p: p.name)
def test_every_time_signature_starts_a_bar_counted_in_the_meter_before_it(path):
    session = _session(path)
    ppq, events = _events(path)
    changes: dict[F, tuple[int, int]] = {}
    for tick, msg in events:
        if msg.type == "time_signature":
            changes[F(tick, ppq)] = (msg.numerator, msg.denominator)
    bar, last_beat, last_len = 1, F(0), F(4)
    for beat, (num, den) in sorted(changes.items()):
        bar += math.ceil((beat - last_beat) / last_len)  # a bar cut short still counts
        bb = session.meter.bar_beat(beat)
        assert (bb.bar, bb.beat, bb.tick) == (bar, 1, 0), f"{num}/{den} at beat {beat}"
        assert (session.meter.at_beats(beat).num, session.meter.at_beats(beat).den) == (num, den)
        last_beat, last_len = beat, F(4 * num, den)


@pytest.mark.parametrize("path", TIMED, ids=lambda p: p.name)
def test_every_controller_lane_holds_each_value_from_its_tick_and_nothing_before(path):
    session = _session(path)
    ppq, events = _events(path)
    last: dict[str, dict[int, int]] = {}
    for tick, msg in events:
        if msg.type == "control_change":
            last.setdefault(f"cc:{msg.channel + 1}:{msg.control}", {})[tick] = msg.value
    for name, values in last.items():
        lane = session.lanes[name]
        first = min(values)
        if first > 0:
            assert lane.normalised_at(F(first, ppq) - F(1, 2 * ppq)) is None
        for tick, value in list(values.items())[:: max(1, len(values) // 50)]:
            assert lane.value_at(F(tick, ppq)) == pytest.approx(value / 127)


def test_a_format_2_file_reads_its_first_sequence():
    s = read_midi(CORPUS / "jazzsoft_2_tracks_type_2.mid")
    assert s.tempo.bpm_at(0) == 120 and "format 2" in s.warnings[0]


def test_a_non_midi_chunk_is_skipped_as_the_specification_says():
    s = read_midi(CORPUS / "jazzsoft_non_midi_track.mid")
    assert s.warnings == ["skipped 1 non-MIDI chunk(s) (Junk), as the SMF specification says"]


def test_abc2midi_meters_and_tempi_follow_the_tune():
    """abc2midi 4.84 from made/abc2midi_meters.abc: two bars each of 5/4, 7/8, 9/8 and 12/8."""
    s = read_midi(CORPUS / "made" / "abc2midi_meters.mid")
    bars = {b: str(s.meter.bar_beat(b)) for b in (0, 10, 17, 26)}
    assert bars == {0: "1:1:000", 10: "3:1:000", 17: "5:1:000", 26: "7:1:000"}
    assert str(s.meter.bar_beat(F(27, 2))) == "4:1:000" and str(s.meter.bar_beat(32)) == "8:1:000"
    # Q:1/4=140 lands one tick after the bar line (abc2midi's placement), as µs per quarter 428571
    assert s.tempo.bpm_at(s.tempo.seconds_at(F(4801, 480))) == F(60_000_000, 428571)
    assert s.tempo.bpm_at(s.tempo.seconds_at(F(4800, 480))) == 100
    assert s.lanes["cc:1:7"].value_at(5) == pytest.approx(100 / 127) and s.lanes["cc:1:74"].normalised_at(20) is None


def test_lilypond_pickup_bar_is_read_and_named():
    """LilyPond 2.24 from made/lilypond_pickup.ly: a one-beat pickup in 3/4 written without its own meter."""
    s = read_midi(CORPUS / "made" / "lilypond_pickup.mid")
    assert [str(s.meter.bar_beat(b)) for b in (7, 12, 17, F(41, 2), F(53, 2))] == [
        "4:1:000",
        "5:1:000",
        "6:1:000",
        "7:1:000",
        "8:1:000",
    ]
    assert s.warnings == ["5/4 at beat 7 does not fall on a bar line of 3/4: it starts a new bar; bar 3 is cut short"]
    pedal = s.lanes["cc:1:64"]  # \\sustainOn at beat 7, off at 11, on at 20.5, off at 25
    assert pedal.normalised_at(6) is None and pedal.value_at(8) == 1 and pedal.value_at(12) == 0


def test_csvmidi_15360_ppq_ramp_in_the_second_track():
    """csvmidi 1.1 from made/csvmidi_ramp_15360.csv: 256 tempo steps 90 → 150 BPM in track 2."""
    s = read_midi(CORPUS / "made" / "csvmidi_ramp_15360.mid")
    for i in (0, 1, 128, 255):
        us = round(60_000_000 / (90 + 60 * i / 255))
        assert s.tempo.bpm_at(s.tempo.seconds_at(F(i, 4))) == F(60_000_000, us)
    assert s.tempo.bpm_at(s.tempo.seconds_at(64)) == 60  # 120 then 60 at one tick: the later is in force
    assert str(s.meter.bar_beat(64)) == "17:1:000" and s.meter.at_beats(64).num == 7


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("jazzsoft_empty_file.mid", r"the file is empty \(0 bytes\); expected a header chunk 'MThd'"),
        ("jazzsoft_not_a_midi_file.mid", r"header: expected 'MThd' at byte 0, found b'not '"),
        ("jazzsoft_corrupt_file_missing_byte.mid", r"track 1 at byte 14: its length 246 runs past .* truncated"),
        ("jazzsoft_illegal_message_f4.mid", r"track 1 of 1: its events cannot be read .*undefined status byte 0xf4"),
    ],
)
def test_a_broken_file_is_named_with_the_element_that_is_broken(name, says):
    with pytest.raises(MidiFileError, match=name.replace(".", r"\.") + ": " + says):
        read_midi(CORPUS / "broken" / name)
