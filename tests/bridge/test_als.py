"""Ableton Live sets written by Live 8.1, 9.7, 10.1 and 12.0 (dawtool's test sets, SOURCES.md), read
by bendbridge and checked against numbers it did not produce: the locator times dawtool (an independent
reader whose tempo model was measured against Live) publishes for these files, and a plain
sixteenth-by-sixteenth sum over the set's own tempo events."""

from __future__ import annotations

import bisect
import gzip
import xml.etree.ElementTree as ET
from fractions import Fraction as F
from pathlib import Path

import pytest

from bendbridge.bridge.als import AlsError, read_als
from bendbridge.tools.cli import main

DATA = Path(__file__).parents[1] / "data" / "realworld" / "als"

# dawtool @ 44f3e19f, tests/test_ableton.py, "daw" mode (Live's tempo quantisation): locator times in seconds
DAWTOOL_LOCATORS = {
    "dawtool_automation_intense_unaligned.als": [
        0.0, 0.7452763515350631, 2.335821771598745, 4.173841066076857, 5.706896019728953,
        6.905534691333889, 7.692021891450212, 8.974199935476374, 10.705147339679828,
    ],
    "dawtool_L12_automation_intense_unaligned.als": [
        0.0, 0.7452763515350631, 2.335821771598745, 4.173841066076857, 5.706896019728953,
        6.905534691333889, 7.692021891450212, 8.974199935476374, 10.705147339679828,
    ],
    "dawtool_automation_pathological_end3.als": [
        447.53153265863915, 466.60806196643625, 486.1465317732963, 495.56805602397407, 505.2425003381325,
        517.7672955377825, 525.4196287976511, 539.046232416382, 549.6099694804802,
    ],
    "dawtool_live8_patch_markers_auto.als": [81.09683000726724, 125.34683000726724],
    "dawtool_live9_patch_2_0point.als": [11.169835008759637, 22.141263580188213, 44.08412072304535],
}  # fmt: skip


def _xml(path: Path) -> ET.Element:
    return ET.fromstring(gzip.decompress(path.read_bytes()))


def _locator_beats(path: Path) -> list[F]:
    root = _xml(path)
    return sorted(F(loc.find("Time").get("Value")) for loc in root.iter("Locator"))


@pytest.mark.parametrize("name", sorted(DAWTOOL_LOCATORS))
def test_locators_land_where_dawtool_measured_live_plays_them(name):
    s = read_als(DATA / name)
    got = [float(s.tempo.seconds_at(b)) for b in _locator_beats(DATA / name)]
    assert got == pytest.approx(DAWTOOL_LOCATORS[name], abs=1e-9)


def _tempo_events(root: ET.Element) -> list[tuple[float, float]]:
    """The set's tempo automation events by a plain scan: the master's Tempo target, or its inline events."""
    tempo = next(root.iter("Tempo"))
    target = tempo.find("AutomationTarget")
    events = []
    if target is not None:
        for env in root.iter("AutomationEnvelope"):
            if env.find("EnvelopeTarget/PointeeId").get("Value") == target.get("Id"):
                events = list(env.find("Automation/Events"))
    if not events and tempo.find("ArrangerAutomation/Events") is not None:
        events = list(tempo.find("ArrangerAutomation/Events"))
    if not events:
        return [(0.0, float(tempo.find("Manual").get("Value")))]
    return [(max(0.0, float(e.get("Time"))), float(e.get("Value"))) for e in events]


@pytest.mark.parametrize("path", sorted(DATA.glob("*.als")), ids=lambda p: p.name)
def test_seconds_follow_the_tempo_events_a_sixteenth_at_a_time(path):
    events = _tempo_events(_xml(path))
    s = read_als(path)

    times = [e[0] for e in events]

    def bpm_at(beat: float) -> float:  # straight lines between events, the last of equal times in force
        i = bisect.bisect_right(times, beat) - 1
        (t0, v0), nxt = events[i], (events[i + 1] if i + 1 < len(events) else None)
        return v0 if nxt is None else v0 + (nxt[1] - v0) * (beat - t0) / (nxt[0] - t0)

    end = max(e[0] for e in events) + 4
    seconds, k = 0.0, 0
    while k / 4 < end:
        if k % 16 == 0:
            assert float(s.tempo.seconds_at(F(k, 4))) == pytest.approx(seconds, rel=1e-9, abs=1e-9)
        seconds += 15.0 / bpm_at(k / 4)
        k += 1


def test_live9_mixer_send_and_device_automation_become_lanes():
    path = DATA / "dawtool_live9_patch_2_0point.als"
    s = read_als(path)
    assert s.version == 9 and s.creator == "Ableton Live 9.7.1"
    mix = s.lanes["3-Audio/fx1/MixDirect"]  # a Reverb's dry/wet, automated from beat 87.8 to 94.0
    assert mix.domain == "beats" and (mix.lo, mix.hi) == (0, 1)
    assert mix.value_at(F("94.017811875624375")) == pytest.approx(0.9696969986)
    assert mix.value_at(0) == pytest.approx(0.6060606241)  # the value Live holds from the start
    assert s.lanes["strings/send2"].value_at(0) == pytest.approx(0.05623413622)
    assert s.lanes["6-Audio/volume"].value_at(32) == pytest.approx(0.007079456933)  # a step down at beat 32
    on = next(lane for name, lane in s.lanes.items() if name.startswith("master/fx"))
    assert {p.shape for p in on.points} == {1}  # switches hold


def test_time_signature_automation_starts_bars(tmp_path):
    """A Live 10 set with a 7/8 change written into its TimeSignature envelope (value 6 + 99·3)."""
    root = _xml(DATA / "dawtool_automation.als")
    target = next(root.iter("TimeSignature")).find("AutomationTarget").get("Id")
    for env in root.iter("AutomationEnvelope"):
        if env.find("EnvelopeTarget/PointeeId").get("Value") == target:
            ET.SubElement(env.find("Automation/Events"), "EnumEvent", Id="900", Time="8", Value=str(6 + 99 * 3))
            ET.SubElement(env.find("Automation/Events"), "EnumEvent", Id="901", Time="15", Value=str(4 + 99 * 2))
    out = tmp_path / "meters.als"
    out.write_bytes(gzip.compress(ET.tostring(root)))
    s = read_als(out)
    assert [str(s.meter.bar_beat(b)) for b in (8, F(23, 2), 15, 20)] == ["3:1:000", "4:1:000", "5:1:000", "6:1:000"]
    assert (s.meter.at_beats(15).num, s.meter.at_beats(15).den) == (5, 4)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
        (lambda p: p.write_bytes((DATA / "broken" / "dawtool_junk.als").read_bytes()), "not gzip-compressed"),
        (lambda p: p.write_bytes(gzip.compress(b"<Ableton><LiveSet>")), "the set's XML is not well-formed"),
        (lambda p: p.write_bytes(gzip.compress(b"<Song/>")), "root element <Song>, expected <Ableton>"),
        (lambda p: p.write_bytes(gzip.compress(b'<Ableton MinorVersion="7.0_1"><LiveSet/></Ableton>')), "a Live 7 set"),
    ],
)
def test_a_broken_set_is_named_in_one_line(tmp_path, capsys, make, says):
    f = tmp_path / "bad.als"
    make(f)
    with pytest.raises(AlsError, match=r"bad\.als: "):
        read_als(f)
    assert main(["inspect", str(f)]) == 2 and says in capsys.readouterr().err
