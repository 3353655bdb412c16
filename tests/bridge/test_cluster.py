"""Bounces on Ray render workers (``bounce --cluster ray``): a private Ray on 127.0.0.1 only, frames
equal to an in-process bounce's, a killed worker's batch rendered again exactly once, and a
stopped bounce resumed with the same command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bendbridge.bridge.bounce import BounceError, BounceSpec, run_bounce
from bendbridge.protocol.frames import FrameSourceError
from bendbridge.server.cluster_worker import RenderWorker
from bendbridge.server.render.local_frames import local_rendering

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported: loopback only
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def spec(demo, out: Path, **kw) -> BounceSpec:
    kw.setdefault("steps", 3)
    kw.setdefault("end", "1")
    kw.setdefault("batch", 4)
    return BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=out, **kw)


def frames_of(folder: Path, n: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"frame_{i:08d}.png"), np.int16) for i in range(n)]


@pytest.fixture(scope="module")
def private_ray():
    """A private Ray for this module (every port on 127.0.0.1); stopped after it, and only it."""
    from bendbridge.bridge.cluster_frames import start_local_ray

    start_local_ray(2)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_a_cluster_bounce_equals_the_in_process_bounce_and_resumes(demo, saved_tiny_model, tmp_path, private_ray):
    nodes = private_ray.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)  # loopback only
    local = run_bounce(
        spec(demo, tmp_path / "local.mp4", frames=tmp_path / "local", model=saved_tiny_model),
        local=local_rendering(saved_tiny_model),
        progress=False,
    )
    cluster = run_bounce(
        spec(demo, tmp_path / "c.mp4", frames=tmp_path / "c", model=saved_tiny_model, cluster="ray", workers=2),
        progress=False,
        cluster_worker=RenderWorker,
    )
    assert cluster.frames == local.frames == cluster.rendered == 24
    for a, b in zip(frames_of(tmp_path / "local", 24), frames_of(tmp_path / "c", 24)):
        assert np.abs(a - b).max() <= 1  # same batches of 4; a worker's arithmetic may round differently
    manifest = [json.loads(line) for line in (tmp_path / "c.manifest.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in manifest] == list(range(24))
    again = run_bounce(  # the same command again: everything is resumed, nothing rendered
        spec(demo, tmp_path / "c.mp4", frames=tmp_path / "c", model=saved_tiny_model, cluster="ray", workers=2),
        progress=False,
        cluster_worker=RenderWorker,
    )
    assert again.resumed == 24 and again.rendered == 0


def test_a_killed_workers_batch_is_rendered_again_and_every_frame_comes_once(demo, saved_tiny_model, private_ray):
    from bendbridge.bridge.bounce import plan_bounce
    from bendbridge.bridge.cluster_frames import ClusterFrames, ClusterSpec

    bp = plan_bounce(spec(demo, Path("unused.mp4"), model=saved_tiny_model))
    source = ClusterFrames(
        ClusterSpec(None, 2, in_flight=2), bp.settings, bp.plan, 2, saved_tiny_model, worker=RenderWorker
    )
    try:
        got, killed = [], False
        for frame in source.render(list(range(24)), bp.positions, bp.params):
            got.append(frame.frame)
            if not killed:
                private_ray.kill(source.workers[0])  # its queued batches fail with ActorDiedError
                killed = True
        assert sorted(got) == list(range(24)) and len(got) == 24  # each frame exactly once
        assert source.replaced >= 1 and len(source.workers) == 2
    finally:
        source.close()


def test_cluster_options_are_checked_before_anything_starts(demo, tmp_path):
    with pytest.raises(FrameSourceError, match=r"--cluster: 'spark' is not valid; allowed: ray"):
        spec(demo, tmp_path / "v.mp4", cluster="spark").check()
    with pytest.raises(FrameSourceError, match=r"--workers: 0 is outside 1…256"):
        spec(demo, tmp_path / "v.mp4", cluster="ray", workers=0).check()
    with pytest.raises(BounceError, match="--cluster: give --server or --cluster, not both"):
        spec(demo, tmp_path / "v.mp4", cluster="ray", server="tcp://127.0.0.1:1").check()
