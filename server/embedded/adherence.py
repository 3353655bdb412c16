"""Prompt adherence of a model on held-out procedural prompts, judged by the scene classifier.

Held-out prompts come from scene *combinations* (colour, shape, background colour, style) that
were never drawn for training (:func:`server.embedded.scenes.is_held_out`), so none was seen
verbatim. Each image is judged by :func:`server.embedded.scenes.classify_colours`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import scenes

__all__ = ["AdherenceReport", "measure_adherence"]


@dataclass(frozen=True)
class AdherenceReport:
    n: int
    fg_right: int
    bg_right: int  # counted over images whose caption names a background colour
    bg_named: int
    both_right: int
    images: np.ndarray  # [N, H, W, 3]
    captions: tuple[str, ...]
    guesses: tuple[tuple[str, str | None], ...]

    @property
    def both_rate(self) -> float:
        return self.both_right / self.n

    def summary(self) -> str:
        return (
            f"{self.n} held-out prompts: "
            f"foreground colour right {self.fg_right}/{self.n} ({100 * self.fg_right / self.n:.0f} %), "
            f"background colour right {self.bg_right}/{self.bg_named} "
            f"({100 * self.bg_right / max(1, self.bg_named):.0f} %), "
            f"both right {self.both_right}/{self.n} ({100 * self.both_rate:.0f} %)"
        )


def measure_adherence(
    model: Any, n: int = 48, seed: int = 0, steps: int | None = None, guidance: float | None = None
) -> AdherenceReport:
    """Render ``n`` held-out scenes on ``model`` (a LoadedModel) and classify their colours."""
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    chosen = scenes.held_out_scenes(n, seed=seed)
    caps = tuple(scenes.caption(s) for s in chosen)
    imgs = []
    for i in range(0, n, 8):
        settings = RenderSettings(caps[i : i + 8], seed=seed, steps=steps, guidance=guidance)
        r = Renderer(model, RenderConfig(settings, max_batch=8))
        k = len(caps[i : i + 8])
        frames = [FrameSpec.of_prompt(p, k) for p in range(k)]
        imgs.extend(res.image for res in r.render(frames))
    guesses, fg_ok, bg_ok, bg_named, both = [], 0, 0, 0, 0
    for s, img in zip(chosen, imgs):
        fg, bg = scenes.classify_colours(img, s.style)
        guesses.append((fg, bg))
        f = fg == s.fg
        b = s.bg is None or bg == s.bg
        fg_ok += f
        if s.bg is not None:
            bg_named += 1
            bg_ok += bg == s.bg
        both += f and b
    return AdherenceReport(n, fg_ok, bg_ok, bg_named, both, np.stack(imgs), caps, tuple(guesses))
