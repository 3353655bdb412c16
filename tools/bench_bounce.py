"""Bounce speed against a naive per-frame loop, measured side by side in one run.

Both render the same frames of the demo song with the same plan, hooks and per-frame
parameters:

- naive: ``pipe(prompt, latents=…, callback_on_step_end=…)`` once per frame — the diffusers
  pipeline encodes the prompt every call and denoises one frame at a time; latent bends are
  applied in the step callback and module hooks read the frame's parameters;
- bendbridge: the bounce renderer — cached text embeddings, frames batched (``--batch``), each
  with its own parameters in one denoising pass, the steps before the first bend denoised
  once for frames that share seed and prompt (none with the demo's config, whose module bends
  act from step 0; ``--config tools/bench_configs/late_bends.toml`` bends from step 3), and in
  the first bent step the U-Net blocks before the bent one run once per batch.

Rendering is timed (not file I/O), interleaved batch by batch (ABBA) and repeated; the script also checks that both
paths give the same images (within a few uint8 levels of batched-kernel rounding).

    bendbridge bench bounce [--frames 32] [--batch 8] [--model DIR] [--config BEND.toml]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["main"]


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="bend config driven by the demo song "
        "(default: the demo's; tools/bench_configs/late_bends.toml bends from step 3)",
    )
    return ap.parse_args(argv)


def _naive(model, r, seed: int) -> Callable[[list], list[np.ndarray]]:
    """The baseline: the diffusers pipeline once per frame, with the renderer's hooks and latent bends."""
    from bendbridge.server.bending import BendEngine, install_hooks

    pipe, prompt = model.pipe, r.prompts[0]
    engine = BendEngine(r.bound, r.device)
    guided = r.guidance > 1.0
    shape = (pipe.unet.config.in_channels, r.height // r.vae_factor, r.width // r.vae_factor)

    def render(chunk: list) -> list[np.ndarray]:
        out = []
        with install_hooks(pipe.unet, engine):
            for p in chunk:
                engine.set_frames([p], guided=guided)
                g = torch.Generator().manual_seed(seed)
                lat = engine.bend_latent(
                    torch.randn(shape, generator=g).unsqueeze(0).to(r.device, r.dtype), 0, "frames"
                )

                def cb(_pipe, i, _t, kw):
                    engine.step = i + 1
                    return {"latents": engine.bend_latent(kw["latents"], i + 1, "frames")}

                img = pipe(
                    prompt,
                    num_inference_steps=r.steps,
                    guidance_scale=r.guidance,
                    latents=lat,
                    height=r.height,
                    width=r.width,
                    output_type="np",
                    callback_on_step_end=cb,
                ).images[0]
                out.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
        return out

    return render


def _interleaved(
    paths: dict[str, Callable[[list], object]], chunks: list[list], repeats: int, before_repeat: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds per repeat of each path. Each chunk is rendered by both, in ABBA order, so slow and
    fast spells of a shared machine fall on both sides alike."""
    names = list(paths)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        before_repeat()
        acc = dict.fromkeys(names, 0.0)
        for k, chunk in enumerate(chunks):
            for name in names if (rep + k) % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                paths[name](chunk)
                acc[name] += time.perf_counter() - t
        for name in names:
            times[name].append(acc[name])
    return times


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from bendbridge.bridge.bounce import BounceSpec, plan_bounce
    from bendbridge.bridge.demo_song import write_demo
    from bendbridge.server.model import load_model
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    if args.threads:
        torch.set_num_threads(args.threads)
    demo = write_demo(Path(tempfile.mkdtemp(prefix="bb-bench-")))
    model = load_model(args.model)
    bp = plan_bounce(
        BounceSpec(audio=demo["audio"], config=args.config or demo["config"], midi=demo["midi"], out=Path("unused.mp4"))
    )
    params = bp.params[: args.frames]
    r = Renderer(model, RenderConfig(bp.settings, bp.plan, max_batch=args.batch))
    if any(b.target.kind == "text" for b in bp.plan.bends) or len(r.prompts) > 1:
        raise SystemExit(
            "the naive baseline here does not bend text or mix prompts; "
            "use a config without text bends and with one prompt"
        )
    naive = _naive(model, r, bp.settings.seed)

    def ours(chunk: list) -> list[np.ndarray]:
        return [res.image for res in r.render([FrameSpec(params=p) for p in chunk])]

    a, b = naive(params), ours(params)  # warm-up and equivalence check
    diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))
    chunks = [params[s : s + args.batch] for s in range(0, len(params), args.batch)]
    # each repeat pays for its shared prefix once, as a bounce of these frames would
    times = _interleaved({"naive": naive, "ours": ours}, chunks, args.repeats, r.prefix.clear)
    tn, to = statistics.median(times["naive"]), statistics.median(times["ours"])
    n = len(params)
    print(
        f"model {model.name}: {r.width}x{r.height}, {r.steps} steps, guidance {r.guidance}, "
        f"{len(bp.plan)} bends, {n} frames of the demo song, {torch.get_num_threads()} threads; "
        f"steps before the first bend, shared: {r.prefix_steps}"
    )
    print(f"naive pipeline per frame   {n / tn:8.2f} frames/s")
    print(f"bendbridge bounce (≤{args.batch}/pass) {n / to:8.2f} frames/s   speed-up ×{tn / to:.2f}  (goal ≥ 2)")
    pairs = ", ".join(f"×{a / b:.2f}" for a, b in zip(times["naive"], times["ours"]))
    print(f"speed-up of each interleaved repeat: {pairs}")
    print(f"largest pixel difference between the two: {diff} / 255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
