"""Building steering vectors by Contrastive Activation Addition (Rimsky et al., ACL 2024).

For each target module and denoising step, the vector is the mean of the module's output over a
*positive* prompt set minus its mean over a *negative* set, each prompt rendered from the same
``seeds`` start noises, on the prompt-conditioned rows only. ``broadcast="channel"`` averages it
over the pixels ([C]; ``weighting="difference"`` weights each pixel by how much the sets differ
there, ``"pixels"`` not at all); ``"spatial"`` keeps [C, H, W]. ``per_step`` keeps one
vector per step of the range, else their mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings

from .files import unet_identity
from .probes import cond_rows, probing, resolve_targets, step_range
from .vectors import SteerVectors

__all__ = ["CAARequest", "BROADCASTS", "build_vectors"]

BROADCASTS = ("channel", "spatial")
WEIGHTINGS = ("difference", "pixels")
MAX_PROMPTS = RENDER_FIELDS["prompts"].max_len


@dataclass(frozen=True)
class CAARequest:
    """What ``bendbridge steer build`` asks for: prompt sets, target modules (names or ``#N``), the
    step range ("A-B", None = all), the number of seeds, per-step vectors, and the broadcast."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    targets: tuple[str, ...]
    steps: str | None = None
    seeds: int = 4
    per_step: bool = False
    broadcast: str = "channel"
    weighting: str = "difference"

    def check(self) -> None:
        for name in ("positive", "negative"):
            prompts = getattr(self, name)
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise BendbridgeError(f"--{name}", "expected one or more non-empty prompts")
        if not 1 <= self.seeds <= 256:
            raise BendbridgeError("--seeds", f"{self.seeds} is out of range [1, 256]")
        if self.weighting not in WEIGHTINGS:
            raise BendbridgeError("--weighting", f"{self.weighting!r} is not valid; allowed: {', '.join(WEIGHTINGS)}")
        if self.broadcast not in BROADCASTS:
            raise BendbridgeError("--broadcast", f"{self.broadcast!r} is not valid; allowed: {', '.join(BROADCASTS)}")


@torch.no_grad()
def build_vectors(
    model,
    request: CAARequest,
    *,
    settings: RenderSettings | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> SteerVectors:
    """Steering vectors of ``request`` on ``model`` (a LoadedModel); ``settings`` gives steps,
    guidance and size (None fields: the model's defaults). ``progress(n)`` after each batch of n frames."""
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    request.check()
    prompts = (*request.positive, *request.negative)
    base = settings or RenderSettings(prompts[:MAX_PROMPTS])
    npos, nneg = len(request.positive), len(request.negative)
    weight = [1.0 / (npos * request.seeds)] * npos + [-1.0 / (nneg * request.seeds)] * nneg
    sums: dict[tuple[str, int], torch.Tensor] = {}
    signs = torch.zeros(0)

    def probe_for(name: str):
        def probe(step: int, x: torch.Tensor) -> None:
            if first <= step <= last:
                c = cond_rows(x, len(signs), renderer.guided).float()
                w = signs.to(c.device).reshape(-1, 1, 1, 1)
                acc = (w * c).sum(0)
                sums[(name, step)] = sums[(name, step)] + acc if (name, step) in sums else acc

        return probe

    for g in range(0, len(prompts), MAX_PROMPTS):  # a render holds at most MAX_PROMPTS prompts
        group = prompts[g : g + MAX_PROMPTS]
        renderer = Renderer(model, RenderConfig(replace(base, prompts=group), share_prefix=False))
        targets = resolve_targets(request.targets, renderer.layers, "--target")
        first, last = step_range(request.steps, renderer.steps)
        jobs = [(p, s) for p in range(len(group)) for s in range(request.seeds)]
        with probing(renderer, [(t.name, probe_for(t.name)) for t in targets]):
            for i in range(0, len(jobs), renderer.config.max_batch):
                chunk = jobs[i : i + renderer.config.max_batch]
                signs = torch.tensor([weight[g + p] for p, _ in chunk])
                renderer.denoise([FrameSpec.of_prompt(p, len(group), seed=s) for p, s in chunk])
                progress(len(chunk))
    vectors = {}
    for t in targets:
        per = torch.stack([sums[(t.name, s)] for s in range(first, last + 1)])  # [S, C, H, W]
        if request.broadcast == "channel":
            per = _pixel_mean(per, request.weighting)
        vectors[t.name] = per if request.per_step else per.mean(0, keepdim=True)
    meta = {
        "model": model.base_name,
        "model_id": unet_identity(renderer.unet),
        "steps": [first, last],
        "per_step": request.per_step,
        "broadcast": request.broadcast,
        "weighting": request.weighting if request.broadcast == "channel" else None,
        "positive": list(request.positive),
        "negative": list(request.negative),
        "seeds": request.seeds,
        "num_steps": renderer.steps,
        "guidance": renderer.guidance,
        "size": [renderer.width, renderer.height],
        "norms": {t.name: round(float(vectors[t.name].flatten(1).norm(dim=1).mean()), 4) for t in targets},
    }
    return SteerVectors(vectors, meta)


def _pixel_mean(d: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-pixel differences [S, C, H, W] → [S, C]: their plain mean (``pixels``), or their mean
    weighted by each pixel's difference norm (``difference``: the difference where the prompt sets
    differ, undiluted by the pixels where they agree, such as a shared background)."""
    flat = d.flatten(2)  # [S, C, HW]
    if weighting == "pixels":
        return flat.mean(2)
    w = flat.norm(dim=1, keepdim=True)  # [S, 1, HW]
    return (flat * w).sum(2) / w.sum(2).clamp_min(1e-12)
