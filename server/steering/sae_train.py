"""Training a sparse autoencoder on one module's activations, and reading its features.

1. ``collect``  render ``prompts`` scenes (the embedded model's grammar, or lines of a prompt file
                for any model), seeded; at each step of the range keep ``pixels`` random pixel
                vectors of the module's prompt-conditioned output, and per image its final frame
                and the module's map at the range's last step (for the feature sheets). Saved in
                chunks (resumable).
2. ``train``    top-k autoencoder (:class:`~.sae.SparseAutoencoder`) on 90 % of the vectors:
                MSE on the scaled input, Adam, decoder columns renormalised each step, batches
                seeded by step, a checkpoint every 200 steps (resumable).
3. ``report``   on the held-out 10 %: the fraction of variance unexplained, the share of
                features that never fire (dead), and each feature's largest activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RenderSettings

from .files import unet_identity
from .probes import cond_rows, probing, resolve_targets, step_range
from .sae import SparseAutoencoder

__all__ = ["SAERequest", "collect", "train", "feature_maxima", "top_images"]


@dataclass(frozen=True)
class SAERequest:
    """``bendbridge sae train``'s settings."""

    target: str
    prompts: int = 256
    prompt_file: Path | None = None
    steps: str | None = None
    features: int = 512
    k: int = 8
    pixels: int = 48
    train_steps: int = 3000
    batch: int = 1024
    lr: float = 1e-3
    seed: int = 0

    def check(self) -> None:
        for name, lo, hi in (("prompts", 8, 100000), ("features", 8, 65536), ("pixels", 1, 4096),
                             ("train_steps", 1, 10**7), ("batch", 16, 65536)):  # fmt: skip
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise BendbridgeError(f"--{name.replace('_', '-')}", f"{v} is out of range [{lo}, {hi}]")
        if not 1 <= self.k <= self.features:
            raise BendbridgeError("--k", f"{self.k} is out of range [1, {self.features}] (at most --features)")
        if self.prompt_file is not None and not self.prompt_file.is_file():
            raise BendbridgeError("--prompt-file", f"no such file {str(self.prompt_file)!r}")


def _prompts(req: SAERequest) -> list[str]:
    if req.prompt_file is not None:
        lines = [ln.strip() for ln in req.prompt_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise BendbridgeError("--prompt-file", "holds no prompts")
        return [lines[i % len(lines)] for i in range(req.prompts)]
    from bendbridge.server.embedded import scenes

    rng = np.random.default_rng((req.seed, 77))
    return [scenes.caption(scenes.random_scene(rng)) for _ in range(req.prompts)]


@torch.no_grad()
def collect(model, req: SAERequest, work: Path, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Vectors [N, C], images [P, H, W, 3] uint8, maps [P, C, h, w] fp16, prompts; cached in ``work``."""
    from bendbridge.server.render import RenderConfig, Renderer

    req.check()
    prompts = _prompts(req)
    chunk = 8

    def renderer_for(c0: int):
        settings = RenderSettings(tuple(prompts[c0 : c0 + chunk]), seed=req.seed)
        return Renderer(model, RenderConfig(settings, max_batch=chunk, share_prefix=False))

    renderer = renderer_for(0)
    info = resolve_targets([req.target], renderer.layers, "--target")[0]
    first, last = step_range(req.steps, renderer.steps)
    parts = []
    for c0 in range(0, len(prompts), chunk):
        path = work / f"acts_{c0:06d}.pt"
        if not path.exists():
            r = renderer if c0 == 0 else renderer_for(c0)
            got = _collect_chunk(r, info.name, c0, first, last, req)
            torch.save(got, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            progress(len(r.prompts))
        parts.append(torch.load(path, weights_only=True))
    meta = {
        "model": model.base_name,
        "model_id": unet_identity(renderer.unet),
        "module": info.name,
        "steps": [first, last],
        "prompts": len(prompts),
        "prompt_source": str(req.prompt_file) if req.prompt_file else "embedded scene grammar",
        "seed": req.seed,
    }
    return {
        "vectors": torch.cat([p["vectors"] for p in parts]),
        "images": torch.cat([p["images"] for p in parts]).numpy(),
        "maps": torch.cat([p["maps"] for p in parts]),
        "prompts": prompts,
        "meta": meta,
    }


def _collect_chunk(renderer, module: str, c0: int, first: int, last: int, req: SAERequest) -> dict:
    """One renderer's prompts (prompt indices from ``c0``): sampled vectors, final images, last-step maps."""
    from bendbridge.server.render import FrameSpec

    got: list[torch.Tensor] = []
    maps: list[torch.Tensor] = []
    P = len(renderer.prompts)
    g = torch.Generator().manual_seed(req.seed * 100003 + c0)

    def probe(step: int, x: torch.Tensor) -> None:
        if not first <= step <= last:
            return
        c = cond_rows(x, P, renderer.guided).float().cpu()  # [B, C, H, W]
        b, ch, h, w = c.shape
        pick = torch.randint(0, h * w, (b, req.pixels), generator=g)
        flat = c.flatten(2)  # [B, C, HW]
        got.append(torch.gather(flat, 2, pick[:, None, :].expand(b, ch, -1)).permute(0, 2, 1).reshape(-1, ch))
        if step == last:
            maps.append(c.half())

    frames = [FrameSpec.of_prompt(i, P, seed=req.seed + c0 + i) for i in range(P)]
    with probing(renderer, [(module, probe)]):
        d = renderer.denoise(frames)
    images = np.stack([r.image for r in renderer.finish(d)])
    return {"vectors": torch.cat(got), "images": torch.from_numpy(images), "maps": torch.cat(maps)}


def train(
    vectors: torch.Tensor,
    req: SAERequest,
    work: Path,
    log: Callable[[dict], None] = lambda r: None,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[SparseAutoencoder, dict]:
    """Train on 90 % of ``vectors`` [N, C] (resumable from ``work/sae.ckpt``); report on the rest."""
    n = len(vectors)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(req.seed))
    held = order[: max(1, n // 10)]
    fit = order[max(1, n // 10) :]
    x_fit = vectors[fit]
    scale = float(x_fit.sub(x_fit.mean(0)).norm(dim=1).pow(2).mean().sqrt())
    sae = SparseAutoencoder(vectors.shape[1], req.features, req.k, scale=scale, seed=req.seed)
    with torch.no_grad():
        sae.b_dec.copy_(x_fit.median(0).values)
    opt = torch.optim.Adam(sae.parameters(), lr=req.lr)
    ckpt = work / "sae.ckpt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
    for step in range(start, req.train_steps):
        lr = req.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / req.train_steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(
            0, len(x_fit), (req.batch,), generator=torch.Generator().manual_seed(req.seed * 7919 + step)
        )
        x = x_fit[idx]
        x_hat, _ = sae(x)
        loss = ((x_hat - x) / sae.scale).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalise_decoder()
        if (step + 1) % 50 == 0:
            log({"stage": "sae", "step": step + 1, "loss": loss.item()})
        if (step + 1) % 200 == 0 or step + 1 == req.train_steps:
            torch.save({"sae": sae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
        progress(1)
    sae.eval().requires_grad_(False)
    report = evaluate(sae, vectors[held])
    with torch.no_grad():
        sae.feature_max.copy_(feature_maxima(sae, vectors))
    return sae, report


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, x: torch.Tensor) -> dict:
    """Fraction of variance unexplained, dead-feature share and mean active features on ``x`` [N, C]."""
    x_hat, z = sae(x)
    fvu = float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    fired = (z > 0).any(0)
    return {
        "held_out_vectors": len(x),
        "fraction_of_variance_unexplained": round(fvu, 4),
        "relative_error": round(float((x_hat - x).norm(dim=1).mean() / x.norm(dim=1).mean()), 4),
        "live_features": int(fired.sum()),
        "dead_share": round(1.0 - float(fired.float().mean()), 4),
        "mean_active": round(float((z > 0).float().sum(1).mean()), 2),
    }


@torch.no_grad()
def feature_maxima(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Each feature's largest code value over ``x`` [N, C] → [F]."""
    out = torch.zeros(sae.features)
    for s in range(0, len(x), 8192):
        out = torch.maximum(out, sae.encode(x[s : s + 8192]).max(0).values)
    return out


@torch.no_grad()
def top_images(sae: SparseAutoencoder, maps: torch.Tensor, per_feature: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and feature, the largest activation over the image's pixels; then each feature's
    top images. ``maps`` [P, C, h, w] → (values [F, per_feature], image indices [F, per_feature])."""
    p, c = maps.shape[:2]
    per_image = torch.stack([sae.encode(m.float().flatten(1).t()).max(0).values for m in maps])  # [P, F]
    top = per_image.t().topk(min(per_feature, p), dim=1)
    return top.values, top.indices
