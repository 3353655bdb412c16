"""Building steering vectors by Contrastive Activation Addition (Rimsky et al., ACL 2024).

For each target module and denoising step, the vector is the mean of the module's output over a
*positive* prompt set minus its mean over a *negative* set, each prompt rendered from the same
``seeds`` start noises, on the prompt-conditioned rows only. ``broadcast="channel"`` averages it
over the pixels ([C]; ``weighting="difference"`` weights each pixel by how much the sets differ
there, ``"pixels"`` not at all); ``"spatial"`` keeps [C, H, W]. ``per_step`` keeps one
vector per step of the range, else their mean.

``broadcast="token"`` steers the text conditioning instead, the residual stream of the text
encoder as in CAA on language models: prompts are paired one to one, each pair is aligned at the
first token where the two differ (the *word*, e.g. "blue" against "red"), and the vector [K, D]
is the mean difference of the encoder's output rows from that token on (``tokens`` = K rows: the
word and what follows it, which in a causal encoder has read the word). It needs no denoising.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings

from .files import unet_identity
from .probes import cond_rows, probing, resolve_targets, step_range
from .vectors import TEXT_KEY, SteerVectors

__all__ = ["CAARequest", "BROADCASTS", "build_vectors", "first_difference"]

BROADCASTS = ("channel", "spatial", "token")
MAX_TOKENS = 16
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
    tokens: int = 2

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
        if (self.broadcast == "token") != (tuple(self.targets) == (TEXT_KEY,)):
            raise BendbridgeError("--target", "a token vector (--broadcast token) steers --target text, and only it")
        if self.broadcast == "token":
            self._check_tokens()

    def _check_tokens(self) -> None:
        if not 1 <= self.tokens <= MAX_TOKENS:
            raise BendbridgeError("--tokens", f"{self.tokens} is out of range [1, {MAX_TOKENS}]")
        if len(self.positive) != len(self.negative):
            raise BendbridgeError(
                "--negative",
                "a token vector pairs the prompts one to one: "
                f"{len(self.positive)} positive, {len(self.negative)} negative",
            )
        if self.per_step or self.steps is not None:
            raise BendbridgeError("--steps", "a token vector is the text encoder's: it has no denoising steps")


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
    if request.broadcast == "token":
        return _token_vectors(model, request, settings)
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


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first token position where two id sequences differ (None if they are equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def _token_vectors(model, request: CAARequest, settings: RenderSettings | None) -> SteerVectors:
    """The token vector [1, K, D] of paired prompts: mean over pairs of the text encoder's output
    rows from their first differing token on (positive − negative)."""
    from bendbridge.server.render import RenderConfig, Renderer

    renderer = Renderer(
        model, RenderConfig(replace(settings or RenderSettings(request.positive[:1]), prompts=request.positive[:1]))
    )
    total, words = None, []
    for i, (pos, neg) in enumerate(zip(request.positive, request.negative)):
        ip, ineg = renderer.cond.ids(pos), renderer.cond.ids(neg)
        at = first_difference(ip, ineg)
        if at is None:
            raise BendbridgeError(
                f"--positive[{i}]", f"{pos!r} and its pair {neg!r} tokenize the same: nothing to steer"
            )
        ep, en = renderer.embed(pos).float(), renderer.embed(neg).float()  # [T, D]
        k = min(request.tokens, ep.shape[0] - at)
        d = torch.zeros(request.tokens, ep.shape[-1])
        d[:k] = ep[at : at + k] - en[at : at + k]
        total = d if total is None else total + d
        words.append(renderer.tokenizer.decode(ineg[at : at + 1]).strip())
    v = (total / len(request.positive))[None]  # [1, K, D]
    meta = {
        "model": model.base_name,
        "model_id": unet_identity(renderer.unet),
        "steps": None,
        "per_step": False,
        "broadcast": "token",
        "tokens": request.tokens,
        "words": sorted(set(words)),
        "positive": list(request.positive),
        "negative": list(request.negative),
        "norms": {TEXT_KEY: round(float(v[0].norm(dim=1).mean()), 4)},
    }
    return SteerVectors({TEXT_KEY: v}, meta)
