"""Regenerate the README's images: prompt sheet, operator sweep sheet, decoder sheet, demo strip.

python -m bendbridge.tools.make_docs [--demo demo/demo.mp4]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["main", "PROMPTS"]

PROMPTS = [
    "a red circle on a blue background",
    "a yellow star on a purple background",
    "a green square on a white gradient background",
    "a blue triangle on an orange checkered background",
    "a yellow sun over a purple sea",
    "a white ring in a starry night sky",
    "pink stripes on a green background",
    "a small black diamond in the top left on a yellow background",
    "a large orange cross on a cyan background",
    "a brown heart on a pink background",
    "a purple elephant dancing on the moon",
    "a gray star in the bottom right on a red gradient background",
]


def prompt_sheet(out: Path, seed: int = 0) -> None:
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import load_model
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    r = Renderer(load_model(), RenderConfig(RenderSettings(tuple(PROMPTS), seed=seed), max_batch=12))
    imgs = [
        res.image
        for res in r.render(
            [FrameSpec(prompt_weights=tuple(float(i == j) for j in range(len(PROMPTS)))) for i in range(len(PROMPTS))]
        )
    ]
    h, w = imgs[0].shape[:2]
    cols, cap = 6, 30
    rows = (len(imgs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + 4) + 4, rows * (h + cap + 4) + 4), "white")
    d = ImageDraw.Draw(sheet)
    for k, (img, p) in enumerate(zip(imgs, PROMPTS)):
        x, y = 4 + (k % cols) * (w + 4), 4 + (k // cols) * (h + cap + 4)
        sheet.paste(Image.fromarray(img), (x, y))
        words, line, lines = p.split(), "", []
        for word in words:
            if len(line) + len(word) > 24:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        d.multiline_text((x, y + h + 1), "\n".join(lines[:3]), fill="black", spacing=0)
    sheet.save(out)


def demo_strip(video: Path, out: Path, n: int = 8) -> None:
    """Two rows: ``n`` frames spread over the whole video, then ``n`` frames (every other one)
    from a beat onwards, found in the manifest beside the video, to show the beat-driven bends."""
    import av

    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    rows = [[frames[int(i)] for i in np.linspace(0, len(frames) - 1, n)]]
    manifest = video.with_suffix(".manifest.jsonl")
    if manifest.exists():
        beats = [json.loads(line)["beats"] for line in manifest.read_text().splitlines()]
        mid = len(beats) // 2
        on_beat = next(
            (i for i in range(mid, len(beats) - 2 * n) if math.floor(beats[i]) > math.floor(beats[i - 1])), None
        )
        if on_beat is not None:
            rows.append([frames[on_beat - 2 + 2 * k] for k in range(n)])
    Image.fromarray(np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)).save(out)


def decoder_sheet(out: Path, frames: tuple[int, ...] = (40, 120, 200, 300, 420)) -> None:
    """Demo frames of the embedded and fast models drawn by the VAE and by the tiny decoder, one
    row each, labelled, with each model's mean absolute difference and PSNR over the frames."""
    import tempfile

    from bendbridge.bridge.bounce import BounceSpec, plan_bounce
    from bendbridge.bridge.demo_song import DEMO_CONFIG, DEMO_FAST_CONFIG, write_demo
    from bendbridge.server.model import load_model
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    rows, labels = [], []
    for model, config in (("embedded", DEMO_CONFIG), ("fast", DEMO_FAST_CONFIG)):
        demo = write_demo(Path(tempfile.mkdtemp(prefix="bb-docs-")), config)
        bp = plan_bounce(BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=Path("x.mp4")))
        images = []
        for decoder in ("full", "tiny"):
            r = Renderer(load_model(model, "cpu", decoder=decoder), RenderConfig(bp.settings, bp.plan, max_batch=8))
            images.append(np.stack([x.image for x in r.render([FrameSpec(params=bp.params[i]) for i in frames])]))
        diff = np.abs(images[0].astype(np.float64) - images[1])
        psnr = 10 * math.log10(255**2 / float((diff**2).mean()))
        for decoder, img in zip(("VAE", "tiny decoder"), images):
            rows.append(np.concatenate(list(img), axis=1))
            labels.append(f"{model}, {decoder}" + (f": mean |diff| {diff.mean():.1f}/255, {psnr:.1f} dB" if
                                                    decoder != "VAE" else ""))  # fmt: skip
    h, pad = rows[0].shape[0], 16
    sheet = Image.new("RGB", (rows[0].shape[1], len(rows) * (h + pad)), "white")
    d = ImageDraw.Draw(sheet)
    for k, (row, label) in enumerate(zip(rows, labels)):
        d.text((2, k * (h + pad) + 2), label, fill="black")
        sheet.paste(Image.fromarray(row), (0, k * (h + pad) + pad))
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--demo", type=Path, default=None, help="a demo video to take the strip from")
    args = ap.parse_args(argv)
    args.docs.mkdir(exist_ok=True)
    prompt_sheet(args.docs / "prompts.png")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bendbridge.tools.cli",
            "sweep",
            "--config",
            str(args.docs / "sweep.toml"),
            "--out",
            str(args.docs / "sweep.png"),
        ],
        check=True,
    )
    decoder_sheet(args.docs / "tiny_decoder.png")
    if args.demo:
        demo_strip(args.demo, args.docs / "demo_strip.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
