"""``bendbridge layers | render | sweep``: the bending engine from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="diffusers Stable Diffusion folder (default: the embedded model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list every bendable target with index, dotted name and activation shape")
    _model_args(p)
    p.add_argument("--size", type=int, default=None, help="image size in pixels for the shapes (default: model native)")
    p.set_defaults(run=run_layers)

    p = sub.add_parser("render", help="render one (bent) frame")
    _model_args(p)
    p.add_argument("--prompt", required=True, action="append", help="prompt; repeat to interpolate with --prompt-weights")
    p.add_argument("--prompt-weights", default=None, help="comma-separated weights, one per --prompt")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--bend", action="append", default=[], metavar="SPEC", help="e.g. rotate_plane:plane=0,1:angle=1.2@latent:step=0 (repeatable)")
    p.add_argument("--plan", type=Path, default=None, help="bend plan file (.toml or .json); --bend specs are appended")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-angle", type=float, default=0.0, help="radians along the circular noise walk")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--scheduler", default="default")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(run=run_render)

    p = sub.add_parser("sweep", help="render a labelled contact sheet of operator × value × target")
    _model_args(p)
    p.add_argument("--config", type=Path, required=True, help="sweep TOML (see server/render/sheet.py)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(run=run_sweep)


def run_layers(args: argparse.Namespace) -> int:
    from bendbridge.server.model import load_pipeline
    from bendbridge.server.render import RenderConfig, Renderer

    pipe = load_pipeline(args.model, args.device)
    r = Renderer(pipe, RenderConfig(width=args.size, height=args.size))
    c = pipe.unet.config.in_channels
    h, w = r.height // r.vae_factor, r.width // r.vae_factor
    print(f"model: {getattr(pipe, 'bendbridge_path', '?')}  ({r.width}x{r.height} px, {r.steps} steps by default)")
    print(f"{'':>5}  {'latent:step=K':<48} {'latent':<22} ({c}, {h}, {w})   K in 0..{r.steps}")
    print(f"{'':>5}  {'text[:word=W]':<48} {'text conditioning':<22} ({r.seq_len}, {pipe.text_encoder.config.hidden_size})")
    for info in r.layers:
        print(f"#{info.index:<4} {info.name:<48} {info.kind:<22} {info.shape}")
    return 0


def _plan(args: argparse.Namespace):
    from bendbridge.protocol.plan import BendPlan

    base = BendPlan.load(args.plan) if args.plan else BendPlan()
    extra = BendPlan.from_specs(args.bend)
    return BendPlan.from_dict({"bend": [b.to_dict() for b in base.bends] + [b.to_dict() for b in extra.bends]})


def run_render(args: argparse.Namespace) -> int:
    from PIL import Image

    from bendbridge.server.model import load_pipeline
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    weights = tuple(float(v) for v in args.prompt_weights.split(",")) if args.prompt_weights else None
    cfg = RenderConfig(prompts=tuple(args.prompt), negative_prompt=args.negative_prompt, seed=args.seed, width=args.width,
                       height=args.height, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, plan=_plan(args))
    pipe = load_pipeline(args.model, args.device)
    res = Renderer(pipe, cfg).render([FrameSpec(noise_angle=args.noise_angle, prompt_weights=weights)])[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(res.image).save(args.out)
    for f in res.faults:
        print(f"warning: {f}")
    if res.black:
        print("warning: the frame is all black")
    print(f"wrote {args.out}")
    return 0 if res.ok else 1


def run_sweep(args: argparse.Namespace) -> int:
    from bendbridge.server.model import load_pipeline
    from bendbridge.server.render.sheet import load_sweep, render_sheet

    cfg = load_sweep(args.config)
    pipe = load_pipeline(args.model, args.device)
    sheet = render_sheet(pipe, cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({len(cfg.rows)} rows)")
    return 0
