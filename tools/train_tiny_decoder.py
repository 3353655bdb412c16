"""Distil the embedded model's VAE into a tiny autoencoder (diffusers ``AutoencoderTiny``, TAESD-style).

At two U-Net rows a frame (the fast model), the embedded VAE's decoder costs more than the
U-Net: 1.9 GFLOP a frame at 128 px. The tiny decoder does the same job in about 0.2 GFLOP: a
TAESD-shaped stack (Bohan 2023, "Tiny AutoEncoder for Stable Diffusion") of 16-channel residual
blocks, four at 32², two at 64², then one convolution at 128². It reads U-Net-space latents
directly (``scaling_factor`` 1), so it drops in where the VAE decodes.

1. ``latents``  the fast model's teacher pairs (``runs/fast``: the embedded model's final latents
                for 2048 seeded training captions; made by ``train_fast_model`` if missing), each
                used ``--views`` times: once as it is and otherwise *bent* (seeded by index): a
                channel-plane rotation, a gain of 0.5–1.6, added noise and a spatial flip or
                quarter turn, in random combination. Bends push latents off the training
                distribution, and the decoder must draw those too. The embedded VAE decodes each
                one (the target image) and encodes the unbent images (the encoder's target).
                Saved in chunks (resumable). The last 256 base latents are held out.
2. ``student``  decoder: L1 + MSE on pixels in [-1, 1]; encoder: MSE on the embedded VAE's mean
                latent (times its scaling factor). AdamW, warm-up and cosine decay, EMA, a
                checkpoint every 100 steps, batches seeded by step (resumable).
3. ``export``   the EMA autoencoder as a diffusers folder (``server/embedded/model/vae_tiny``), and
                ``training.json`` with the held-out error against the embedded VAE (mean absolute
                error of 255 and PSNR, unbent and bent latents).

Usage::

    python -m bendbridge.tools.train_tiny_decoder --work runs/tiny_decoder --pairs runs/fast
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .train_embedded_model import _ema_update, _lr, _resume, _save_ckpt, training_log
from .train_fast_model import DistilConfig, stage_teacher

__all__ = ["TinyConfig", "tiny_autoencoder", "main"]

SEED = 9157
HELD_OUT = 256  # base latents kept for the error report


class TinyConfig:
    views = 4  # training samples per base latent (one unbent)
    chunk = 256
    steps = 2500
    batch = 32
    lr = 1e-3
    warmup = 100
    ema_decay = 0.995
    checkpoint_every = 100


def tiny_autoencoder() -> torch.nn.Module:
    """The architecture: 16 channels, decoder blocks (4, 2, 0) at 32², 64², 128²; encoder likewise."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16),
        decoder_block_out_channels=(16, 16, 16),
        num_encoder_blocks=(1, 2, 2),
        num_decoder_blocks=(4, 2, 0),
        latent_channels=4,
        scaling_factor=1.0,
    )


def bend_latent(z: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random combination of latent bends on one latent [C, h, w] (rotation, gain, noise, flip)."""
    c = z.shape[0]
    if rng.random() < 0.6:
        i, j = rng.choice(c, 2, replace=False)
        a = rng.uniform(-math.pi, math.pi)
        zi, zj = z[i].clone(), z[j].clone()
        z = z.clone()
        z[i], z[j] = math.cos(a) * zi - math.sin(a) * zj, math.sin(a) * zi + math.cos(a) * zj
    if rng.random() < 0.5:
        z = z * rng.uniform(0.5, 1.6)
    if rng.random() < 0.4:
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        z = z + rng.uniform(0.05, 0.6) * torch.randn(z.shape, generator=g)
    if rng.random() < 0.3:
        z = torch.rot90(z, int(rng.integers(1, 4)), dims=(1, 2)) if rng.random() < 0.5 else z.flip(-1)
    return z


@torch.no_grad()
def _chunk(vae, base: torch.Tensor, start: int, n: int, views: int) -> dict:
    """Samples [start, start + n): latents, the VAE's images (uint8) and, unbent, its encoder mean."""
    sf = vae.config.scaling_factor
    zs, bent = [], []
    for k in range(start, start + n):
        z = base[k // views]
        is_bent = k % views != 0
        zs.append(bend_latent(z, np.random.default_rng((SEED, k))) if is_bent else z)
        bent.append(is_bent)
    z = torch.stack(zs)
    x = vae.decode(z / sf).sample.clamp(-1, 1)
    mean = vae.encode(x).latent_dist.mean * sf
    images = ((x + 1) * 127.5).round().to(torch.uint8)
    return {"z": z.half(), "images": images, "enc": mean.half(), "bent": torch.tensor(bent)}


def stage_latents(work: Path, vae, base: torch.Tensor, cfg: TinyConfig) -> dict[str, torch.Tensor]:
    total = len(base) * cfg.views
    parts = []
    for start in tqdm(range(0, total, cfg.chunk), desc="latents"):
        path = work / f"latents_{start:06d}.pt"
        if not path.exists():
            _save_ckpt(path, **_chunk(vae, base, start, min(cfg.chunk, total - start), cfg.views))
        parts.append(torch.load(path))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _losses(model, z, images, enc, bent) -> tuple[torch.Tensor, torch.Tensor]:
    target = images.float() / 127.5 - 1
    out = model.decode(z.float()).sample
    dec = F.l1_loss(out, target) + F.mse_loss(out, target)
    clean = ~bent
    encoder = F.mse_loss(model.encode(target[clean]).latents, enc[clean].float()) if clean.any() else out.new_zeros(())
    return dec, encoder


def stage_student(work: Path, data: dict, train_count: int, cfg: TinyConfig, log) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = tiny_autoencoder().train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = work / "student.ckpt"
    start = _resume(ckpt, model=model, ema=ema, opt=opt)
    bar = tqdm(range(start, cfg.steps), desc="tiny decoder", initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        idx = torch.from_numpy(np.random.default_rng((SEED, 3, step)).choice(train_count, cfg.batch, replace=False))
        dec, enc = _losses(model, *(data[k][idx] for k in ("z", "images", "enc", "bent")))
        opt.zero_grad(set_to_none=True)
        (dec + enc).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _ema_update([(model, ema)], cfg.ema_decay)
        bar.set_postfix(decoder=f"{dec.item():.4f}", encoder=f"{enc.item():.4f}")
        if (step + 1) % 25 == 0:
            log({"stage": "tiny", "step": step + 1, "decoder": dec.item(), "encoder": enc.item()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            _save_ckpt(ckpt, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step + 1)
    return ema


@torch.no_grad()
def held_out_error(model, data: dict, first: int) -> dict[str, dict[str, float]]:
    """Per-pixel error of the tiny decoder against the VAE's images on samples [first:], by kind."""
    out: dict[str, dict[str, float]] = {}
    for kind, want in (("unbent", False), ("bent", True)):
        sel = torch.nonzero(data["bent"][first:] == want).flatten() + first
        mine = ((model.decode(data["z"][sel].float()).sample.clamp(-1, 1) + 1) * 127.5).round()
        diff = (mine - data["images"][sel].float()).abs()
        mse = float((diff**2).mean())
        out[kind] = {
            "frames": len(sel),
            "mean_abs_255": round(float(diff.mean()), 3),
            "p99_abs_255": round(float(diff.flatten().kthvalue(int(0.99 * diff.numel())).values), 1),
            "psnr_db": round(10 * math.log10(255**2 / mse), 2),
        }
    return out


def stage_export(out: Path, model: torch.nn.Module, report: dict, cfg: TinyConfig, pairs: int) -> None:
    model.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(
        json.dumps(
            {"seed": SEED, "teacher": "the embedded model's AutoencoderKL", "base_latents": pairs,
             "views": cfg.views, "held_out_base_latents": HELD_OUT, "steps": cfg.steps, "batch": cfg.batch,
             "lr": cfg.lr, "ema_decay": cfg.ema_decay, "loss": "decoder L1 + MSE on pixels; encoder MSE on latents",
             "held_out_error": report},
            indent=2,
        ) + "\n"
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from bendbridge.server.model import EMBEDDED_MODEL, load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/tiny_decoder"), help="latents, checkpoints, logs")
    ap.add_argument("--pairs", type=Path, default=Path("runs/fast"), help="the fast model's teacher pairs")
    ap.add_argument("--out", type=Path, default=EMBEDDED_MODEL / "vae_tiny")
    ap.add_argument("--steps", type=int, default=TinyConfig.steps)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TinyConfig()
    cfg.steps = args.steps
    for d in (args.work, args.pairs):
        d.mkdir(parents=True, exist_ok=True)
    log = training_log(args.work)

    teacher = load_model(EMBEDDED_MODEL, "cpu", channels_last=False)
    _, base, _ = stage_teacher(args.pairs, teacher, DistilConfig())
    data = stage_latents(args.work, teacher.pipe.vae, base, cfg)
    train_count = (len(base) - HELD_OUT) * cfg.views
    model = stage_student(args.work, data, train_count, cfg, log)
    report = held_out_error(model, data, train_count)
    stage_export(args.out, model, report, cfg, len(base))
    print(f"tiny autoencoder written to {args.out}: {json.dumps(report)}")


if __name__ == "__main__":
    main()
