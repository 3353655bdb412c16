"""Train the scene classifier that judges steering and patching on the embedded model.

The classifier (:mod:`bendbridge.server.embedded.classifier`) reads foreground colour, shape and
background colour. It learns from ground-truth renders of the scene grammar, every combination
included (it is a judge, not the generator), degraded the way a small diffusion model degrades
them: a Gaussian blur of 0–2.5 px (at 128²), a colour cast of up to ±12 per channel and pixel noise.

1. ``pool``   ``--pool`` seeded scenes rendered with their labels, in chunks (resumable).
2. ``train``  cross-entropy summed over the three attributes, AdamW, warm-up and cosine decay,
              batches and degradations seeded by step, a checkpoint every 200 steps (resumable).
3. ``export`` ``config.json``, ``model.safetensors`` (fp16) and ``training.json`` with the
              accuracy on 1000 fresh scenes, clean and degraded.

``--judge concepts`` trains the concept judge of the personal-adapter experiments instead:
foreground colour, shape and background style, each with the concepts the embedded model never
saw (``scenes.NOVEL_*``), which a quarter of the scenes each take.

Usage::

    python -m bendbridge.tools.train_scene_classifier --work runs/classifier
    python -m bendbridge.tools.train_scene_classifier --judge concepts --steps 1500 --pool 8000
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bendbridge.server.embedded import scenes
from bendbridge.server.embedded.classifier import (
    CLASSIFIER_DIR,
    CONCEPT_JUDGE_DIR,
    CONCEPT_LABELS,
    LABELS,
    SceneClassifier,
    scene_labels,
)

from .train_embedded_model import _lr, _resume, _save_ckpt, training_log

__all__ = ["ClassifierConfig", "degrade", "main"]

SEED = 4721


class ClassifierConfig:
    pool = 16000
    chunk = 1000
    held_out_share = 0.15  # share of scenes drawn from the combinations the generator never saw
    steps = 2500
    batch = 128
    lr = 2e-3
    warmup = 100
    width = 64
    checkpoint_every = 200
    judge = "scenes"

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        return JUDGES[self.judge]


JUDGES = {"scenes": LABELS, "concepts": CONCEPT_LABELS}


def novel_scene(rng: np.random.Generator, s: scenes.Scene) -> scenes.Scene:
    """``s`` with each novel concept (colour, shape, style) taken with probability 1/4."""
    from dataclasses import replace

    if rng.random() < 0.25:
        c = scenes.NOVEL_COLOURS_LIST[rng.integers(len(scenes.NOVEL_COLOURS_LIST))]
        s = replace(s, fg=c) if s.bg != c else s
    if rng.random() < 0.25 and s.style != "sea":
        s = replace(s, shape=scenes.NOVEL_SHAPES[rng.integers(len(scenes.NOVEL_SHAPES))])
    if rng.random() < 0.25 and s.style in ("flat", "gradient", "checkered"):
        s = replace(s, style=scenes.NOVEL_STYLES[rng.integers(len(scenes.NOVEL_STYLES))])
    return s


def _render_chunk(args: tuple[int, int, float, str]) -> tuple[np.ndarray, np.ndarray]:
    start, n, share, judge = args
    rng = np.random.default_rng((SEED, start) if judge == "scenes" else (SEED, 7, start))
    labels_of = JUDGES[judge]
    imgs, labels = [], []
    for _ in range(n):
        s = scenes.random_scene(rng, held_out=bool(rng.random() < share))
        if judge == "concepts":
            s = novel_scene(rng, s)
        imgs.append(scenes.render_scene(s))
        lab = scene_labels(s, labels_of)
        labels.append([lab[k] for k in labels_of])
    return np.stack(imgs), np.array(labels, np.int64)


def stage_pool(
    work: Path, cfg: ClassifierConfig, start: int = 0, count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 128, 128, 3] uint8 and labels [N, 3] (fg, shape, bg), chunk files cached in ``work``."""
    from multiprocessing import Pool

    count = cfg.pool if count is None else count
    jobs = [
        (i, min(cfg.chunk, start + count - i), cfg.held_out_share, cfg.judge)
        for i in range(start, start + count, cfg.chunk)
    ]
    todo = [j for j in jobs if not (work / f"pool_{j[0]:06d}.npz").exists()]
    if todo:
        with Pool(max(1, os.cpu_count() or 1)) as pool:
            for job, (imgs, labels) in tqdm(zip(todo, pool.imap(_render_chunk, todo)), total=len(todo), desc="scenes"):
                np.savez(work / f"pool_{job[0]:06d}.npz", images=imgs, labels=labels)
    parts = [np.load(work / f"pool_{j[0]:06d}.npz") for j in jobs]
    return np.concatenate([p["images"] for p in parts]), np.concatenate([p["labels"] for p in parts])


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur (σ 0–1.25 px at 64², as 0–2.5 px at 128²), colour cast (±12/255 per channel) and noise
    (σ ≤ 6/255) per image. [N, 3, 64, 64] in [-1, 1]."""
    n = x.shape[0]
    sigma = torch.rand(n, generator=gen) * 1.25
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # [N, 7]
    y = x.reshape(1, n * 3, *x.shape[-2:])
    kk = k.repeat_interleave(3, 0)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), kk[:, None, None, :], groups=n * 3)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), kk[:, None, :, None], groups=n * 3)
    y = y.reshape_as(x)
    cast = (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1) * (24 / 255)
    noise = torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 12 / 255)
    return (y + cast + noise).clamp(-1, 1)


def downsample(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, 3] → the classifier's input size, [N, 3, 64, 64] in [-1, 1] (float16 to save memory)."""
    return torch.cat([SceneClassifier.prepare(images[s : s + 500]).half() for s in range(0, len(images), 500)])


def _batch(images: torch.Tensor, labels: np.ndarray, idx: np.ndarray, gen: torch.Generator | None):
    x = images[torch.from_numpy(idx)].float()
    if gen is not None:
        x = degrade(x, gen)
    return x, torch.from_numpy(labels[idx])


def stage_train(work: Path, images: torch.Tensor, labels: np.ndarray, cfg: ClassifierConfig, log) -> SceneClassifier:
    torch.manual_seed(SEED)
    model = SceneClassifier(cfg.width, cfg.labels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    ckpt = work / "classifier.ckpt"
    start = _resume(ckpt, model=model, opt=opt)
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="classifier", initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.steps, cfg.lr, cfg.warmup)
        idx = np.random.default_rng((SEED, 1, step)).choice(len(images), cfg.batch, replace=False)
        x, y = _batch(images, labels, idx, torch.Generator().manual_seed(SEED * 7 + step))
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], y[:, i]) for i, k in enumerate(model.labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 50 == 0:
            log({"stage": "classifier", "step": step + 1, "loss": loss.item()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            _save_ckpt(ckpt, model=model.state_dict(), opt=opt.state_dict(), step=step + 1)
    return model.eval()


@torch.no_grad()
def accuracy(model: SceneClassifier, images: torch.Tensor, labels: np.ndarray, degraded: bool) -> dict[str, float]:
    """Share of right answers per attribute on ``images`` (degraded with a fixed seed if asked)."""
    model.eval()
    gen = torch.Generator().manual_seed(SEED + 99) if degraded else None
    right = np.zeros(len(model.labels))
    for s in range(0, len(images), 200):
        idx = np.arange(s, min(s + 200, len(images)))
        x, y = _batch(images, labels, idx, gen)
        logits = model(x)
        for i, k in enumerate(model.labels):
            right[i] += int((logits[k].argmax(1) == y[:, i]).sum())
    return {k: round(float(right[i] / len(images)), 4) for i, k in enumerate(model.labels)}


def stage_export(out: Path, model: SceneClassifier, report: dict, cfg: ClassifierConfig) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(
        json.dumps({"width": cfg.width, "input_size": 64, "labels": cfg.labels}, indent=2) + "\n"
    )
    (out / "training.json").write_text(
        json.dumps(
            {"seed": SEED, "pool": cfg.pool, "held_out_share": cfg.held_out_share, "steps": cfg.steps,
             "batch": cfg.batch, "lr": cfg.lr, "judge": cfg.judge,
             "loss": "cross-entropy, summed over " + ", ".join(cfg.labels),
             "accuracy_on_1000_fresh_scenes": report},
            indent=2,
        ) + "\n"
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--judge", choices=tuple(JUDGES), default="scenes", help="which classifier (default scenes)")
    ap.add_argument("--work", type=Path, default=None, help="scene chunks, checkpoints, logs (default runs/JUDGE)")
    ap.add_argument("--out", type=Path, default=None, help="default: the model's classifier or concept_judge folder")
    ap.add_argument("--steps", type=int, default=ClassifierConfig.steps)
    ap.add_argument("--pool", type=int, default=ClassifierConfig.pool)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ClassifierConfig()
    cfg.steps, cfg.pool, cfg.judge = args.steps, args.pool, args.judge
    args.work = args.work or Path("runs") / ("classifier" if args.judge == "scenes" else "concept_judge")
    args.out = args.out or (CLASSIFIER_DIR if args.judge == "scenes" else CONCEPT_JUDGE_DIR)
    args.work.mkdir(parents=True, exist_ok=True)
    log = training_log(args.work)
    images, labels = stage_pool(args.work, cfg)
    model = stage_train(args.work, downsample(images), labels, cfg, log)
    test_images, test_labels = stage_pool(args.work, cfg, start=10**6, count=1000)
    test_images = downsample(test_images)
    report = {"clean": accuracy(model, test_images, test_labels, False),
              "degraded": accuracy(model, test_images, test_labels, True)}  # fmt: skip
    stage_export(args.out, model, report, cfg)
    print(f"{args.judge} classifier written to {args.out}: {json.dumps(report)}")


if __name__ == "__main__":
    main()
