"""``bendbridge analyse pca``: a prompt set's PCA plane (the ``pca_move`` bend's), drawn with its
prompts and a grid of frames rendered at points of the plane; and how smoothly frames change along
a line through it, against interpolating the prompts' weights (the usual way between two prompts).

Smoothness is measured as the frame-to-frame change (mean absolute difference, 0–255 levels)
between consecutive frames of a line; a smooth path has small, even steps (a low largest step and
a low ratio of the largest to the mean).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.bridge.report import pyplot
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.operators.text_pca import PcaPlane
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

__all__ = ["PcaStudy", "pca_study", "pca_figure"]

BEND = "move"


@dataclass
class PcaStudy:
    """The plane, the grid of frames [N, N, H, W, 3] at ``points`` (x along columns, y up the
    rows), and the line study: per-step changes along the line from prompt 0 to prompt 1 through
    the plane and by interpolating their weights."""

    plane: PcaPlane
    points: np.ndarray  # [N] plane coordinates of the grid's columns and rows (units of σ)
    grid: np.ndarray
    line_pca: list[float]
    line_weights: list[float]
    settings: RenderSettings

    def to_dict(self) -> dict[str, Any]:
        p = self.plane

        def summary(steps: list[float]) -> dict[str, float]:
            a = np.asarray(steps)
            return {"mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3),
                    "max_over_mean": round(float(a.max() / max(a.mean(), 1e-9)), 2)}  # fmt: skip

        return {
            "prompts": list(p.prompts),
            "coordinates": [[round(float(v), 4) for v in row] for row in p.coordinates],
            "explained_variance": [round(v, 4) for v in p.explained],
            "spread": [float(v) for v in p.spread],
            "grid_points": [float(v) for v in self.points],
            "line": {
                "frames": len(self.line_pca) + 1,
                "from": p.prompts[0],
                "to": p.prompts[1],
                "pca_steps": [round(v, 3) for v in self.line_pca],
                "weights_steps": [round(v, 3) for v in self.line_weights],
                "pca": summary(self.line_pca),
                "weights": summary(self.line_weights),
            },
            "seed": self.settings.seed,
            "steps": self.settings.steps,
            "guidance": self.settings.guidance,
        }


def _steps(images: list[np.ndarray]) -> list[float]:
    return [float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) for a, b in zip(images, images[1:])]


def pca_study(
    model: LoadedModel, prompts: tuple[str, ...], settings: RenderSettings, grid: int = 5, span: float = 2.0,
    line_frames: int = 16, batch: int = 8,
) -> PcaStudy:  # fmt: skip
    """Render the grid (``grid`` × ``grid`` points in [−span, span]²) and the two lines."""
    plan = BendPlan.from_dict(
        {"bend": [{"id": BEND, "op": "pca_move", "target": "text", "params": {"prompts": list(prompts)}}]}
    )
    settings = replace(settings, prompts=prompts)
    moved = Renderer(model, RenderConfig(settings, plan, max_batch=batch))
    plane: PcaPlane = moved.bound[0].static["prompts"].plane
    points = np.linspace(-span, span, grid)
    frames = [FrameSpec(params={BEND: {"x": float(x), "y": float(y)}}) for y in points[::-1] for x in points]
    tiles = np.stack([r.image for r in moved.render(frames)])
    images = tiles.reshape(grid, grid, *tiles.shape[1:])
    a, b = plane.coordinates[0].tolist(), plane.coordinates[1].tolist()
    ts = np.linspace(0.0, 1.0, line_frames)
    along = [FrameSpec(params={BEND: {"x": a[0] + t * (b[0] - a[0]), "y": a[1] + t * (b[1] - a[1])}}) for t in ts]
    line_pca = _steps([r.image for r in moved.render(along)])
    mixed = Renderer(model, RenderConfig(settings, max_batch=batch))
    rest = (0.0,) * (len(prompts) - 2)
    line_weights = _steps([r.image for r in mixed.render([FrameSpec(prompt_weights=(1 - t, t) + rest) for t in ts])])
    return PcaStudy(plane, points, images, line_pca, line_weights, moved.settings)


def pca_figure(study: PcaStudy, png: Path) -> None:
    """Left: the prompts at their coordinates, the grid's points and the line; right: the grid."""
    plt = pyplot("--out")
    p, n = study.plane, len(study.points)
    fig, (ax, axg) = plt.subplots(1, 2, figsize=(12.5, 6.0), gridspec_kw={"width_ratios": [1, 1.1]})
    xs, ys = np.meshgrid(study.points, study.points)
    ax.scatter(xs, ys, s=12, c="0.7", label="grid points (right)")
    c = p.coordinates.numpy()
    ax.plot(c[:2, 0], c[:2, 1], "--", c="tab:orange", label=f"line: '{p.prompts[0]}' → '{p.prompts[1]}'")
    ax.scatter(c[:, 0], c[:, 1], s=40, c="tab:blue", zorder=3, label="prompts")
    for (x, y), text in zip(c, p.prompts):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(0, c="0.85", lw=0.8)
    ax.axvline(0, c="0.85", lw=0.8)
    ax.set_xlabel(f"x: first component, units of its spread ({p.explained[0]:.0%} of the set's variance)")
    ax.set_ylabel(f"y: second component ({p.explained[1]:.0%})")
    ax.set_title("the prompt set's PCA plane (0, 0: their equal mix)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    tile = study.grid.shape[2]
    mosaic = study.grid.transpose(0, 2, 1, 3, 4).reshape(n * tile, n * study.grid.shape[3], 3)
    lo, hi = study.points[0], study.points[-1]
    half = (hi - lo) / (n - 1) / 2 if n > 1 else 0.5
    axg.imshow(mosaic, extent=(lo - half, hi + half, lo - half, hi + half))
    axg.set_xlabel("x (units of σ₁)")
    axg.set_ylabel("y (units of σ₂)")
    axg.set_title(f"frames rendered at the grid points (seed {study.settings.seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
