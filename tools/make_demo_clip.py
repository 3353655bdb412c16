"""Draw the bundled demo footage (``bridge/demo_clip.mp4``): the demo song's scene as a short film —
a sun rising over a purple sea whose waves roll — 8 s at 30000/1001 fps (NTSC, so a 24 fps bounce
of it exercises the exact footage-to-frame mapping), 128 × 128, H.264.

    python -m bendbridge.tools.make_demo_clip [--out bridge/demo_clip.mp4]
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from bendbridge.server.embedded import scenes
from bendbridge.server.embedded.scenes import Scene, _background, _shape_mask

FPS = Fraction(30000, 1001)
SECONDS = 8


def frame(i: int, n: int) -> np.ndarray:
    """Frame ``i`` of ``n``: the sea's waves move a step every frame; the sun climbs an arc from the
    horizon at the left to high at the right, yellow turning to orange as it goes."""
    t = i / (n - 1)
    sea = Scene("yellow", "circle", "purple", style="sea", variant=i // 3)
    img = _background(sea)
    cx, cy = 0.2 + 0.6 * t, 0.55 - 0.35 * math.sin(math.pi * 0.5 * t)
    sun = np.array(scenes.COLOURS["yellow"], np.float32) * (1 - t) + np.array(scenes.COLOURS["orange"], np.float32) * t
    mask = _shape_mask("circle", cx, cy, 0.13, 0)[..., None]
    horizon = int(scenes.IMAGE_SIZE * 0.62)
    mask[horizon:] = 0.0  # the sun rises from behind the sea
    return np.clip(img * (1 - mask) + sun * mask, 0, 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "bridge" / "demo_clip.mp4")
    args = ap.parse_args(argv)
    import av

    n = int(SECONDS * FPS)
    with av.open(str(args.out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = scenes.IMAGE_SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16", "preset": "slow"}
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i, n), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"wrote {args.out}: {n} frames at {FPS} fps ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
