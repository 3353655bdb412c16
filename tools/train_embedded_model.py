"""Train bendbridge's embedded text-to-image model on procedural scenes (CPU friendly, resumable).

Stages, each resumable from its checkpoint in ``--work``:

1. ``data``    render a pool of captioned scenes (:mod:`server.embedded.scenes`), cached as .npy;
2. ``vae``     an ``AutoencoderKL`` (×4 down-sampling, 4 latent channels, no mid-block attention),
               trained on random 64×64 crops (it is fully convolutional);
3. ``latents`` encode the pool once; the latent std sets the VAE ``scaling_factor``;
4. ``unet``    a ``UNet2DConditionModel`` and a small ``CLIPTextModel`` trained jointly with
               v-prediction, min-SNR weighting, 10 % caption dropout (for classifier-free
               guidance) and an EMA of the weights; a sample sheet is written as it trains;
5. ``export``  the EMA weights in fp16 as a diffusers ``StableDiffusionPipeline`` folder.

The tokenizer is the real CLIP BPE tokenizer, built from the vocabulary file that ships inside
the ``open-clip-torch`` wheel (``pip install --no-deps open-clip-torch``) and saved in
transformers' format, so loading the model never needs open_clip.

Usage::

    python -m bendbridge.tools.train_embedded_model --work runs/embedded --out server/embedded/model
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bendbridge.server.embedded import scenes

__all__ = ["main", "build_tokenizer", "TrainConfig"]

SEED = 1234
MAX_TOKENS = 32
# sampling defaults written beside the weights (bendbridge.json), chosen by looking at sheets
DEFAULT_STEPS = 6
DEFAULT_GUIDANCE = 4.0


class TrainConfig:
    pool_size = 24_000
    vae_steps = 2000
    vae_batch = 16
    vae_lr = 1e-3
    unet_steps = 3600
    unet_batch = 32
    unet_lr = 6e-4
    warmup = 200
    ema_decay = 0.999
    caption_dropout = 0.1
    min_snr_gamma = 5.0
    sample_every = 600
    checkpoint_every = 200


# ----------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in cs)))


def build_tokenizer(out_dir: Path):
    """Write CLIP's BPE tokenizer (vocab.json + merges.txt) to ``out_dir`` and load it."""
    import importlib.util

    from transformers import CLIPTokenizer

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("the CLIP vocabulary comes from open-clip-torch: pip install --no-deps open-clip-torch")
    bpe = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    tok = CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"), model_max_length=MAX_TOKENS)
    tok.save_pretrained(out_dir)
    return CLIPTokenizer.from_pretrained(out_dir)


# ----------------------------------------------------------------------------- models
def make_vae(groups: int = 4):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=scenes.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=groups,
        mid_block_add_attention=False,
    )


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=128,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(text_config)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=scenes.IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=4,
    )


def make_schedulers():
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        clip_sample=False,
    )
    return DDPMScheduler(**common), DDIMScheduler(
        **common, timestep_spacing="trailing", set_alpha_to_one=False, steps_offset=1
    )


# ----------------------------------------------------------------------------- stages
def _render_chunk(args: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    start, n = args
    rng = np.random.default_rng((SEED, start))
    imgs, caps = [], []
    for _ in range(n):
        s = scenes.random_scene(rng)
        imgs.append(scenes.render_scene(s))
        caps.append(scenes.caption(s))
    return np.stack(imgs), caps


def stage_data(work: Path, train: TrainConfig) -> tuple[np.ndarray, list[str]]:
    img_path, cap_path = work / "pool_images.npy", work / "pool_captions.json"
    if img_path.exists() and cap_path.exists():
        return np.load(img_path, mmap_mode="r"), json.loads(cap_path.read_text())
    from multiprocessing import Pool

    chunk = 500
    jobs = [(i, min(chunk, train.pool_size - i)) for i in range(0, train.pool_size, chunk)]
    imgs, caps = [], []
    with Pool(max(1, os.cpu_count() or 1)) as pool:
        for a, c in tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc="data"):
            imgs.append(a)
            caps.extend(c)
    images = np.concatenate(imgs)
    np.save(img_path, images)
    cap_path.write_text(json.dumps(caps))
    return images, caps


def _to_tensor(images: np.ndarray) -> torch.Tensor:  # uint8 [B,H,W,3] -> [-1,1] [B,3,H,W]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _save_ckpt(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def training_log(work: Path) -> Callable[[dict], None]:
    """A function appending each record, with the wall time (s), as one line of ``work/log.jsonl``."""
    logf = open(work / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - open while training runs

    def log(record: dict) -> None:
        logf.write(json.dumps({"time": round(time.time(), 1), **record}) + "\n")
        logf.flush()

    return log


def _resume(path: Path, **holders) -> int:
    """Load each holder's state (a model, its EMA, the optimiser; by key) from the checkpoint at
    ``path``; returns the step it had reached, 0 when there is none."""
    if not path.exists():
        return 0
    state = torch.load(path)
    for key, holder in holders.items():
        holder.load_state_dict(state[key])
    return int(state["step"])


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def stage_vae(work: Path, train: TrainConfig, images: np.ndarray, log) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    final = work / "vae"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final)
    torch.manual_seed(SEED)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=train.vae_lr, weight_decay=0.0)
    ckpt, start = work / "vae.ckpt", 0
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=True)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = int(st["step"])
    vae.train()
    bar = tqdm(range(start, train.vae_steps), initial=start, total=train.vae_steps, desc="vae")
    for step in bar:
        rng = np.random.default_rng((SEED, 1, step))
        idx = np.sort(rng.choice(len(images), train.vae_batch, replace=False))
        y0, x0 = rng.integers(0, scenes.IMAGE_SIZE - 64 + 1, 2) // 4 * 4
        x = _to_tensor(images[idx][:, y0 : y0 + 64, x0 : x0 + 64])
        for g in opt.param_groups:
            g["lr"] = _lr(step, train.vae_steps, train.vae_lr, 100)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=torch.Generator().manual_seed(step))).sample
        l1, mse = (rec - x).abs().mean(), F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.3f}")
        if step % 25 == 0:
            log({"stage": "vae", "step": step, "l1": l1.item(), "mse": mse.item(), "kl": kl.item()})
        if (step + 1) % train.checkpoint_every == 0:
            _save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1)
    vae.eval()
    with torch.no_grad():  # reconstruction sheet: originals above, reconstructions below
        from PIL import Image

        x = _to_tensor(images[:8])
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        both = torch.cat([x, rec]).clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
        rows = [np.concatenate(list(both[:8]), 1), np.concatenate(list(both[8:]), 1)]
        Image.fromarray(np.concatenate(rows, 0)).save(work / "vae_reconstruction.png")
    vae.save_pretrained(final)
    return vae


@torch.no_grad()
def stage_latents(work: Path, images: np.ndarray, vae) -> tuple[np.ndarray, float]:
    path = work / "pool_latents.npy"
    if not path.exists():
        out = []
        for i in tqdm(range(0, len(images), 64), desc="latents"):
            out.append(vae.encode(_to_tensor(images[i : i + 64])).latent_dist.mean.numpy().astype(np.float16))
        np.save(path, np.concatenate(out))
    lat = np.load(path)
    return lat, float(1.0 / lat.astype(np.float32).std())


def _pipeline(vae, text_encoder, tokenizer, unet, scheduler):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


SHEET_PROMPTS = [
    "a red circle on a blue background",
    "a yellow star on a purple background",
    "a green square on a white gradient background",
    "a blue triangle on an orange checkered background",
    "a yellow sun over a purple sea",
    "a white ring in a starry night sky",
    "pink stripes on a green background",
    "a small black diamond in the top left on a yellow background",
]


@torch.no_grad()
def write_sample_sheet(pipe, path: Path, steps: int = 6, guidance: float = 4.0) -> None:
    from PIL import Image

    out = pipe(
        SHEET_PROMPTS,
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        height=scenes.IMAGE_SIZE,
        width=scenes.IMAGE_SIZE,
    ).images
    tiles = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(np.concatenate(list(tiles), axis=1)).save(path)


def _unet_batch(
    step: int, latents: torch.Tensor, ids: torch.Tensor, empty_ids: torch.Tensor, train: TrainConfig, ddpm, vae
):
    """Step ``step``'s training batch, drawn from seeds fixed by the step (so a resumed run draws the
    same): noisy latents x_t, timesteps t, caption tokens (some dropped for guidance), v-targets."""
    rng = np.random.default_rng((SEED, 2, step))
    g = torch.Generator().manual_seed(SEED * 100_000 + step)
    idx = torch.from_numpy(rng.choice(len(latents), train.unet_batch, replace=False))
    x0 = latents[idx].float() * vae.config.scaling_factor
    tok = ids[idx].clone()
    tok[torch.from_numpy(rng.random(train.unet_batch) < train.caption_dropout)] = empty_ids
    t = torch.randint(0, ddpm.config.num_train_timesteps, (train.unet_batch,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return ddpm.add_noise(x0, noise, t), t, tok, ddpm.get_velocity(x0, noise, t)


@torch.no_grad()
def _ema_update(pairs, decay: float) -> None:
    for src, dst in pairs:
        for p, e in zip(src.parameters(), dst.parameters()):
            e.lerp_(p, 1 - decay)


def stage_unet(work: Path, train: TrainConfig, latents: np.ndarray, captions: list[str], vae, tokenizer, log):
    ddpm, ddim = make_schedulers()
    torch.manual_seed(SEED)
    unet, text = make_unet(), make_text_encoder()
    ema_u, ema_t = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
    models = {"unet": unet, "text": text, "ema_u": ema_u, "ema_t": ema_t}
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=train.unet_lr, weight_decay=0.01)
    ckpt, start = work / "unet.ckpt", 0
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=True)
        for k, m in models.items():
            m.load_state_dict(st[k])
        opt.load_state_dict(st["opt"])
        start = int(st["step"])
    if start >= train.unet_steps:
        return ema_u, ema_t, ddim
    ids = tokenizer(
        captions + [""], padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    snr = ddpm.alphas_cumprod / (1 - ddpm.alphas_cumprod)
    weight = torch.clamp(snr, max=train.min_snr_gamma) / (snr + 1)  # min-SNR for v-prediction
    lat_all = torch.from_numpy(latents)
    (work / "samples").mkdir(exist_ok=True)
    unet.train()
    text.train()
    bar = tqdm(range(start, train.unet_steps), initial=start, total=train.unet_steps, desc="unet")
    for step in bar:
        xt, t, tok, target = _unet_batch(step, lat_all, ids[:-1], ids[-1], train, ddpm, vae)
        for grp in opt.param_groups:
            grp["lr"] = _lr(step, train.unet_steps, train.unet_lr, train.warmup)
        pred = unet(xt, t, text(tok).last_hidden_state).sample
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _ema_update(((unet, ema_u), (text, ema_t)), min(train.ema_decay, (1 + step) / (10 + step)))
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 25 == 0:
            log({"stage": "unet", "step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"]})
        if (step + 1) % train.checkpoint_every == 0 or step + 1 == train.unet_steps:
            _save_ckpt(ckpt, **{k: m.state_dict() for k, m in models.items()}, opt=opt.state_dict(), step=step + 1)
        if (step + 1) % train.sample_every == 0 or step + 1 == train.unet_steps:
            sheet = work / "samples" / f"step_{step + 1:05d}.png"
            write_sample_sheet(_pipeline(vae, ema_t, tokenizer, ema_u, ddim), sheet)
    return ema_u, ema_t, ddim


def stage_export(out: Path, vae, text, tokenizer, unet, scheduler, train: TrainConfig, tokenizer_dir: Path) -> None:
    pipe = _pipeline(copy.deepcopy(vae), copy.deepcopy(text), tokenizer, copy.deepcopy(unet), scheduler)
    pipe.to(torch.float16)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):  # recent transformers save only tokenizer.json; keep the BPE files
        shutil.copyfile(tokenizer_dir / name, out / "tokenizer" / name)
    (out / "bendbridge.json").write_text(
        json.dumps({"steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "size": scenes.IMAGE_SIZE}, indent=2)
    )
    (out / "training.json").write_text(
        json.dumps(
            {
                "seed": SEED,
                "pool_size": train.pool_size,
                "vae_steps": train.vae_steps,
                "unet_steps": train.unet_steps,
                "unet_batch": train.unet_batch,
                "unet_lr": train.unet_lr,
                "ema_decay": train.ema_decay,
                "prediction_type": "v_prediction",
                "image_size": scenes.IMAGE_SIZE,
            },
            indent=2,
        )
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/embedded"), help="checkpoints, logs and sample sheets")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "server" / "embedded" / "model")
    ap.add_argument("--unet-steps", type=int, default=TrainConfig.unet_steps)
    ap.add_argument("--vae-steps", type=int, default=TrainConfig.vae_steps)
    ap.add_argument("--pool-size", type=int, default=TrainConfig.pool_size)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    train = TrainConfig()
    train.unet_steps, train.vae_steps, train.pool_size = args.unet_steps, args.vae_steps, args.pool_size
    torch.set_num_threads(args.threads)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = training_log(work)

    images, captions = stage_data(work, train)
    tokenizer = build_tokenizer(work / "tokenizer")
    vae = stage_vae(work, train, images, log)
    latents, scale = stage_latents(work, images, vae)
    vae.register_to_config(scaling_factor=scale)
    log({"stage": "latents", "scaling_factor": scale})
    unet, text, ddim = stage_unet(work, train, latents, captions, vae, tokenizer, log)
    stage_export(args.out, vae, text, tokenizer, unet, ddim, train, work / "tokenizer")
    print(f"exported to {args.out}")


if __name__ == "__main__":
    main()
