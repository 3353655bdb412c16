"""Bouncing through a running render server (`bounce --server URL`) over real loopback sockets."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bendbridge.bridge.bounce import BounceError, BounceSpec, run_bounce
from bendbridge.protocol.frames import FrameSourceError
from bendbridge.server.render.local_frames import local_rendering


def spec(demo, out: Path, **kw) -> BounceSpec:
    kw.setdefault("steps", 4)
    kw.setdefault("end", "1")
    return BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=out, **kw)


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.with_suffix(".manifest.jsonl").read_text().splitlines()]


def test_a_bounce_through_a_server_matches_the_in_process_bounce(demo, tiny_model, tmp_path, start_server):
    srv = start_server(tiny_model, tmp_path / "server_root", max_batch=4)
    remote = run_bounce(
        spec(demo, tmp_path / "remote.mp4", server=srv.url, frames=tmp_path / "remote_png"), progress=False
    )
    local = run_bounce(
        spec(demo, tmp_path / "local.mp4", batch=4, frames=tmp_path / "local_png"),
        local=local_rendering(tiny_model),
        progress=False,
    )
    assert remote.frames == local.frames == remote.rendered == 24
    a, b = video_frames(tmp_path / "remote.mp4"), video_frames(tmp_path / "local.mp4")
    assert len(a) == len(b) == 24
    for i in range(24):  # same frames; batches may be cut differently on the server, so allow rounding
        x = np.asarray(Image.open(tmp_path / "remote_png" / f"frame_{i:08d}.png"), np.int16)
        y = np.asarray(Image.open(tmp_path / "local_png" / f"frame_{i:08d}.png"), np.int16)
        assert np.abs(x - y).max() <= 2
    ma, mb = manifest(tmp_path / "remote.mp4"), manifest(tmp_path / "local.mp4")
    assert [(e["frame"], e["time"], e["sample"], e["bar_beat"], e["params"]) for e in ma] == [
        (e["frame"], e["time"], e["sample"], e["bar_beat"], e["params"]) for e in mb
    ]
    sessions = list((tmp_path / "server_root").iterdir())  # the server kept its own copy, under its root
    assert len(sessions) == 1 and sessions[0].name.startswith("bounce-remote-")
    assert len((sessions[0] / "manifest.jsonl").read_text().splitlines()) == 24


@pytest.mark.slow
def test_a_bounce_survives_losing_its_server_and_resumes_on_another(demo, tiny_model, tmp_path, start_server):
    first = start_server(tiny_model, tmp_path / "root_a", max_batch=4)
    render_once = first.server.render_once

    def stop_after_two_batches() -> bool:  # the server "dies" once it has rendered 8 or more frames
        did = render_once()
        if first.server.stats["rendered"] >= 8:
            first.stop.set()
        return did

    first.server.render_once = stop_after_two_batches
    out, frames = tmp_path / "v.mp4", tmp_path / "png"
    with pytest.raises(
        FrameSourceError, match=r"--server: no frame from .* within 3 s; the \d+ frames received are kept"
    ) as e:
        run_bounce(spec(demo, out, server=first.url, frames=frames, server_timeout=3), progress=False)
    kept = len((frames / "manifest.jsonl").read_text().splitlines())
    assert f"the {kept} frames received" in str(e.value) and 8 <= kept < 24 and not out.exists()
    second = start_server(tiny_model, tmp_path / "root_b", max_batch=4)
    s = run_bounce(spec(demo, out, server=second.url, frames=frames), progress=False)
    assert (s.frames, s.rendered, s.resumed) == (24, 24 - kept, kept)
    assert len(video_frames(out)) == 24
    assert len((next((tmp_path / "root_b").iterdir()) / "manifest.jsonl").read_text().splitlines()) == 24 - kept


def test_no_server_at_the_url_is_a_clear_error(demo, tmp_path):
    with pytest.raises(
        FrameSourceError, match=r"--server: no render server answers at tcp://127\.0\.0\.1:9 .*bendbridge serve"
    ):
        run_bounce(spec(demo, tmp_path / "v.mp4", server="tcp://127.0.0.1:9", server_timeout=1), progress=False)


def test_a_server_bounce_refuses_a_local_model(demo, tmp_path):
    with pytest.raises(BounceError, match=r"--model: a bounce through --server renders with the server's model"):
        run_bounce(spec(demo, tmp_path / "v.mp4", server="tcp://127.0.0.1:9", model=tmp_path), progress=False)
