"""``bendbridge adapt``: train a low-rank adapter on a folder of images (a personal concept)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="train a low-rank adapter (LoRA) on your images; use it with the lora bend")
    p.add_argument("--images", type=Path, default=None, help="folder of PNG/JPEG/WebP images (NAME.txt: caption)")
    p.add_argument("--token", default=None, help="the new word for the concept, e.g. zork")
    p.add_argument("--caption", default="a {token}", help="caption of images without NAME.txt (default 'a {token}')")
    p.add_argument("--model", default=None, help="diffusers Stable Diffusion folder, or embedded (default)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--rank", type=int, default=8, help="adapter rank, 1-256 (default 8)")
    p.add_argument("--steps", type=int, default=800, help="optimiser steps (default 800)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    p.add_argument(
        "--prior",
        type=int,
        default=48,
        help="prior-preservation renders of the captions without the token (default 48; 0: none)",
    )
    p.add_argument(
        "--replay",
        type=int,
        default=48,
        help="with --after or --report: renders of the earlier concepts by the model after them, distilled "
        "while training the new one (default 48; 0: none)",
    )
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 0.003)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="checkpoint folder (default OUT.work beside --out)")
    p.add_argument("--sample", action="append", default=None, help="sample-sheet prompt (repeat; default: captions)")
    p.add_argument("--after", type=Path, nargs="+", default=None, help="earlier adapters to keep (continual mode)")
    p.add_argument(
        "--strategy",
        default="merge",
        help="with --after: naive, merge, orthogonal or relevant (default merge)",
    )
    p.add_argument(
        "--report", action="store_true", help="measure forgetting on the embedded model's new concepts (--out .json)"
    )
    p.add_argument("--concepts", default="dotted,navy,heart", help="with --report: concepts in training order")
    p.add_argument("--strategies", default=None, help="with --report: strategies to compare (default: all four)")
    p.add_argument("--out", type=Path, required=True, help="NAME.safetensors (and NAME.png, the sample sheet)")
    p.set_defaults(run=run_adapt)


def run_adapt(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bendbridge.server.adapters.train import AdaptRequest, load_images, train_adapter
    from bendbridge.server.model import check_model_options, load_model

    if args.report:
        return run_report(args)
    if args.out.suffix.lower() != ".safetensors":
        raise BendbridgeError("--out", f"{args.out.name!r}: expected a .safetensors file")
    if args.images is None or args.token is None:
        raise BendbridgeError("--images", "give --images DIR and --token WORD (or --report)")
    request = AdaptRequest(
        args.token.strip(), args.rank, args.steps, args.lr, args.batch, args.caption, args.seed,
        prior=args.prior, replay=args.replay,
    )  # fmt: skip
    request.check()
    earlier = _earlier(args)
    check_model_options(args.model, args.device)
    model = load_model(args.model, args.device, precision="fp32")
    size = model.pipe.unet.config.sample_size * 2 ** (len(model.pipe.vae.config.block_out_channels) - 1)
    images = load_images(args.images, (size, size), request.caption, request.token)
    work = args.work or args.out.with_name(args.out.stem + ".work")
    setup = _continual(model, images, request, earlier, args.strategy) if earlier else None
    print(f"{len(images.names)} images at {size}×{size}; checkpoints in {work}")
    if setup is not None and request.replay and not setup.replay_captions:
        print("note: the --after adapters record no training captions, so there is nothing to replay")
    with tqdm(total=request.steps, desc="adapt") as bar:

        def progress(step: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

        adapter = train_adapter(model, images, request, work, setup=setup, progress=progress)
    if earlier:
        from bendbridge.server.adapters.continual import after_stage

        adapter = after_stage(args.strategy, earlier, adapter)
    adapter.save(args.out)
    sheet = args.out.with_suffix(".png")
    prompts = args.sample or sorted(set(images.captions))[:4]
    _sample_sheet(model, args.out, prompts, sheet)
    print(f"wrote {args.out} ({len(adapter.layers)} layers, rank {adapter.rank}) and {sheet}")
    return 0


def _sample_sheet(model, adapter: Path, prompts: list[str], out: Path, weights=(0.0, 0.5, 1.0)) -> None:
    """Each prompt (a row) at adapter weights 0, 0.5 and 1, from one start noise."""
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
    from bendbridge.server.render.sheet import labelled_grid

    plan = BendPlan.from_specs([f"lora:adapter={adapter.resolve()}:weight=1@unet:id=adapter"])
    r = Renderer(model, RenderConfig(RenderSettings(tuple(prompts)), plan))
    frames = [
        FrameSpec.of_prompt(i, len(prompts), seed=0, params={"adapter": {"weight": w}})
        for i in range(len(prompts))
        for w in weights
    ]
    images = [res.image for res in r.render(frames)]
    rows = [
        (p, [(images[i * len(weights) + j], f"weight {w:g}") for j, w in enumerate(weights)])
        for i, p in enumerate(prompts)
    ]
    labelled_grid(rows).save(out)


def _earlier(args: argparse.Namespace) -> list:
    """The ``--after`` adapters, read and checked before any long work."""
    from bendbridge.server.adapters.continual import STRATEGIES
    from bendbridge.server.adapters.lora import LoraAdapter

    if not args.after:
        return []
    if args.strategy not in STRATEGIES:
        raise BendbridgeError("--strategy", f"{args.strategy!r} is not valid; allowed: {', '.join(STRATEGIES)}")
    if args.strategy == "naive" and len(args.after) != 1:
        raise BendbridgeError("--after", "naive continual training goes on from exactly one adapter: the last stage's")
    out = []
    for p in args.after:
        if not p.is_file():
            raise BendbridgeError("--after", f"no such adapter {str(p)!r}")
        out.append(LoraAdapter.load(p, "--after"))
    return out


def _continual(model, images, request, earlier, strategy):
    from bendbridge.server.adapters.continual import continual_setup
    from bendbridge.server.adapters.train import Objective

    ids = {ad.meta.get("model_id") for ad in earlier if not ad.foreign}
    from bendbridge.server.steering.files import unet_identity

    if ids - {unet_identity(model.pipe.unet)}:
        raise BendbridgeError("--after", "an adapter given with --after was trained on another model")
    return continual_setup(model, Objective(model, images, request), request, earlier, strategy)


def run_report(args: argparse.Namespace) -> int:
    """``--report``: the forgetting table of the embedded model's new concepts, per strategy."""
    import json

    from bendbridge.server.adapters.continual import STRATEGIES
    from bendbridge.server.adapters.forgetting import forgetting_table
    from bendbridge.server.adapters.train import AdaptRequest
    from bendbridge.server.model import load_model

    if args.out.suffix.lower() != ".json":
        raise BendbridgeError("--out", f"{args.out.name!r}: with --report, expected a .json file")
    if args.model not in (None, "embedded"):
        raise BendbridgeError("--report", "the forgetting report uses the embedded model's scene concepts")
    request = AdaptRequest(
        "x", args.rank, args.steps, args.lr, args.batch, args.caption, args.seed, prior=args.prior, replay=args.replay
    )
    request.check()
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    strategies = [s.strip() for s in (args.strategies or ",".join(STRATEGIES)).split(",") if s.strip()]
    model = load_model(None, args.device, precision="fp32")
    work = args.work or args.out.with_name(args.out.stem + ".work")
    table = forgetting_table(model, concepts, strategies, request, work, progress=lambda m: print(m, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table.to_json(), indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table.markdown() + "\n")
    print(table.markdown())
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0
