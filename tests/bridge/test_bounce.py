"""End-to-end bounce: song + MIDI + config → MP4, checked by decoding it (tiny model)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction as F
from pathlib import Path

import av
import mido
import numpy as np
import pytest

from bendbridge.bridge.bounce import BounceError, BounceSpec, run_bounce
from bendbridge.server.render.local_frames import local_rendering


def spec(demo, out: Path, **kw) -> BounceSpec:
    kw.setdefault("steps", 4)
    return BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=out, **kw)


def independent_beats(midi: Path, seconds: float) -> float:
    """Beats at ``seconds`` computed straight from the MIDI file's tempo events with mido."""
    mf = mido.MidiFile(midi)
    tempos, tick = [], 0
    for msg in mido.merge_tracks(mf.tracks):
        tick += msg.time
        if msg.type == "set_tempo":
            tempos.append((tick, msg.tempo))
    beats, t, last_tick, tempo = 0.0, 0.0, 0, 500_000
    for tk, tp in tempos:
        seg = mido.tick2second(tk - last_tick, mf.ticks_per_beat, tempo)
        if t + seg >= seconds:
            break
        t, beats, last_tick, tempo = t + seg, (tk / mf.ticks_per_beat), tk, tp
    return beats + (seconds - t) * 1e6 / tempo


def decode(path: Path) -> tuple[list[F], list[np.ndarray], int, int]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        times = [f.pts * f.time_base for f in frames]
        images = [f.to_ndarray(format="rgb24") for f in frames]
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        samples, rate = sum(f.samples for f in c.decode(audio=0)), st.rate
    return times, images, samples, rate


@pytest.mark.slow
def test_bounce_places_every_frame_and_the_audio_on_the_timeline(demo, tiny_model, tmp_path):
    out = tmp_path / "v.mp4"
    s = run_bounce(
        spec(demo, out, fps="30000/1001", start="4:1", end="6:1"), local=local_rendering(tiny_model), progress=False
    )
    fps = F(30000, 1001)
    start, end = F(3 * 4 * 60, 100), F(4 * 4 * 60, 100) + F(4 * 60, 128)  # bar 4 at 100 BPM; bar 6 after the change
    n = math.ceil((end - start) * fps)
    assert s.frames == n == s.rendered and not s.nan_frames
    times, images, samples, rate = decode(out)
    assert len(times) == n and times == [i / fps for i in range(n)]
    assert images[0].shape == (64, 64, 3)
    video_dur = n / fps
    assert abs(F(samples, rate) - video_dur) < 1 / fps  # AAC padding included
    entries = [json.loads(line) for line in out.with_suffix(".manifest.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in entries] == list(range(n))
    for e in entries:
        t = start + e["frame"] / fps
        assert F(e["time"]) == t and e["sample"] == math.floor(t * 44_100 + F(1, 2))  # the song's own rate
        assert e["beats"] == pytest.approx(independent_beats(demo["midi"], float(t)), abs=1e-9)
        assert set(e["params"]) == {"spin", "pump", "thump", "sweep"}
    assert entries[0]["bar_beat"] == "4:1:000"
    assert any(e["bar_beat"].startswith("5:") for e in entries)  # spans the tempo change
    assert len({e["params"]["sweep"]["degrees"] for e in entries}) > 10  # the CC 74 lane moves
    assert not list(tmp_path.glob(".v.bounce"))  # the work folder is cleaned up


def test_frame_samples_are_counted_in_the_songs_own_rate(demo, tiny_model, tmp_path):
    """The demo song is 44.1 kHz: frame 1 at 29.97 fps is sample 1471 (1001/30000 s · 44100), not 48 kHz's 1602."""
    from bendbridge.bridge.bounce import plan_bounce

    bp = plan_bounce(spec(demo, tmp_path / "v.mp4", fps="30000/1001", end="1"))
    assert bp.timeline.grid.rate == 44_100
    assert [p.sample for p in bp.positions[:3]] == [0, 1471, 2943]


def test_bounce_to_prores_mov_and_keeps_frames_on_request(demo, tiny_model, tmp_path):
    out = tmp_path / "v.mov"
    run_bounce(spec(demo, out, end="0.5", frames=tmp_path / "png"), local=local_rendering(tiny_model), progress=False)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "prores" and c.streams.audio[0].codec_context.name.startswith(
            "pcm"
        )
    assert len(list((tmp_path / "png").glob("frame_*.png"))) == 12


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"end": "99"}, r"--end: 99\.000 s is past the end of the audio"),
        ({"start": "3", "end": "2"}, r"--end: the range is empty"),
        ({"start": "x:y"}, r"--start: 'x:y': expected seconds"),
        ({"fps": "0"}, r"frame rate 0 out of range"),
    ],
)
def test_bad_ranges_are_named(demo, tiny_model, tmp_path, kw, match):
    with pytest.raises((BounceError, ValueError), match=match):
        run_bounce(spec(demo, tmp_path / "v.mp4", **kw), local=local_rendering(tiny_model), progress=False)


@pytest.mark.slow
def test_a_killed_bounce_resumes_with_only_the_missing_frames_and_the_same_video(demo, tiny_model, tmp_path):
    model = tmp_path / "tiny"
    tiny_model.pipe.save_pretrained(model)
    (model / "bendbridge.json").write_text(json.dumps({"steps": 2, "guidance": 2.0, "size": 64}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def cmd(out: Path, frames: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bendbridge.tools.cli",
            "bounce",
            "--audio",
            str(demo["audio"]),
            "--midi",
            str(demo["midi"]),
            "--config",
            str(demo["config"]),
            "--model",
            str(model),
            "--end",
            "4",
            "--batch",
            "4",
            "--steps",
            "4",
            "--frames",
            str(frames),
            "--out",
            str(out),
        ]

    clean = tmp_path / "clean.mp4"
    subprocess.run(cmd(clean, tmp_path / "clean_frames"), env=env, check=True, capture_output=True, timeout=600)
    out, frames = tmp_path / "resumed.mp4", tmp_path / "frames"
    proc = subprocess.Popen(cmd(out, frames), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = frames / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 20):
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    done_before = len(manifest.read_text().splitlines())
    assert 20 <= done_before < 96 and not out.exists()
    r = subprocess.run(cmd(out, frames), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{96 - done_before} rendered, {done_before} resumed" in r.stdout
    a, b = decode(clean), decode(out)
    assert a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1])) and a[2] == b[2]
    ma = [json.loads(line)["hash"] for line in clean.with_suffix(".manifest.jsonl").read_text().splitlines()]
    mb = [json.loads(line)["hash"] for line in out.with_suffix(".manifest.jsonl").read_text().splitlines()]
    assert ma == mb


def test_the_demo_keeps_an_edited_config_and_the_bundled_one_stays_known(demo, tmp_path):
    from bendbridge.bridge.demo_song import bundled_config, write_demo

    assert demo["config"].read_text(encoding="utf-8") == bundled_config()
    folder = tmp_path / "song"
    folder.mkdir()
    (folder / "song.wav").write_bytes(demo["audio"].read_bytes())
    (folder / "song.mid").write_bytes(demo["midi"].read_bytes())
    (folder / "demo.toml").write_text("# mine\n", encoding="utf-8")
    assert write_demo(folder)["config"].read_text(encoding="utf-8") == "# mine\n"
