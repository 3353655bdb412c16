"""DAWproject files: the format's public example files, and files written here with its schema
(each validated against Bitwig's Project.xsd before it is read)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
import zipfile
from fractions import Fraction as F
from pathlib import Path

import pytest
import xmlschema

from bendbridge.bridge.dawproject import DawProjectError, read_dawproject
from bendbridge.tools.cli import main

DATA = Path(__file__).parents[1] / "data" / "realworld" / "dawproject"
SCHEMA = xmlschema.XMLSchema(DATA / "Project.xsd")


def _zip(tmp_path: Path, xml: str, name: str = "p.dawproject") -> Path:
    SCHEMA.validate(xml)  # the file is what the format's own schema allows
    out = tmp_path / name
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("project.xml", xml)
        z.writestr("metadata.xml", '<?xml version="1.0" encoding="UTF-8"?><MetaData/>')
    return out


@pytest.mark.parametrize("path", sorted(DATA.glob("*.dawproject")), ids=lambda p: p.name)
def test_public_example_files_give_every_parameter_lane_point_for_point(path):
    session = read_dawproject(path)
    root = ET.fromstring(zipfile.ZipFile(path).read("project.xml"))
    assert session.tempo.bpm_at(0) == F(root.find("Transport/Tempo").get("value"))
    names = {el.get("id"): el for el in root.iter() if el.get("id")}
    for points in root.find("Arrangement").iter("Points"):
        target = names[points.find("Target").get("parameter")]
        lane = next(lane for lane in session.lanes.values() if lane.name.endswith("/" + target.tag.lower()))
        for pt in points.findall("RealPoint"):
            assert lane.value_at(F(pt.get("time"))) == pytest.approx(float(pt.get("value")))
        assert lane.domain == "beats"  # no timeUnit anywhere: beats, as the schema says


def test_the_bitwig_studio_example_of_the_format_documentation(tmp_path):
    """The project.xml Bitwig Studio 5.0 wrote, from the format's README."""
    session = read_dawproject(_zip(tmp_path, (DATA / "bitwig_studio_5_readme_project.xml").read_text()))
    assert session.application == "Bitwig Studio 5.0" and session.tempo.bpm_at(0) == 149
    assert (session.meter.at_beats(0).num, session.meter.at_beats(0).den) == (4, 4) and not session.lanes


def _project(body: str, arrangement: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Project version="1.0">
  <Application name="bendbridge tests" version="1"/>
  <Transport>
    <Tempo id="tempo" unit="bpm" value="100" min="20" max="666"/>
    <TimeSignature id="sig" numerator="4" denominator="4"/>
  </Transport>
  <Structure>{body}</Structure>
  <Arrangement id="arr">{arrangement}</Arrangement>
</Project>"""


STRUCTURE = """
    <Track id="t1" name="Bass" contentType="notes" loaded="true">
      <Channel id="c1" role="regular" audioChannels="2">
        <Devices>
          <Vst3Plugin id="d1" deviceName="Filter" deviceRole="audioFX" loaded="true">
            <Parameters>
              <RealParameter id="p42" parameterID="42" name="Cutoff" unit="normalized" min="0" max="1" value="0.5"/>
            </Parameters>
            <Enabled id="d1on" value="true"/>
          </Vst3Plugin>
        </Devices>
        <Mute id="m1" value="false"/>
        <Pan id="pan1" unit="normalized" min="0" max="1" value="0.5"/>
        <Sends><Send id="s1"><Volume id="sv1" unit="linear" min="0" max="2" value="1"/></Send></Sends>
        <Volume id="v1" unit="linear" min="0" max="2" value="1"/>
      </Channel>
    </Track>
    <Track id="t0" name="Main" contentType="audio notes" loaded="true">
      <Channel id="c0" role="master" audioChannels="2">
        <Volume id="v0" unit="linear" min="0" max="2" value="1"/>
      </Channel>
    </Track>"""

ARRANGEMENT = """
    <Lanes id="l0" timeUnit="beats">
      <Lanes id="l1" track="t1">
        <Points id="a1"><Target parameter="v1"/>
          <RealPoint time="0" value="0.5" interpolation="linear"/><RealPoint time="8" value="1.5"/>
        </Points>
        <Points id="a2"><Target parameter="p42"/>
          <RealPoint time="4" value="0.25"/><RealPoint time="6" value="0.75"/>
        </Points>
        <Points id="a3"><Target parameter="m1"/><BoolPoint time="2" value="true"/></Points>
        <Points id="a4" unit="normalized"><Target expression="channelController" channel="0" controller="74"/>
          <RealPoint time="0" value="0" interpolation="linear"/><RealPoint time="4" value="1"/>
        </Points>
        <Clips id="k1"><Clip time="0" duration="4"><Points id="a5"><Target parameter="sv1"/>
          <RealPoint time="0" value="1"/></Points></Clip></Clips>
      </Lanes>
      <Points id="a6" timeUnit="seconds"><Target parameter="v0"/>
        <RealPoint time="0" value="1" interpolation="linear"/><RealPoint time="3" value="0"/>
      </Points>
    </Lanes>
    <TempoAutomation id="ta" timeUnit="beats"><Target parameter="tempo"/>
      <RealPoint time="0" value="100"/><RealPoint time="8" value="100" interpolation="linear"/>
      <RealPoint time="16" value="140"/>
    </TempoAutomation>
    <TimeSignatureAutomation id="sa" timeUnit="beats"><Target parameter="sig"/>
      <TimeSignaturePoint time="0" numerator="4" denominator="4"/>
      <TimeSignaturePoint time="16" numerator="7" denominator="8"/>
      <TimeSignaturePoint time="23" numerator="5" denominator="4"/>
    </TimeSignatureAutomation>"""


def test_tempo_automation_in_beats_ramps_linearly_in_beats(tmp_path):
    s = read_dawproject(_zip(tmp_path, _project(STRUCTURE, ARRANGEMENT)))
    assert s.tempo.bpm_at(s.tempo.seconds_at(4)) == 100
    assert float(s.tempo.bpm_at(s.tempo.seconds_at(12))) == pytest.approx(120, rel=1e-9)  # halfway in beats
    # seconds to beat 16 by numerical integration of 60 / bpm(b), bpm linear in b over 8..16
    n = 20_000
    ramp = sum(60 / (100 + 40 * (k + 0.5) / n) for k in range(n)) * 8 / n
    assert float(s.tempo.seconds_at(16)) == pytest.approx(8 * 60 / 100 + ramp, rel=1e-9)
    assert s.tempo.bpm_at(s.tempo.seconds_at(20)) == 140


def test_time_signature_automation_starts_bars(tmp_path):
    s = read_dawproject(_zip(tmp_path, _project(STRUCTURE, ARRANGEMENT)))
    assert [str(s.meter.bar_beat(b)) for b in (16, F(39, 2), 23, 28)] == ["5:1:000", "6:1:000", "7:1:000", "8:1:000"]
    assert s.meter.at_beats(23).num == 5 and not [w for w in s.warnings if "bar line" in w]


def test_track_device_send_and_midi_lanes_are_named_like_the_other_readers(tmp_path):
    s = read_dawproject(_zip(tmp_path, _project(STRUCTURE, ARRANGEMENT)))
    assert sorted(s.lanes) == ["Bass/cc:1:74", "Bass/fx1/42", "Bass/mute", "Bass/volume", "master/volume"]
    vol = s.lanes["Bass/volume"]
    assert (vol.lo, vol.hi, vol.domain) == (0, 2, "beats") and vol.value_at(4) == pytest.approx(1.0)
    cutoff = s.lanes["Bass/fx1/42"]  # interpolation defaults to hold
    assert cutoff.value_at(F(59, 10)) == 0.25 and cutoff.normalised_at(3) is None
    assert s.lanes["Bass/mute"].value_at(3) == 1 and s.lanes["Bass/cc:1:74"].normalised_at(2) == pytest.approx(0.5)
    master = s.lanes["master/volume"]
    assert master.domain == "seconds" and master.value_at(F(3, 2)) == pytest.approx(0.5)
    assert any("inside clips are not read" in w for w in s.warnings)


def test_an_off_bar_time_signature_starts_a_new_bar_with_a_warning(tmp_path):
    arrangement = ARRANGEMENT.replace('time="23" numerator="5"', 'time="22" numerator="5"')
    s = read_dawproject(_zip(tmp_path, _project(STRUCTURE, arrangement)))
    assert str(s.meter.bar_beat(22)) == "7:1:000"
    assert any("5/4 at beat 22 does not fall on a bar line of 7/8" in w for w in s.warnings)


def test_tempo_automation_in_seconds_ramps_linearly_in_time(tmp_path):
    arrangement = ARRANGEMENT.replace(
        '<TempoAutomation id="ta" timeUnit="beats">', '<TempoAutomation id="ta" timeUnit="seconds">'
    )
    s = read_dawproject(_zip(tmp_path, _project(STRUCTURE, arrangement)))
    assert s.tempo.bpm_at(12) == 120 and s.tempo.seconds_at(4) == F(4 * 60, 100)
    assert math.isclose(float(s.tempo.beats_at(16)), 8 * 100 / 60 + 8 * 120 / 60)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a zip", "not a DAWproject: not a zip archive"),
        ({"metadata.xml": "<MetaData/>"}, "not a DAWproject: the archive has no project.xml"),
        ({"project.xml": "<Project version='1.0'><Transport>"}, "project.xml: not well-formed XML"),
        ({"project.xml": "<Project version='2.0'/>"}, "project.xml: format version '2.0' is not 1.x"),
        ({"project.xml": "<Song/>"}, "project.xml: root element <Song>, expected <Project>"),
        (
            {"project.xml": "<Project version='1.0'><Transport><Tempo id='t' value='fast'/></Transport></Project>"},
            "<Tempo> value='fast': expected a number",
        ),
    ],
)
def test_a_broken_dawproject_is_named_in_one_line(tmp_path, capsys, content, says):
    f = tmp_path / "bad.dawproject"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        with zipfile.ZipFile(f, "w") as z:
            for name, text in content.items():
                z.writestr(name, text)
    with pytest.raises(DawProjectError, match=r"bad\.dawproject: " + re.escape(says)):
        read_dawproject(f)
    assert main(["inspect", str(f)]) == 2 and says in capsys.readouterr().err
