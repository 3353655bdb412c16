"""The in-host side: a session played through the plugin renders exactly like the offline bounce."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from pedalboard.io import AudioFile

from bendbridge.bridge.bounce import BounceSpec, run_bounce
from bendbridge.bridge.plugin_link import PluginReceiver
from bendbridge.plugin_stub.contract import ParameterEvent, TransportInfo
from bendbridge.plugin_stub.host import BlockSizes, HostSimulator
from bendbridge.plugin_stub.streaming import StreamingPlugin
from bendbridge.server.render.local_frames import local_rendering


@pytest.fixture(scope="module")
def offline(demo, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("offline") / "v.mp4"
    run_bounce(
        BounceSpec(
            audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=out, start="4:3", end="5:3", steps=4
        ),
        local=local_rendering(tiny_model),
        progress=False,
    )
    return out


def record(demo, blocks: BlockSizes, folder: Path, **play):
    with PluginReceiver("tcp://127.0.0.1:*") as rx:
        plugin = StreamingPlugin(rx.url)
        n = HostSimulator(demo["audio"], demo["midi"]).play(plugin, blocks, **play)
        assert rx.done.wait(120) and plugin.dropped == 0, (rx.stream.problems, plugin.sent, plugin.queued)
        deadline = time.monotonic() + 10
        while rx.stream.position < play.get("end", 10**12) and time.monotonic() < deadline and not rx.stream.audio_end:
            time.sleep(0.01)
        return rx.stream.session(folder), n, rx


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.with_suffix(".manifest.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "blocks",
    [BlockSizes([64]), BlockSizes([512]), BlockSizes([4096]), BlockSizes(random_range=(1, 3000), seed=5)],
    ids=["64", "512", "4096", "random"],
)
def test_frames_and_manifest_through_the_plugin_equal_the_offline_bounce(demo, offline, tiny_model, tmp_path, blocks):
    session, n, _ = record(demo, blocks, tmp_path / "rec")
    with AudioFile(str(demo["audio"])) as f:
        original = f.read(f.frames)
    with AudioFile(str(session.audio)) as f:
        assert np.array_equal(f.read(f.frames), original)  # every sample, whatever the block size
    out = tmp_path / "v.mp4"
    run_bounce(
        BounceSpec(
            audio=session.audio,
            config=demo["config"],
            out=out,
            start="4:3",
            end="5:3",
            steps=4,
            tempo=session.tempo,
            meter=session.meter,
            extra_lanes=session.lanes,
        ),
        local=local_rendering(tiny_model),
        progress=False,
    )
    a, b = manifest(offline), manifest(out)
    assert len(a) == len(b) > 20
    for x, y in zip(a, b):
        assert (x["frame"], x["sample"], x["time"], x["bar_beat"], x["hash"]) == (
            y["frame"],
            y["sample"],
            y["time"],
            y["bar_beat"],
            y["hash"],
        )
        assert x["params"] == y["params"]


def test_the_audio_thread_never_blocks_when_the_bridge_is_gone():
    plugin = StreamingPlugin("tcp://127.0.0.1:1", queue_size=200)  # nobody listens there
    plugin.prepare(48_000, 512)
    audio = np.zeros((2, 512), np.float32)
    worst = 0.0
    for k in range(2000):
        t = time.perf_counter()
        plugin.process(audio, TransportInfo(sample=k * 512, tempo=120.0), [ParameterEvent(3, "x", 0.5)])
        worst = max(worst, time.perf_counter() - t)
    assert worst < 0.01  # far below a 512-sample block (10.7 ms at 48 kHz) even on a loaded CI machine
    assert plugin.dropped > 0 and plugin.queued <= 200
    plugin._give_up_at = 0.0  # a host closing with no bridge: the sender stops at once
    t = time.perf_counter()
    plugin._stop.set()
    plugin._thread.join(5)
    assert time.perf_counter() - t < 5


def test_loops_and_seeks_are_followed(demo, tmp_path):
    host = HostSimulator(demo["audio"], demo["midi"])
    r = host.rate
    session, n, rx = record(
        demo, BlockSizes([1000]), tmp_path / "rec", end=6 * r, seeks={2 * r: 4 * r}, loop=(r // 2, r, 2)
    )
    assert (r, r // 2) in rx.stream.jumps and (2 * r, 4 * r) in rx.stream.jumps
    assert rx.stream.transports[-1].sample < 6 * r <= rx.stream.position
    with AudioFile(str(session.audio)) as f:
        got = f.read(f.frames)
    assert np.array_equal(got[:, : 2 * r], host.audio[:, : 2 * r])  # played twice, same samples
    assert not got[:, 2 * r : 4 * r].any()  # skipped by the seek: never played
    assert np.array_equal(got[:, 4 * r : 6 * r], host.audio[:, 4 * r : 6 * r])


def test_tempo_and_lanes_rebuilt_from_the_plugin_stream_match_the_midi_file(demo, tmp_path):
    from bendbridge.bridge.midifile import read_midi

    session, _, _ = record(demo, BlockSizes(random_range=(50, 700), seed=1), tmp_path / "rec")
    ms = read_midi(demo["midi"])
    for beats in (0, 3, 15.5, 16, 17, 39):
        assert session.tempo.seconds_at(beats) == ms.tempo.seconds_at(beats)
    lane, ref = session.lanes["cc:1:74"], ms.lanes["cc:1:74"]
    for sec in (0.1, 5.0, 12.34, 20.0):
        assert lane.value_at(sec) == ref.value_at(ms.tempo.beats_at(sec))
