"""The native plugin inside a real DAW: headless Ardour 7 plays a session through it, and the bridge
is checked against what Ardour itself says — its export, its tempo map, its automation.

``ardour/session.lua`` builds the session (120 → 91.3 BPM, 3/4 then 7/8, a 91.3 → 140 ramp, step
and ramp automation on two macros, a recorded take on the track, a locate while rolling), rolls
it faster than real time, exports the master and writes Ardour's own answers at a grid of
samples. The bridge records the plugin's stream to a .bbs file as it arrives.
"""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from pedalboard.io import AudioFile

from bendbridge.bridge.ardour import read_ardour
from bendbridge.bridge.bounce import BounceSpec, run_bounce
from bendbridge.bridge.plugin_link import PluginReceiver
from bendbridge.bridge.recording import RecordingWriter, read_recording
from bendbridge.server.render.local_frames import local_rendering

from ..bridge.test_ardour_reader import ardour_says, check_against_ardour

pytestmark = pytest.mark.slow

RATE = 48_000
EXPORT_END = 1_440_000  # 30 s
TICK = Fraction(1, 1920)
LUA = Path(__file__).parent / "ardour" / "session.lua"
PRESET_ID = "5a0c1e8e-7c3b-4b1e-9d2a-6b1e0f3b2b11"
# an export preset naming Ardour's own "BWAV 32float Export" format (float WAV: nothing rounded)
PRESET = f"""<?xml version="1.0" encoding="UTF-8"?>
<ExportPreset id="{PRESET_ID}" name="bendbridge float WAV">
  <ExportFormat id="20b4ab09-6452-4cb3-bd66-b921cdbd2942"/>
  <ExportFilename>
    <Folder relative="1" path="export"/>
    <Field name="label" enabled="1"/>
  </ExportFilename>
</ExportPreset>
"""


# Ardour 7.3's headless Lua host dies by a signal in about 1 run in 4 of this session, with or
# without our plugin in it (see _run_session). A run takes about 5 s; six runs all crashing is
# about 1 in 4000 at that rate, and 1 in 60 even if a loaded machine made it 1 run in 2.
CRASH_RETRIES = 5


@pytest.fixture(scope="module")
def ardour(native_build, ardour_lua, tmp_path_factory):
    """Run the session in Ardour once: its folder, the stream the bridge received, the recording."""
    for attempt in range(CRASH_RETRIES + 1):
        root = tmp_path_factory.mktemp("ardour")
        crashed, result = _run_session(native_build, ardour_lua, root)
        if not crashed:
            return result
        print(f"Ardour died by signal {crashed} (run {attempt + 1}); running the session again")
    pytest.fail(f"Ardour died by a signal in all {CRASH_RETRIES + 1} runs of the session")


def _run_session(native_build, ardour_lua, root: Path) -> tuple[int, dict | None]:
    """One run of the session: (0, what it made), or (signal, None) when Ardour itself died by a signal.

    Such a death is Ardour's and is retried. Measured on Debian 12's Ardour 7.3 with this script:
    SIGSEGV or SIGABRT in about 1 run in 4 (3 of 16 runs with the plugin, 4 of 16 with the plugin
    left out of the script); 0 of 16 with the export left out. The backtrace ends in
    ``ExportGraphBuilder::reset`` freeing a corrupted heap chunk at the end of the export, or later
    wherever glibc next meets the corruption (the Lua loop after the export, ``close_session``).
    Anything else fails at once, and every run that lives is checked in full by the tests below,
    the export sample by sample."""
    home = root / "home"
    (home / ".config" / "ardour7" / "export").mkdir(parents=True)
    (home / ".config" / "ardour7" / "export" / "bendbridge.preset").write_text(PRESET)
    session = root / "session"
    recording = root / "take.bbs"
    with PluginReceiver("tcp://127.0.0.1:*", record_to=RecordingWriter(recording)) as rx:
        env = {
            **os.environ,
            "HOME": str(home),
            "LV2_PATH": str(native_build["lv2_path"]),
            "BENDBRIDGE_LINK": rx.url,
            "BENDBRIDGE_SESSION": "ardour-test",
            "BB_SESSION_DIR": str(session),
            "BB_RATE": str(RATE),
            "BB_EXPORT_END": str(EXPORT_END),
            "BB_PRESET": PRESET_ID,
        }
        r = subprocess.run([ardour_lua, str(LUA)], env=env, capture_output=True, text=True, timeout=600)
        if r.returncode < 0:
            return -r.returncode, None  # Ardour died by a signal, before or after DONE
        assert r.returncode == 0 and "DONE" in r.stdout, (r.stdout + r.stderr)[-3000:]
        assert rx.done.wait(30), "no bye from the plugin when Ardour closed the session"
        stream = rx.snapshot()
    exports = list((session / "export").glob("*.wav"))
    assert len(exports) == 1, exports
    return 0, {
        "session": session / "session.ardour",
        "says": session / "ardour_says.txt",
        "export": exports[0],
        "stream": stream,
        "recording": recording,
        "rebuilt": stream.session(root / "rebuilt"),
    }


def test_the_plugin_hears_exactly_what_ardour_exports(ardour):
    with AudioFile(str(ardour["export"])) as f:
        assert f.samplerate == RATE
        exported = f.read(f.frames)
    assert exported.shape == (2, EXPORT_END) and np.abs(exported).max() > 0.05
    heard = ardour["stream"].audio()[:, :EXPORT_END]
    assert np.array_equal(heard, exported)  # sample-exact: the last pass over every sample was the export


def test_the_stream_is_whole_and_follows_every_jump(ardour):
    stream = ardour["stream"]
    assert stream.problems == [] and stream.ended
    targets = [to for _, to in stream.jumps]
    assert 96_000 in targets and 150_000 in targets  # the locate, and the locate while rolling
    assert read_recording(ardour["recording"]).records == stream.records  # every record kept


def test_the_rebuilt_tempo_map_lands_on_ardours(ardour):
    """Positions within two of Ardour's ticks (which it rounds to) and Ardour's bars everywhere."""
    grid, _ = ardour_says(ardour["says"])
    rebuilt = ardour["rebuilt"]
    assert [(s.bar, s.num, s.den) for s in rebuilt.meter.sigs] == [(1, 4, 4), (5, 3, 4), (9, 7, 8)]
    worst = Fraction(0)
    for sample, quarters, (bar, _, _) in grid:
        beats = rebuilt.tempo.beats_at(Fraction(sample, RATE))
        worst = max(worst, abs(beats - quarters))
        assert rebuilt.meter.bar_beat(quarters).bar == bar
    print(f"rebuilt tempo map vs Ardour: worst {float(worst / TICK):.2f} ticks over {len(grid)} positions")
    assert worst <= 2 * TICK


def test_tempo_changes_land_within_a_block_of_the_session_files(ardour):
    session, rebuilt = read_ardour(ardour["session"]), ardour["rebuilt"]
    errors = []
    for quarters in (8, 16, 28, 35, 38, 42, 45):  # each change, meter changes, inside the ramp, after it
        expected = session.tempo.seconds_at(quarters) * RATE
        errors.append(float(rebuilt.tempo.seconds_at(quarters) * RATE - expected))
    print("tempo change places, stream minus session file (samples):", [round(e, 2) for e in errors])
    assert max(map(abs, errors)) < 1024


def test_the_macros_equal_ardours_automation_at_every_sample_it_was_asked(ardour):
    _, lanes = ardour_says(ardour["says"])
    rebuilt = ardour["rebuilt"].lanes
    for n in (1, 2):
        for sample, value in lanes[f"Song/bendbridge link/macro{n}"]:
            assert rebuilt[f"macro{n}"].value_at(Fraction(sample, RATE)) == pytest.approx(value, abs=1e-6)
    step = rebuilt["macro1"]
    for sample in (120_013, 348_007, 580_811, 960_001):  # each step lands on its sample, not a block later
        before, at = step.value_at(Fraction(sample - 1, RATE)), step.value_at(Fraction(sample, RATE))
        assert before != at, sample


def test_the_session_file_and_the_stream_agree_at_every_frame(ardour):
    session, rebuilt = read_ardour(ardour["session"]), ardour["rebuilt"]
    check_against_ardour(ardour["session"], ardour["says"])
    fps = Fraction(30_000, 1001)
    for frame in range(int(EXPORT_END / RATE * fps)):
        t = frame / fps
        for n in (1, 2):
            a, b = session.lanes[f"macro{n}"].value_at(t), rebuilt.lanes[f"macro{n}"].value_at(t)
            assert a == pytest.approx(b, abs=1e-6), (frame, n)
        assert abs(session.tempo.beats_at(t) - rebuilt.tempo.beats_at(t)) <= 2 * TICK


BOUNCE_CONFIG = """
[render]
prompts = ["a lighthouse at night"]
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
depth = 0.8
[[param.source]]
kind = "feature"
name = "rms"
depth = 0.5
"""


def _manifest(folder: Path) -> list[dict]:
    import json

    return [json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()]


def test_a_bounce_from_the_session_file_equals_one_from_the_recording(ardour, tiny_model, tmp_path):
    """Same frames, samples, parameters and image hashes; bar:beat:tick within one tick."""
    config = tmp_path / "c.toml"
    config.write_text(BOUNCE_CONFIG)
    common = dict(config=config, end="8", steps=2)
    run_bounce(
        BounceSpec(
            audio=ardour["export"], ardour=ardour["session"], out=tmp_path / "a.mp4", frames=tmp_path / "a", **common
        ),
        local=local_rendering(tiny_model),
        progress=False,
    )
    stream = read_recording(ardour["recording"])
    rec = stream.session(tmp_path / "rec")
    run_bounce(
        BounceSpec(
            audio=rec.audio,
            tempo=rec.tempo,
            meter=rec.meter,
            extra_lanes=rec.lanes,
            out=tmp_path / "b.mp4",
            frames=tmp_path / "b",
            **common,
        ),
        local=local_rendering(tiny_model),
        progress=False,
    )
    a, b = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    assert len(a) == len(b) == 192
    for x, y in zip(a, b):
        assert (x["frame"], x["sample"], x["time"], x["params"], x["hash"]) == (
            y["frame"],
            y["sample"],
            y["time"],
            y["params"],
            y["hash"],
        )
        (xb, xbeat, xt), (yb, ybeat, yt) = (map(int, z["bar_beat"].split(":")) for z in (x, y))
        assert (xb, xbeat) == (yb, ybeat) and abs(xt - yt) <= 1, (x["bar_beat"], y["bar_beat"])
