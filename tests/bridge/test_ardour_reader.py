"""Ardour sessions as a source, checked against Ardour itself.

``data/ardour7/tempo_and_automation.ardour`` was written by Ardour 7.3 (headless, from
``tests/plugin_stub/ardour/session.lua``): 120 BPM, 91.3 BPM at quarter 8, 3/4 at bar 5, 7/8 at
bar 9, a ramp 91.3 → 140 from quarter 35 to 42; a plugin with step and ramp automation and a track
with gain (fader law), trim (logarithmic), pan and mute automation. ``ardour_says.txt`` holds
Ardour's own answers at every 9600th sample: ``quarters_at`` and ``bbt_at`` of its tempo map and
``eval`` of every automation list. The slow test in tests/plugin_stub re-creates both with the
installed Ardour and runs the same comparison.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pytest

from bendbridge.bridge.ardour import ArdourError, read_ardour

DATA = Path(__file__).parent / "data" / "ardour7"
SESSION = DATA / "tempo_and_automation.ardour"
RATE = 48_000
TICK = Fraction(1, 1920)


def ardour_says(path: Path) -> tuple[list[tuple[int, Fraction, tuple[int, int, int]]], dict[str, list]]:
    """Ardour's tempo map (sample, quarter notes, (bar, beat, tick)) and automation values by lane."""
    grid, lanes = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("MAP "):
            _, sample, quarters, bbt = line.split()
            beats, ticks = quarters.split(":")
            grid.append((int(sample), int(beats) + Fraction(int(ticks), 1920), tuple(map(int, bbt.split("|")))))
        elif line.startswith("AUT "):
            name, sample, value = line[4:].split("\t")
            lanes.setdefault(name, []).append((int(sample), float(value)))
    return grid, lanes


def check_against_ardour(session_file: Path, says: Path) -> None:
    """Tempo map within half a tick of Ardour's (which rounds to a tick), bars and beats exact, and
    every lane equal to Ardour's automation."""
    session = read_ardour(session_file)
    grid, lanes = ardour_says(says)
    assert session.rate == RATE and session.warnings == []
    for sample, quarters, (bar, beat, _) in grid:
        beats = session.tempo.beats_at(Fraction(sample, RATE))
        assert abs(beats - quarters) <= TICK / 2, (sample, float(beats), float(quarters))
        bb = session.meter.bar_beat(beats)
        assert (bb.bar, bb.beat) == (bar, beat), (sample, bb, (bar, beat))
    aliases = {n.rsplit("/", 1)[1]: values for n, values in lanes.items() if "/bendbridge link/macro" in n}
    lanes = lanes | aliases  # the plugin's macros also go by the names its stream gives them
    assert set(session.lanes) == set(lanes)
    for name, values in lanes.items():
        lane = session.lanes[name]
        for sample, value in values:
            assert lane.value_at(Fraction(sample, RATE)) == pytest.approx(value, rel=1e-9, abs=1e-12), (name, sample)


def test_the_tempo_map_meters_and_lanes_are_ardours():
    check_against_ardour(SESSION, DATA / "ardour_says.txt")


def test_lanes_are_named_like_reapers_and_keep_the_controls_range():
    lanes = read_ardour(SESSION).lanes
    assert lanes["Levels/gain"].hi == 2.0 and lanes["Levels/trim"].hi == 10.0
    assert lanes["Song/bendbridge link/macro1"].points[1].time == Fraction(120_013, RATE)
    assert [p.shape for p in lanes["Song/bendbridge link/macro1"].points] == [1] * 5  # Discrete: steps


def test_with_two_bendbridge_plugins_the_macros_keep_their_full_names(tmp_path):
    def second_plugin(root):
        route = next(r for r in root.iterfind("Routes/Route") if r.get("name") == "Levels")
        proc = next(p for p in root.iter("Processor") if p.get("unique-id") == "urn:bendbridge:link")
        route.append(ET.fromstring(ET.tostring(proc)))

    session = read_ardour(_edited(tmp_path, second_plugin))
    assert "macro1" not in session.lanes and "Levels/bendbridge link/macro1" in session.lanes
    assert any("2 bendbridge plugins" in w for w in session.warnings)


def test_the_session_sample_rate_does_not_move_automation_in_time(tmp_path):
    """Event times are superclocks (1/282,240,000 s) whatever the rate: a 44.1 kHz session keeps them."""
    text = SESSION.read_text().replace('sample-rate="48000"', 'sample-rate="44100"', 1)
    (tmp_path / "s.ardour").write_text(text)
    session = read_ardour(tmp_path / "s.ardour")
    assert session.rate == 44_100
    assert session.lanes["Song/bendbridge link/macro1"].points[1].time == Fraction(120_013, 48_000)


def _edited(tmp_path: Path, edit) -> Path:
    tree = ET.parse(SESSION)
    edit(tree.getroot())
    path = tmp_path / "edited.ardour"
    tree.write(path, encoding="unicode")
    return path


def _lists(root: ET.Element, automation_id: str) -> list[ET.Element]:
    return [e for e in root.iter("AutomationList") if e.get("automation-id") == automation_id]


def test_a_tempo_in_eighth_notes_is_converted_to_quarters(tmp_path):
    def eighths(root):
        t = root.find("TempoMap/Tempos")[1]
        t.set("note-type", "8")
        t.set("npm", str(2 * float(t.get("npm"))))
        t.set("enpm", t.get("npm"))

    edited, original = read_ardour(_edited(tmp_path, eighths)), read_ardour(SESSION)
    for seconds in (5, 10, 20):
        assert edited.tempo.beats_at(seconds) == pytest.approx(float(original.tempo.beats_at(seconds)), abs=1e-9)


def test_beat_time_automation_is_read_in_quarter_notes(tmp_path):
    def beat_time(root):
        lst = _lists(root, "pan-azimuth")[-1]
        lst.set("time-domain", "BeatTime")
        lst.find("events").text = "b0 0.5\nb7680 0\nb15360 1\n"

    lane = read_ardour(_edited(tmp_path, beat_time)).lanes["Levels/pan"]
    assert lane.domain == "beats" and [p.time for p in lane.points] == [0, 4, 8]


def test_lists_that_are_not_played_are_left_out_with_a_named_warning(tmp_path):
    def write_state(root):
        _lists(root, "parameter-5")[0].set("state", "Write")

    session = read_ardour(_edited(tmp_path, write_state))
    assert "Song/bendbridge link/macro2" not in session.lanes
    assert any("macro2" in w and "state Write" in w for w in session.warnings)


def test_an_unknown_plugins_parameter_is_normalised_over_its_automation_with_a_warning(tmp_path):
    def other_plugin(root):
        for proc in root.iter("Processor"):
            if proc.get("unique-id") == "urn:bendbridge:link":
                proc.set("unique-id", "urn:example:other")

    session = read_ardour(_edited(tmp_path, other_plugin))
    lane = session.lanes["Song/bendbridge link/macro2"]
    assert (lane.lo, lane.hi) == (0.0, 1.0)
    assert any("range is not in the session" in w for w in session.warnings)


def test_an_unknown_interpolation_style_is_named(tmp_path):
    def style(root):
        _lists(root, "parameter-5")[0].set("interpolation-style", "Wobbly")

    session = read_ardour(_edited(tmp_path, style))
    assert any("'Wobbly' read as linear" in w for w in session.warnings)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.set("version", "9001"), "newer than Ardour 8"),
        (lambda r: r.set("version", "6000"), "Ardour 6 or older"),
        (lambda r: r.set("version", "3001"), "Ardour 6 or older"),
        (lambda r: r.set("sample-rate", "fast"), "sample-rate='fast': expected an integer"),
        (lambda r: _lists(r, "parameter-4")[0].find("events").__setattr__("text", "x12 0.5\n"), "aSUPERCLOCKS"),
        (
            lambda r: _lists(r, "parameter-4")[0].find("events").__setattr__("text", "a0 0\nb1920 1\n"),
            "mixes AudioTime and BeatTime",
        ),
        (lambda r: r.find("TempoMap/Tempos")[1].set("npm", "0"), "tempo map"),
        (lambda r: r.find("TempoMap/Meters")[1].set("bbt", "five|1|0"), "meter at bbt"),
    ],
)
def test_a_session_this_reader_cannot_play_is_a_clear_error(tmp_path, edit, message):
    with pytest.raises(ArdourError, match=re.escape(message)):
        read_ardour(_edited(tmp_path, edit))


@pytest.mark.parametrize(
    "text, message",
    [
        ("<Session", "not a valid session file"),
        ("<Project version='7000'/>", "root element is <Project>"),
        ("<Session sample-rate='48000'/>", "no format version"),
    ],
)
def test_a_file_that_is_not_a_session_is_a_clear_error(tmp_path, text, message):
    (tmp_path / "x.ardour").write_text(text)
    with pytest.raises(ArdourError, match=re.escape(message)):
        read_ardour(tmp_path / "x.ardour")


def test_a_missing_session_file_is_named(tmp_path):
    with pytest.raises(ArdourError, match="no such Ardour session file"):
        read_ardour(tmp_path / "nope.ardour")
