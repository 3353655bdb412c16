"""Distil the embedded model into bendbridge's *fast* model: two denoising steps, no guidance.

Guidance and step distillation in one regression, in the manner of knowledge distillation of
diffusion samplers (Luhman & Luhman 2021) and the guidance distillation of Meng et al. (2023):

1. ``teacher``  the embedded model samples ``--pairs`` training-distribution captions from seeded
                noise with its own defaults (6 DDIM steps, classifier-free guidance 4): each pair
                is (noise z_T, caption, the teacher's final latent x0). Resumable by chunk.
2. ``student``  a copy of the teacher's U-Net learns, without guidance, to predict x0 at the two
                timesteps of a 2-step trailing DDIM schedule (999 and 499): at 999 from z_T itself,
                at 499 from the point DDIM would reach with the teacher's x0,
                x_499 = √ᾱ₄₉₉·x0 + √(1−ᾱ₄₉₉)·ε with ε = (z_T − √ᾱ₉₉₉·x0)/√(1−ᾱ₉₉₉).
                So the 2-step DDIM sampler walks the teacher's own trajectory, and one step (at
                999) already gives a usable image. Loss: MSE on x0 through the v-parameterisation;
                AdamW with warm-up and cosine decay, an EMA of the weights, checkpoints every 100
                steps (resumable, seeded by step), a sample sheet at the end.
3. ``export``   the EMA U-Net in fp16 as a diffusers folder whose text encoder, tokenizer and VAE
                are links to the embedded model's (they are unchanged), with ``bendbridge.json``
                saying 2 steps, guidance 1.

Usage::

    python -m bendbridge.tools.train_fast_model --work runs/fast --out server/embedded/fast
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bendbridge.server.embedded import scenes

from .train_embedded_model import _ema_update, _lr, _resume, _save_ckpt, training_log

__all__ = ["DistilConfig", "main"]

SEED = 4321
STUDENT_STEPS = 2
SHARED = ("text_encoder", "tokenizer", "vae")  # taken from the embedded model as they are


class DistilConfig:
    pairs = 2048
    teacher_chunk = 64
    steps = 1200
    batch = 32
    lr = 2e-4
    warmup = 100
    ema_decay = 0.995


def _encode(model, captions: list[str]) -> torch.Tensor:
    tok = model.pipe.tokenizer(
        captions, padding="max_length", max_length=model.pipe.tokenizer.model_max_length, return_tensors="pt"
    )
    with torch.no_grad():
        return model.pipe.text_encoder(tok.input_ids)[0]


@torch.no_grad()
def _teacher_chunk(model, start: int, n: int) -> dict:
    """Pairs [start, start + n): captions, noise and the teacher's x0 (6 steps, guidance 4)."""
    rng = np.random.default_rng((SEED, start))
    captions = [scenes.caption(scenes.random_scene(rng)) for _ in range(n)]
    unet, sched = model.pipe.unet, copy.deepcopy(model.pipe.scheduler)
    side = model.defaults.size // 4
    z = torch.randn(n, unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(SEED + start))
    cond, uncond = _encode(model, captions), _encode(model, [""]).expand(n, -1, -1)
    sched.set_timesteps(model.defaults.steps)
    x = z * sched.init_noise_sigma
    g = model.defaults.guidance
    for t in sched.timesteps:
        v = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        vu, vc = v.chunk(2)
        x = sched.step(vu + g * (vc - vu), t, x).prev_sample
    return {"captions": captions, "z": z.half(), "x0": x.half()}


def stage_teacher(work: Path, model, cfg: DistilConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The teacher's pairs, in chunks saved as they are made (an interrupted run goes on)."""
    zs, x0s, caps = [], [], []
    for start in tqdm(range(0, cfg.pairs, cfg.teacher_chunk), desc="teacher"):
        path = work / f"teacher_{start:06d}.pt"
        if not path.exists():
            _save_ckpt(path, **_teacher_chunk(model, start, min(cfg.teacher_chunk, cfg.pairs - start)))
        chunk = torch.load(path)
        zs.append(chunk["z"])
        x0s.append(chunk["x0"])
        caps.extend(chunk["captions"])
    return torch.cat(zs).float(), torch.cat(x0s).float(), caps


def _alphas(sched, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """√ᾱ_t and √(1−ᾱ_t), shaped [B, 1, 1, 1]."""
    a = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    return a.sqrt(), (1 - a).sqrt()


def _batch(step: int, z, x0, emb, sched, cfg: DistilConfig):
    """Step ``step``'s batch (seeded by the step): inputs x_t at the two student timesteps, t, text, x0."""
    rng = np.random.default_rng((SEED, 7, step))
    idx = torch.from_numpy(rng.choice(len(z), cfg.batch, replace=False))
    sched.set_timesteps(STUDENT_STEPS)
    t_hi, t_lo = (int(t) for t in sched.timesteps)
    t = torch.tensor([t_hi, t_lo] * (cfg.batch // 2))
    zt, target = z[idx], x0[idx]
    a_hi, s_hi = _alphas(sched, torch.full((cfg.batch,), t_hi))
    eps = (zt - a_hi * target) / s_hi  # the noise DDIM's trajectory from z_T to x0 implies
    a_lo, s_lo = _alphas(sched, torch.full((cfg.batch,), t_lo))
    x_lo = a_lo * target + s_lo * eps
    x_t = torch.where((t == t_hi).view(-1, 1, 1, 1), zt, x_lo)
    return x_t, t, emb[idx], target


def stage_student(work: Path, model, data, cfg: DistilConfig, log) -> torch.nn.Module:
    z, x0, captions = data
    emb = torch.cat([_encode(model, captions[i : i + 256]) for i in range(0, len(captions), 256)])
    sched = copy.deepcopy(model.pipe.scheduler)
    student = copy.deepcopy(model.pipe.unet).float().to(memory_format=torch.contiguous_format)
    student.train().requires_grad_(True)
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    ckpt = work / "student.ckpt"
    start = _resume(ckpt, student=student, ema=ema, opt=opt)
    bar = tqdm(range(start, cfg.steps), desc="student", initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        x_t, t, enc, target = _batch(step, z, x0, emb, sched, cfg)
        a, s = _alphas(sched, t)
        v = student(x_t, t, encoder_hidden_states=enc).sample
        loss = F.mse_loss(a * x_t - s * v, target)  # x0 from the v-prediction
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        _ema_update([(student, ema)], cfg.ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 25 == 0:
            log({"stage": "student", "step": step + 1, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]})
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            _save_ckpt(ckpt, student=student.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step + 1)
    return ema


def stage_export(out: Path, base: Path, unet: torch.nn.Module, cfg: DistilConfig) -> None:
    """The fast model folder: its own U-Net and scheduler, the embedded model's other parts linked."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy.deepcopy(unet).half().save_pretrained(out / "unet", safe_serialization=True)
    shutil.copytree(base / "scheduler", out / "scheduler")
    shutil.copyfile(base / "model_index.json", out / "model_index.json")
    for name in SHARED:
        (out / name).symlink_to(os.path.relpath(base / name, out), target_is_directory=True)
    (out / "bendbridge.json").write_text(
        json.dumps(
            {"steps": STUDENT_STEPS, "guidance": 1.0, "size": scenes.IMAGE_SIZE, "shares": list(SHARED)}, indent=2
        )
        + "\n"
    )
    (out / "training.json").write_text(
        json.dumps(
            {"seed": SEED, "teacher": "embedded model, 6 DDIM steps, guidance 4", "pairs": cfg.pairs,
             "steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr, "ema_decay": cfg.ema_decay,
             "student_timesteps": [999, 499], "loss": "MSE on x0 through v-prediction"},
            indent=2,
        ) + "\n"
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from bendbridge.server.model import EMBEDDED_MODEL, load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/fast"), help="teacher pairs, checkpoints, logs")
    ap.add_argument("--out", type=Path, default=EMBEDDED_MODEL.parent / "fast")
    ap.add_argument("--pairs", type=int, default=DistilConfig.pairs)
    ap.add_argument("--steps", type=int, default=DistilConfig.steps)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    cfg = DistilConfig()
    cfg.pairs, cfg.steps = args.pairs, args.steps
    args.work.mkdir(parents=True, exist_ok=True)
    log = training_log(args.work)

    teacher = load_model(EMBEDDED_MODEL, "cpu", channels_last=False)
    data = stage_teacher(args.work, teacher, cfg)
    student = stage_student(args.work, teacher, data, cfg, log)
    stage_export(args.out, EMBEDDED_MODEL, student, cfg)
    print(f"fast model written to {args.out}")


if __name__ == "__main__":
    main()
