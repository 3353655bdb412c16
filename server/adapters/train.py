"""Training a low-rank adapter on the user's images (``bendbridge adapt``), seeded and resumable.

The base model stays frozen. Each attention projection of the U-Net (``to_q``, ``to_k``,
``to_v``, ``to_out.0``) gets ``A`` ``[r, in]`` (Kaiming-uniform, as peft initialises it) and
``B`` ``[out, r]`` (zeros, so training starts at the base model), applied through the same
per-row update the renderer uses (:func:`~.lora.lora_delta`). The loss is the model's own
denoising objective (ε or v, from its scheduler) on the images' latents, with min-SNR-5
weighting (Hang et al., ICCV 2023). Images: PNG, JPEG or WebP of any size, resized so the
shorter side fits the model and centre-cropped; a ``NAME.txt`` beside an image is its caption,
otherwise ``caption`` with ``{token}`` replaced.

In continual mode three eighths of each batch can replay the earlier concepts (:mod:`.replay`).

Every batch is drawn from seeds fixed by (seed, step), so a run resumed from its checkpoint
(``work/adapter.ckpt``, written every ``checkpoint_every`` steps) ends with the same adapter as
an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.server.bending.layers import module_hooks

from ..render.pictures import IMAGE_SUFFIXES, read_picture
from .lora import LoraAdapter, linear_modules
from .replay import replay_images, stage_hooks

__all__ = [
    "AdaptRequest",
    "TrainingImages",
    "TrainSetup",
    "Objective",
    "load_images",
    "new_layers",
    "train_adapter",
    "adapter_hooks",
    "prior_images",
    "without_token",
    "IMAGE_SUFFIXES",
]

MIN_SNR_GAMMA = 5.0


@dataclass(frozen=True)
class AdaptRequest:
    """What ``bendbridge adapt`` asks for (units: optimiser steps, images per step)."""

    token: str
    rank: int = 8
    steps: int = 800
    lr: float = 3e-3
    batch: int = 8
    caption: str = "a {token}"
    seed: int = 0
    checkpoint_every: int = 100
    prior: int = 48  # prior-preservation images (0: none); then half of each batch is theirs
    replay: int = 0  # with earlier adapters: renders of each of their concepts, distilled (see .replay)

    def check(self) -> None:
        if not self.token.strip() or any(c.isspace() for c in self.token.strip()):
            raise BendbridgeError("--token", f"{self.token!r}: expected one word")
        for name, lo, hi in (
            ("rank", 1, 256),
            ("steps", 1, 1_000_000),
            ("batch", 1, 256),
            ("prior", 0, 10_000),
            ("replay", 0, 10_000),
        ):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise BendbridgeError(f"--{name}", f"{v} is out of range [{lo}, {hi}]")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise BendbridgeError("--lr", f"{self.lr} is out of range (0, 1]")
        if "{token}" not in self.caption:
            raise BendbridgeError("--caption", f"{self.caption!r} must contain {{token}}")
        if (self.prior or self.replay) and self.batch < 2:
            raise BendbridgeError("--batch", "with prior preservation or replay a batch needs at least 2 images")


@dataclass
class TrainingImages:
    """Images ``[N, H, W, 3]`` uint8 at the model's size, their captions and file names."""

    pixels: np.ndarray
    captions: list[str]
    names: list[str]


def load_images(folder: Path, size: tuple[int, int], caption: str, token: str) -> TrainingImages:
    """Every image in ``folder`` (sorted by name), resized and centre-cropped to ``size`` (W, H)."""
    if not folder.is_dir():
        raise BendbridgeError("--images", f"no such folder {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BendbridgeError("--images", f"{str(folder)!r} holds no {', '.join(IMAGE_SUFFIXES)} images")
    pixels, captions = [], []
    for p in files:
        pixels.append(read_picture(p, size, "--images"))
        side = p.with_suffix(".txt")
        text = side.read_text(encoding="utf-8").strip() if side.is_file() else ""
        captions.append(text or caption.replace("{token}", token))
    return TrainingImages(np.stack(pixels), captions, [p.name for p in files])


def new_layers(unet: torch.nn.Module, rank: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``A`` [r, in] (Kaiming-uniform) and ``B`` [out, r] (zeros) for every attention projection."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    layers = {}
    for name in linear_modules(unet):
        lin = modules[name]
        a = torch.empty(rank, lin.in_features)
        bound = 1 / math.sqrt(lin.in_features)  # kaiming_uniform_(a=√5), as torch and peft initialise
        a.uniform_(-bound, bound, generator=g)
        layers[name] = (a, torch.zeros(lin.out_features, rank))
    return layers


@torch.no_grad()
def _encode(model, images: TrainingImages) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``[N, C, h, w]`` (scaled) and caption embeddings ``[N, T, D]``."""
    pipe = model.pipe
    x = torch.from_numpy(images.pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    vae = pipe.vae
    lat = torch.cat([vae.encode(c.to(vae.device, vae.dtype)).latent_dist.mean for c in x.split(16)])
    ids = pipe.tokenizer(
        images.captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    emb = pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]
    return (lat * vae.config.scaling_factor).float().cpu(), emb.float().cpu()


Layers = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainSetup:
    """What a training run starts from: the trainable layers (``A``, ``B`` per module), a function
    run after every optimiser step (e.g. keeping ``A`` orthogonal to earlier adapters) and the
    earlier stages' metadata. For replay (:mod:`.replay`): ``frozen`` layers applied at weight 1
    while training and not trained (the earlier stages), ``teacher`` layers the teacher model uses
    in place of the trained ones (the teacher is base + frozen + teacher), and the earlier
    concepts' captions to replay."""

    layers: Layers
    after_step: Callable[[], None] | None = None
    stages: list[dict] = field(default_factory=list)
    frozen: Layers = field(default_factory=dict)
    teacher: Layers = field(default_factory=dict)
    replay_captions: list[list[str]] = field(default_factory=list)  # per earlier stage


class Objective:
    """The model's denoising loss, batch by batch seeded by (seed, step): on the concept's images,
    and with prior preservation (Ruiz et al., "DreamBooth", CVPR 2023) half of each batch on the
    base model's own renders of the same captions without the token, so that the adapter changes
    what the token means and leaves the rest of the model as it was.

    With ``replay`` images and a ``teacher`` (a context in which the U-Net is the model after the
    earlier stages), three quarters of that half go to the earlier concepts' renders, whose target
    is the teacher's own prediction on the same noisy latent, unweighted (distillation: Li & Hoiem,
    "Learning without Forgetting", 2016; replay of generated samples: Shin et al., "Continual
    Learning with Deep Generative Replay", NeurIPS 2017)."""

    def __init__(
        self,
        model,
        images: TrainingImages,
        request: AdaptRequest,
        prior: TrainingImages | None = None,
        replay: TrainingImages | None = None,
    ):
        from diffusers import DDPMScheduler

        self.unet, self.request = model.pipe.unet, request
        self.ddpm = DDPMScheduler.from_config(model.pipe.scheduler.config)
        self.lat, self.emb = _encode(model, images)
        self.prior = _encode(model, prior) if prior is not None and len(prior.captions) else None
        self.replay = _encode(model, replay) if replay is not None and len(replay.captions) else None
        self.teacher: Callable[[], AbstractContextManager] | None = None
        snr = self.ddpm.alphas_cumprod / (1 - self.ddpm.alphas_cumprod)
        self.v_pred = self.ddpm.config.prediction_type == "v_prediction"
        self.weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / (snr + 1 if self.v_pred else snr)

    def rows(self) -> tuple[int, int, int]:
        """Rows of a batch: the concept's (half), the prior's, the replayed earlier concepts'
        (with both, three quarters of the other half, e.g. 4, 1, 3 of 8)."""
        b = self.request.batch
        replay = self.replay is not None and self.teacher is not None
        other = b // 2 if (self.prior is not None or replay) else 0
        if replay and self.prior is not None:
            return b - other, other // 4, other - other // 4
        return (b - other, 0, other) if replay else (b - other, other, 0)

    def loss(self, step: int) -> torch.Tensor:
        r, dev = self.request, self.unet.device
        g = torch.Generator().manual_seed(r.seed * 1_000_003 + step)
        n, n_prior, n_replay = self.rows()
        idx = torch.randint(0, len(self.lat), (n,), generator=g)
        x0, emb = self.lat[idx], self.emb[idx]
        for part, k in ((self.prior, n_prior), (self.replay, n_replay)):
            if part is not None and k:
                pidx = torch.randint(0, len(part[0]), (k,), generator=g)
                x0, emb = torch.cat([x0, part[0][pidx]]), torch.cat([emb, part[1][pidx]])
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.ddpm.config.num_train_timesteps, (r.batch,), generator=g)
        target = self.ddpm.get_velocity(x0, noise, t) if self.v_pred else noise
        noisy = self.ddpm.add_noise(x0, noise, t)
        pred = self.unet(noisy.to(dev), t.to(dev), emb.to(dev)).sample
        weight = self.weight[t]
        if n_replay:  # plain MSE to the teacher: fine detail is drawn at low noise, which min-SNR mutes
            with self.teacher(), torch.no_grad():
                taught = self.unet(noisy[-n_replay:].to(dev), t[-n_replay:].to(dev), emb[-n_replay:].to(dev)).sample
            target = torch.cat([target[:-n_replay], taught.float().cpu()])
            weight = torch.cat([weight[:-n_replay], torch.ones(n_replay)])
        return (((pred.float().cpu() - target) ** 2).mean(dim=(1, 2, 3)) * weight).mean()


def without_token(caption: str, token: str) -> str:
    """``caption`` with the word ``token`` taken out ("a navy star" → "a star")."""
    import re

    text = re.sub(rf"\b{re.escape(token)}\b", " ", caption)
    return re.sub(r"\s+", " ", text).strip()


def prior_images(model, images: TrainingImages, request: AdaptRequest, work: Path) -> TrainingImages | None:
    """``request.prior`` renders of the base model (no adapter) from the training captions without
    the token, seeded; kept in ``work/prior.npz`` so a resumed run trains on the same."""
    if not request.prior:
        return None
    captions = [without_token(c, request.token) for c in images.captions]
    captions = [captions[i % len(captions)] for i in range(request.prior)]
    return render_captions(model, captions, images.pixels.shape[1:3], request.seed, work / "prior.npz", "prior")


def render_captions(
    model, captions: list[str], size: tuple[int, int], seed: int, cache: Path, name: str
) -> TrainingImages:
    """One render of each of ``captions`` (``size`` = (H, W); the i-th from seed ``seed``·10⁴ + i)
    by the U-Net as it stands (hooks included), kept in ``cache`` so a resumed run trains on the same."""
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    names = [f"{name}_{i:04d}" for i in range(len(captions))]
    if cache.exists():
        data = np.load(cache)
        if list(data["captions"]) == captions:
            return TrainingImages(data["pixels"], captions, names)
    distinct = sorted(set(captions))
    h, w = size
    pixels = np.zeros((len(captions), h, w, 3), np.uint8)
    for g in range(0, len(distinct), 64):
        group = tuple(distinct[g : g + 64])
        r = Renderer(model, RenderConfig(RenderSettings(group, width=w, height=h), share_prefix=False))
        rows = [i for i, c in enumerate(captions) if c in group]
        frames = [FrameSpec.of_prompt(group.index(captions[i]), len(group), seed=seed * 10_000 + i) for i in rows]
        for i, res in zip(rows, r.render(frames)):
            pixels[i] = res.image
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, pixels=pixels, captions=np.array(captions))
    return TrainingImages(pixels, captions, names)


def adapter_hooks(adapters: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """Hooks adding each layer's update at weight 1 to every row (training: no per-row weights)."""
    return stage_hooks(adapters, TrainSetup({}))[0]


def train_adapter(
    model,
    images: TrainingImages,
    request: AdaptRequest,
    work: Path,
    *,
    setup: TrainSetup | None = None,
    progress: Callable[[int, float], None] = lambda step, loss: None,
) -> LoraAdapter:
    """Train an adapter of ``request.rank`` on ``images`` for ``model`` (a LoadedModel, fp32),
    from ``setup`` (default: new layers on every attention projection); resumes from
    ``work/adapter.ckpt`` when it is there. ``progress(step, loss)`` after each step."""
    from bendbridge.server.steering.files import unet_identity

    request.check()
    unet = model.pipe.unet
    unet.requires_grad_(False)
    setup = setup or TrainSetup(new_layers(unet, request.rank, request.seed))
    layers = {
        m: (torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone()))
        for m, (a, b) in setup.layers.items()
    }
    prior = prior_images(model, images, request, work)
    replay = replay_images(model, setup, images.pixels.shape[1:3], request, work)
    objective = Objective(model, images, request, prior, replay)
    params = [p for pair in layers.values() for p in pair]
    opt = torch.optim.AdamW(params, lr=request.lr, weight_decay=0.0)
    start = _resume(work / "adapter.ckpt", layers, opt)
    hooks, objective.teacher = stage_hooks(layers, setup)
    with module_hooks(unet, hooks, _missing):
        for step in range(start, request.steps):
            loss = objective.loss(step)
            for grp in opt.param_groups:
                grp["lr"] = _lr(step, request.steps, request.lr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if setup.after_step is not None:
                setup.after_step(layers)
            progress(step + 1, loss.item())
            if (step + 1) % request.checkpoint_every == 0 or step + 1 == request.steps:
                _checkpoint(work / "adapter.ckpt", layers, opt, step + 1)
    stage = {**asdict(request), "images": images.names, "captions": sorted(set(images.captions))}
    meta = {
        "model": model.base_name,
        "model_id": unet_identity(unet),
        "token": request.token,
        "training": stage,
        "stages": [
            *setup.stages,
            {"token": request.token, "layers": len(layers), "rank": request.rank, "captions": stage["captions"]},
        ],
    }
    return LoraAdapter({m: (a.detach().clone(), b.detach().clone()) for m, (a, b) in layers.items()}, meta)


def _missing(i: int, name: str) -> Exception:
    return BendbridgeError("--model", f"module {name!r} is not in this U-Net")


def _lr(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to a tenth."""
    warm = max(1, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _checkpoint(path: Path, layers, opt, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "opt": opt.state_dict(),
        "a": {m: a.detach() for m, (a, _) in layers.items()},
        "b": {m: b.detach() for m, (_, b) in layers.items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path: Path, layers, opt) -> int:
    """Load the adapter and optimiser from ``path``; the step it had reached (0 when absent)."""
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    if set(state["a"]) != set(layers) or any(state["a"][m].shape != a.shape for m, (a, _) in layers.items()):
        raise BendbridgeError("--work", f"{path} is a checkpoint of another adapter (other model or rank)")
    with torch.no_grad():
        for m, (a, b) in layers.items():
            a.copy_(state["a"][m])
            b.copy_(state["b"][m])
    opt.load_state_dict(state["opt"])
    return int(state["step"])
