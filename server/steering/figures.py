"""Figures of the steering experiments: the patching heatmap and the steering curve (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bendbridge.bridge.report import pyplot

__all__ = ["patch_heatmap", "steer_curve"]


def patch_heatmap(pm, png: Path) -> None:
    """Targets (rows) × step ranges (columns), coloured and annotated with the restored fraction."""
    plt = pyplot("--out")
    m = pm.mean
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * m.shape[1] + 3.4, 1.6 + 0.34 * m.shape[0]))
    lim = max(1.0, float(np.abs(m).max()))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(pm.columns)), pm.columns)
    ax.set_yticks(range(len(pm.targets)), pm.targets, fontsize=8)
    ax.set_xlabel("denoising steps patched")
    ax.set_ylabel("module (its output patched from the clean run)")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                f"{m[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(m[i, j]) > 0.6 * lim else "black",
            )
    r = pm.request
    rho = pm.seed_agreement()
    agree = f"; seeds' rank correlation {rho:.2f}" if rho is not None else ""
    ax.set_title(
        f"{pm.model}, clean: '{r.clean}'\ncorrupt: '{r.corrupt}'\n"
        f"restored {r.metric} (mean of {len(r.seeds)} seeds{agree})",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, label="restored fraction (1 = clean)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def steer_curve(alphas: Sequence[float], series: dict[str, Sequence[float]], title: str, png: Path) -> None:
    """Classifier probabilities (or any [0, 1] score) against the steering strength α."""
    plt = pyplot("--out")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, ys in series.items():
        ax.plot(alphas, ys, marker="o", label=label)
    ax.set_xlabel("steering strength α")
    ax.set_ylabel("mean probability (scene classifier)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
