"""Footage in (``bounce --init-video``): which footage frame each bounce frame starts from, exactly,
decoded by PyAV from files PyAV wrote; the bounce from footage, in this process and on a server."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bendbridge.bridge.bounce import BounceError, BounceSpec, run_bounce
from bendbridge.bridge.video_in import Footage, FootageError
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.server.render.local_frames import local_rendering

NTSC = F(30000, 1001)


def grey_clip(path: Path, frames: int, fps: F, size: int = 32) -> Path:
    """Frame k is uniform grey at level 4k (lossless H.264 keeps it within a level or two)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "0"}
        for k in range(frames):
            img = np.full((size, size, 3), 4 * k % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_each_bounce_frame_starts_from_the_footage_frame_on_screen_at_its_time(tmp_path):
    footage = Footage(grey_clip(tmp_path / "ntsc.mp4", 60, NTSC))
    assert len(footage) == 60 and footage.fps == NTSC
    for fps in (F(24), F(25), NTSC, F(60)):
        for k in range(int(2 * fps)):  # two seconds of bounce frames
            t = k / fps
            assert footage.index_at(t) == min(59, int(t * NTSC))  # floor(t · 30000/1001), exactly
    for k in (0, 5, 17, 40, 59):
        assert abs(int(footage.picture(k).mean()) - 4 * k) <= 2


def test_an_earlier_picture_is_decoded_again_and_the_last_one_is_held(tmp_path):
    footage = Footage(grey_clip(tmp_path / "c.mp4", 30, F(24)))
    assert abs(int(footage.picture(20).mean()) - 80) <= 2
    assert abs(int(footage.picture(3).mean()) - 12) <= 2  # back: decoded again from the start
    assert footage.index_at(F(100)) == 29 and footage.duration == F(29, 24)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", r"--init-video: no such file"),
        (lambda d: _write(d / "text.mp4", b"not a video at all"), r"--init-video: text\.mp4 is not a readable video"),
    ],
)
def test_footage_that_cannot_be_read_is_named(tmp_path, make, match):
    with pytest.raises(FootageError, match=match):
        Footage(make(tmp_path))


def test_a_file_without_a_video_stream_is_named(demo):
    with pytest.raises(FootageError, match=r"--init-video: song\.wav has no video stream"):
        Footage(demo["audio"])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def bounce_spec(demo, out: Path, clip: Path, **kw) -> BounceSpec:
    kw.setdefault("steps", 4)
    kw.setdefault("end", "1")
    kw.setdefault("inversion", InversionSettings(to_step=1, iterations=2))
    return BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=out, init_video=clip, **kw)


def test_inversion_options_out_of_range_are_refused_before_anything_is_read(demo, tmp_path):
    clip = grey_clip(tmp_path / "c.mp4", 10, F(24))
    with pytest.raises(BounceError, match=r"--invert-to: 9 is not a step of this render: 0…4"):
        bounce_spec(demo, tmp_path / "v.mp4", clip, inversion=InversionSettings(to_step=9)).check()
    with pytest.raises(BounceError, match=r"--invert-iterations: 0 is outside 1…50"):
        bounce_spec(demo, tmp_path / "v.mp4", clip, inversion=InversionSettings(iterations=0)).check()


@pytest.mark.slow
def test_a_bounce_from_footage_starts_each_frame_from_its_picture_and_resumes_by_footage(
    demo, tiny_model, tmp_path, start_server
):
    clip = grey_clip(tmp_path / "clip.mp4", 40, NTSC, size=64)
    out = tmp_path / "v.mp4"
    local = local_rendering(tiny_model)
    s = run_bounce(bounce_spec(demo, out, clip, frames=tmp_path / "png"), local=local, progress=False)
    entries = [json.loads(line) for line in out.with_suffix(".manifest.jsonl").read_text().splitlines()]
    assert s.frames == 24 and [e["picture"] for e in entries] == [int(F(k, 24) * NTSC) for k in range(24)]
    again = run_bounce(bounce_spec(demo, out, clip, frames=tmp_path / "png"), local=local, progress=False)
    assert again.resumed == 24 and again.rendered == 0
    other = grey_clip(tmp_path / "other.mp4", 40, F(24), size=64)  # other footage: nothing is resumed
    moved = run_bounce(bounce_spec(demo, out, other, frames=tmp_path / "png"), local=local, progress=False)
    assert moved.rendered == 24
    srv = start_server(tiny_model, tmp_path / "server_root", max_batch=4)
    remote = run_bounce(
        bounce_spec(demo, tmp_path / "r.mp4", other, server=srv.url, frames=tmp_path / "rpng"), progress=False
    )
    assert remote.rendered == 24
    for k in range(24):  # the server starts from the same pictures (sent in the requests)
        a, b = (np.asarray(Image.open(tmp_path / d / f"frame_{k:08d}.png"), np.int16) for d in ("png", "rpng"))
        assert np.abs(a - b).max() <= 2


def test_a_still_starts_every_frame_and_one_picture_only_is_allowed(demo, tiny_model, tmp_path):
    picture = tmp_path / "still.png"
    Image.fromarray(np.full((48, 80, 3), 200, np.uint8)).save(picture)
    with pytest.raises(BounceError, match="--init-image: give --init-video or --init-image, not both"):
        bounce_spec(demo, tmp_path / "v.mp4", picture, init_image=picture).check()
    spec = bounce_spec(demo, tmp_path / "v.mp4", None, init_image=picture, end="0.25")
    s = run_bounce(spec, local=local_rendering(tiny_model), progress=False)
    entries = [json.loads(line) for line in (tmp_path / "v.manifest.jsonl").read_text().splitlines()]
    assert s.frames == 6 and {e["picture"] for e in entries} == {0}
