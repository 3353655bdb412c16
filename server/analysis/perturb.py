"""Perturbation and gradient maps (``bendbridge analyse perturb | gradient``): where in the picture
each word of the prompt acts.

For each word, its token positions in the conditioning (the text encoder's output) are scaled by
``1 + δ`` (the ``weight`` bend on that word) and the frame is rendered again from the same noise.

- *perturbation map* (δ = 0.15): the per-pixel change, mean over R, G, B of |picture_w − picture|
  (0–255 levels);
- *gradient map* (δ = 0.01, a finite difference): the per-pixel norm over R, G, B of
  (picture_w − picture) divided by the norm of the conditioning's change, δ·‖e_w‖ (levels per unit
  of embedding norm).

Pictures are compared before rounding to 8 bits, so a small δ still measures. Two overlays:
*dominant* colours each pixel by the word that changed it most (opacity: how much), and *each*
draws one word's map over the picture per panel. Where a word names a colour of the embedded
model's palette, :func:`mask_overlap` says how much of its map falls on the pixels of that colour
(the scene's object or background), against the share of the picture those pixels cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bendbridge.bridge.report import pyplot
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

from .words import Word, prompt_words, render_float

__all__ = ["PERTURB_DELTA", "GRADIENT_DELTA", "WordMaps", "word_maps", "mask_overlap", "word_maps_figure"]

PERTURB_DELTA = 0.15
GRADIENT_DELTA = 0.01


@dataclass
class WordMaps:
    """One prompt's maps: ``words`` (repeated words merged), ``maps`` [W, H, W'] (one per word),
    the unperturbed ``picture`` [H, W', 3] (float, levels) and how they were made."""

    prompt: str
    kind: str  # "perturb" | "gradient"
    delta: float
    words: list[Word]
    picture: np.ndarray
    maps: np.ndarray
    embedding_change: list[float]  # ‖Δe_w‖ per word
    seed: int
    at: str = "input"  # where the word was scaled: the text encoder's input or output
    overlaps: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        totals = self.maps.reshape(len(self.words), -1).sum(1)
        share = totals / max(float(totals.sum()), 1e-12)
        unit = "levels" if self.kind == "perturb" else "levels per unit of embedding norm"
        return {
            "prompt": self.prompt, "kind": self.kind, "delta": self.delta, "at": self.at, "seed": self.seed,
            "unit": unit,
            "words": [
                {"word": w.text, "tokens": list(w.positions), "mean": round(float(m.mean()), 5),
                 "max": round(float(m.max()), 5), "share": round(float(s), 4), "embedding_change": round(n, 5)}
                for w, m, s, n in zip(self.words, self.maps, share, self.embedding_change)
            ],
            "colour_masks": self.overlaps,
        }  # fmt: skip


def _unique_words(words: list[Word]) -> list[Word]:
    merged: dict[str, list[int]] = {}
    for w in words:
        merged.setdefault(w.text, []).extend(w.positions)
    return [Word(text, i, tuple(sorted(pos))) for i, (text, pos) in enumerate(merged.items())]


def word_maps(
    model: LoadedModel, prompt: str, settings: RenderSettings, kind: str = "perturb", delta: float | None = None,
    at: str = "input", batch: int = 8,
) -> WordMaps:  # fmt: skip
    """Render the prompt once unperturbed and once per word with that word scaled by ``1 + delta``:
    at the text encoder's ``input`` (the word's token embeddings, so the change reaches every later
    token, the end and padding tokens included) or at its ``output`` (the word's own rows only)."""
    delta = (PERTURB_DELTA if kind == "perturb" else GRADIENT_DELTA) if delta is None else delta
    base = Renderer(model, RenderConfig(settings, max_batch=batch))
    words = _unique_words(prompt_words(base.tokenizer, prompt))
    names = [f"{prompt} ⟨{w.text} × {1 + delta:g} at the {at}⟩" for w in words]
    r = Renderer(model, RenderConfig(replace(settings, prompts=(prompt, *names)), max_batch=batch))
    norms = []
    for w, name in zip(words, names):
        cond, change = _scaled(r, prompt, w.positions, 1 + delta, at)
        r.use_embedding(name, cond, pooled_of=prompt)
        norms.append(change)
    frames = [FrameSpec.of_prompt(k, len(names) + 1) for k in range(len(names) + 1)]
    pictures = render_float(r, frames)
    picture, changed = pictures[0], pictures[1:] - pictures[0]
    if kind == "perturb":
        maps = np.abs(changed).mean(-1)
    else:
        maps = np.linalg.norm(changed, axis=-1) / np.maximum(np.asarray(norms), 1e-12)[:, None, None]
    wm = WordMaps(prompt, kind, delta, words, picture, maps, norms, r.settings.seed, at=at)
    wm.overlaps = mask_overlap(wm)
    return wm


@torch.no_grad()
def _scaled(r: Renderer, prompt: str, positions: tuple[int, ...], scale: float, at: str) -> tuple[torch.Tensor, float]:
    """The conditioning [T, D] with the rows at ``positions`` scaled by ``scale`` at the text
    encoder's input or output, and the norm of the change made there."""
    if at == "output":
        cond = r.embed(prompt).clone()
        rows = list(positions)
        change = float((cond[rows].float() * (scale - 1)).norm())
        cond[rows] = cond[rows] * scale
        return cond, change
    changes: list[float] = []

    def hook(_module, _args, out):
        out = out.clone()
        rows = list(positions)
        changes.append(float((out[:, rows].float() * (scale - 1)).norm()))
        out[:, rows] = out[:, rows] * scale
        return out

    handles = [encoder.get_input_embeddings().register_forward_hook(hook) for encoder in r.cond.encoders]
    try:  # SDXL: the word scaled in both encoders' inputs
        cond, _ = r.cond.encode(prompt, r.device)
    finally:
        for handle in handles:
            handle.remove()
    return cond, math.sqrt(sum(c * c for c in changes))


def mask_overlap(wm: WordMaps) -> dict[str, dict[str, float]]:
    """For each word that names a palette colour present in the picture: the share of its map on
    the pixels nearest that colour (``inside``) and the share of the picture they cover (``area``)."""
    from bendbridge.server.embedded import scenes

    names = list(scenes.COLOURS)
    labels = scenes.nearest_colour(np.clip(wm.picture, 0, 255).round().astype(np.uint8))
    out = {}
    for w, m in zip(wm.words, wm.maps):
        if w.text not in names:
            continue
        mask = labels == names.index(w.text)
        if not mask.any():
            continue
        out[w.text] = {
            "inside": round(float((m * mask).sum() / max(float(m.sum()), 1e-12)), 4),
            "area": round(float(mask.mean()), 4),
        }
    return out


def _grey(picture: np.ndarray) -> np.ndarray:
    g = (np.clip(picture, 0, 255) / 255.0).mean(-1, keepdims=True)
    return np.repeat(0.35 + 0.5 * g, 3, axis=-1)


def word_maps_figure(wm: WordMaps, png: Path, mode: str = "both") -> None:
    """The picture, the *dominant* overlay and/or one *each* panel per word, with a legend/colour bar."""
    plt = pyplot("--out")
    n = len(wm.words)
    each = mode in ("each", "both")
    dominant = mode in ("dominant", "both")
    cols = 1 + int(dominant) + (n if each else 0)
    fig, axes = plt.subplots(1, cols, figsize=(2.3 * cols + 0.8, 3.0), squeeze=False)
    axes = axes[0]
    pic = np.clip(wm.picture, 0, 255) / 255.0
    axes[0].imshow(pic)
    axes[0].set_title(f"'{wm.prompt}'\nseed {wm.seed}", fontsize=7)
    colours = plt.get_cmap("tab10" if n <= 10 else "tab20")(np.arange(n))[:, :3]
    k = 1
    if dominant:
        strongest = wm.maps.argmax(0)
        alpha = (wm.maps.max(0) / max(float(wm.maps.max()), 1e-12))[..., None]
        overlay = _grey(wm.picture) * (1 - alpha) + colours[strongest] * alpha
        axes[k].imshow(overlay)
        axes[k].set_title("dominant word (opacity: change)", fontsize=7)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(n)]
        axes[k].legend(handles, [w.text for w in wm.words], fontsize=6, loc="lower left", framealpha=0.7)
        k += 1
    if each:
        top = max(float(wm.maps.max()), 1e-12)
        for i, w in enumerate(wm.words):
            axes[k].imshow(_grey(wm.picture))
            im = axes[k].imshow(wm.maps[i], cmap="magma", alpha=np.clip(wm.maps[i] / top, 0, 1), vmin=0, vmax=top)
            axes[k].set_title(f"'{w.text}'", fontsize=8)
            k += 1
        unit = "levels" if wm.kind == "perturb" else "levels / ‖Δe‖"
        fig.colorbar(im, ax=list(axes[-n:]), fraction=0.02, label=f"change ({unit})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    what = "perturbation" if wm.kind == "perturb" else "gradient (finite difference)"
    fig.suptitle(f"{what} maps: each word scaled by 1 + {wm.delta:g} at the text encoder's {wm.at}", fontsize=9)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
