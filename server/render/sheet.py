"""Contact sheets: operator × value × target grids, like the papers' figures.

A sweep config (TOML)::

    prompt = "a red circle on a blue background"
    seed = 0
    steps = 6           # optional: model default
    guidance = 4.0      # optional

    [[row]]
    label = "channel rotation (0,1) at step 0"    # optional
    op = "rotate_plane"
    target = "latent"
    step = 0
    params = { plane = [0, 1] }      # static and base values
    sweep = "angle"                   # the per-frame parameter swept along the row
    values = [0.0, 0.8, 1.6, 2.4, 3.2]

Each row renders all its values in one batch (each frame its own parameter value).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import LoadedModel

from .renderer import FrameSpec, RenderConfig, Renderer

__all__ = ["SweepRow", "SweepConfig", "load_sweep", "render_sheet", "labelled_grid"]

_ROW_KEYS = {
    "label",
    "op",
    "target",
    "step",
    "steps",
    "word",
    "params",
    "sweep",
    "values",
    "branch",
    "channels",
    "channel_fraction",
    "element_fraction",
    "region",
    "seed",
}


@dataclass(frozen=True)
class SweepRow:
    label: str
    bend: dict[str, Any]
    sweep: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class SweepConfig:
    settings: RenderSettings  # the sweep file's top-level prompt, seed, steps, guidance
    rows: tuple[SweepRow, ...]


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep TOML; errors name the field (``row[2].values``)."""
    p = Path(path)
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(str(p), "no such sweep file") from None
    except tomllib.TOMLDecodeError as e:
        raise PlanError(str(p), f"not valid TOML: {e}") from None
    rows = []
    for i, r in enumerate(d.get("row", [])):
        extra = set(r) - _ROW_KEYS
        if extra:
            raise PlanError(f"row[{i}].{sorted(extra)[0]}", f"unknown field; valid: {', '.join(sorted(_ROW_KEYS))}")
        for k in ("op", "target", "sweep", "values"):
            if k not in r:
                raise PlanError(f"row[{i}].{k}", "missing")
        vals = r["values"]
        if (
            not isinstance(vals, list)
            or not vals
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        ):
            raise PlanError(f"row[{i}].values", "expected a non-empty list of numbers")
        bend = {k: v for k, v in r.items() if k not in ("label", "sweep", "values")}
        bend["id"] = "swept"
        plan = BendPlan.from_dict({"bend": [bend]})  # validates op, target, params
        plan.frame_param("swept", r["sweep"], bend_field=f"row[{i}].op", name_field=f"row[{i}].sweep")
        label = r.get("label") or f"{r['op']}.{r['sweep']} @ {plan.bends[0].target}"
        rows.append(SweepRow(label, bend, r["sweep"], tuple(float(v) for v in vals)))
    if not rows:
        raise PlanError("row", "a sweep needs at least one [[row]]")
    top = {k: v for k, v in d.items() if k != "row"}
    top.setdefault("prompt", "a red circle on a blue background")
    return SweepConfig(RenderSettings.from_table(top, where=""), tuple(rows))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_sheet(model: LoadedModel, sweep: SweepConfig, *, progress: bool = True) -> Image.Image:
    """Render the sweep and lay it out: one labelled row per bend, one column per value."""
    from tqdm import tqdm

    tiles: list[list[np.ndarray]] = []
    for row in tqdm(sweep.rows, desc="sweep", disable=not progress):
        plan = BendPlan.from_dict({"bend": [row.bend]})
        r = Renderer(model, RenderConfig(sweep.settings, plan))
        frames = [FrameSpec(params={"swept": {row.sweep: v}}) for v in row.values]
        tiles.append([res.image for res in r.render(frames)])
    return labelled_grid(
        [
            (row.label, [(img, f"{row.sweep}={v:g}") for img, v in zip(imgs, row.values)])
            for row, imgs in zip(sweep.rows, tiles)
        ]
    )


def labelled_grid(rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, str]]]]) -> Image.Image:
    """Rows of images [H, W, 3] uint8, each row under its label and each image over its caption."""
    h, w = rows[0][1][0][0].shape[:2]
    label_h, pad = 18, 4
    ncol = max(len(tiles) for _, tiles in rows)
    sheet = Image.new("RGB", (ncol * (w + pad) + pad, len(rows) * (h + label_h + 14 + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = _font(12), _font(10)
    y = pad
    for label, tiles in rows:
        draw.text((pad, y), label, fill="black", font=font)
        y += label_h
        for j, (img, caption) in enumerate(tiles):
            x = pad + j * (w + pad)
            sheet.paste(Image.fromarray(img), (x, y))
            draw.text((x + 2, y + h + 1), caption, fill="black", font=small)
        y += h + 14 + pad
    return sheet
