"""``bendbridge layers | render | sweep``: the bending engine from the command line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.render import (
    DECODER_HELP,
    MODEL_HELP,
    PRECISION_HELP,
    PRECISIONS,
    SCHEDULERS,
    check_scheduler,
)

__all__ = ["add_commands"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--decoder", default=None, help=DECODER_HELP)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list every bendable target with index, dotted name and activation shape")
    _model_args(p)
    p.add_argument("--size", type=int, default=None, help="image size in pixels for the shapes (default: model native)")
    p.set_defaults(run=run_layers)

    p = sub.add_parser("convert", help="write a model as a single-file checkpoint (.safetensors) or a diffusers folder")
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    p.add_argument("--out", type=Path, required=True, help="NAME.safetensors (original layout) or a new folder")
    p.add_argument("--half", action="store_true", help="store a .safetensors file's weights as float16")
    p.set_defaults(run=run_convert)

    p = sub.add_parser("render", help="render one (bent) frame")
    _model_args(p)
    p.add_argument(
        "--prompt", required=True, action="append", help="prompt; repeat to interpolate with --prompt-weights"
    )
    p.add_argument("--prompt-weights", default=None, help="comma-separated weights, one per --prompt")
    p.add_argument("--negative-prompt", default="")
    p.add_argument(
        "--bend",
        action="append",
        default=[],
        metavar="SPEC",
        help="e.g. rotate_plane:plane=0,1:angle=1.2@latent:step=0 (repeatable)",
    )
    p.add_argument("--plan", type=Path, default=None, help="bend plan file (.toml or .json); --bend specs are appended")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--noise-angle", type=float, default=0.0, help="radians along the circular noise walk")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--scheduler", default="default", help=f"one of {', '.join(SCHEDULERS)}")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="output image (.png, .jpg, .webp)")
    p.add_argument("--init-image", type=Path, default=None, help="start from this picture (DDIM-inverted), not noise")
    inversion_args(p)
    p.set_defaults(run=run_render)

    p = sub.add_parser("invert", help="DDIM-invert a picture and render it back: picture, reconstruction, error")
    _model_args(p)
    p.add_argument("--image", type=Path, required=True, help="the picture (.png, .jpg, .webp), fitted to the size")
    p.add_argument("--prompt", default="", help="what the picture shows (inversion and reconstruction use it)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None, help="guidance of the reconstruction (default: the model's)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    inversion_args(p)
    p.add_argument("--out", type=Path, required=True, help="the sheet (.png); its numbers go beside it as .json")
    p.set_defaults(run=run_invert)

    p = sub.add_parser("sweep", help="render a labelled contact sheet of operator × value × target")
    _model_args(p)
    p.add_argument("--config", type=Path, required=True, help="sweep TOML (see server/render/sheet.py)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(run=run_sweep)


def inversion_args(p: argparse.ArgumentParser, subject: str = "the picture") -> None:
    """``--invert-to`` and ``--invert-iterations`` (render, invert, bounce)."""
    p.add_argument(
        "--invert-to", type=int, default=0, metavar="K",
        help=f"the denoising step {subject} is inverted to, 0 … steps (0: all the way to noise; default 0)",
    )  # fmt: skip
    p.add_argument(
        "--invert-iterations", type=int, default=None, metavar="N",
        help="fixed-point iterations a step, 1 = plain DDIM inversion (default: 4 without guidance, 1 with)",
    )  # fmt: skip


def _inversion(args: argparse.Namespace, steps: int | None = None) -> InversionSettings:
    """--invert-to and --invert-iterations, checked against ``steps`` (default: --steps, if given)."""
    settings = InversionSettings(args.invert_to, args.invert_iterations)
    return settings.check_options(steps if steps is not None else args.steps)


def _picture(path: Path, field: str) -> None:
    if not path.is_file():
        raise BendbridgeError(field, f"no such file {str(path)!r}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BendbridgeError(field, f"{path.name!r} is not a {', '.join(IMAGE_SUFFIXES)} picture")


def run_layers(args: argparse.Namespace) -> int:
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import load_model
    from bendbridge.server.render import RenderConfig, Renderer

    settings = RenderSettings(("layers",)).override(
        {"width": "--size", "height": "--size"}, width=args.size, height=args.size
    )
    model = load_model(args.model, args.device, precision=args.precision, decoder=args.decoder)
    r = Renderer(model, RenderConfig(settings))
    c = model.pipe.unet.config.in_channels
    h, w = r.height // r.vae_factor, r.width // r.vae_factor
    print(f"model: {model.name}  ({r.width}x{r.height} px, {r.steps} steps by default)")
    print(f"{'':>5}  {'latent:step=K':<48} {'latent':<22} ({c}, {h}, {w})   K in 0..{r.steps}")
    print(f"{'':>5}  {'text[:word=W]':<48} {'text conditioning':<22} ({r.seq_len}, {r.cond.width})")
    for info in r.layers:
        print(f"#{info.index:<4} {info.name:<48} {info.kind:<22} {info.shape}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Folder → single file, or single file → folder (loading a folder is quicker than converting)."""
    import torch

    from bendbridge.server.model import check_model_options, load_model
    from bendbridge.server.single_file import write_single_file

    out: Path = args.out
    if out.exists():
        raise BendbridgeError("--out", f"{str(out)!r} exists; name a new file or folder (nothing is overwritten)")
    if out.suffix and out.suffix.lower() != ".safetensors":
        raise BendbridgeError("--out", f"{out.name}: write NAME.safetensors, or a folder name without a suffix")
    if args.half and out.suffix.lower() != ".safetensors":
        raise BendbridgeError("--half", "applies to a .safetensors file only")
    check_model_options(args.model)
    model = load_model(args.model, "cpu", torch.float32, channels_last=False)
    if out.suffix:
        write_single_file(model.pipe, out, torch.float16 if args.half else None)
    else:
        model.pipe.save_pretrained(out)
    print(f"{model.name} → {out}")
    return 0


def _plan(args: argparse.Namespace):
    from bendbridge.protocol.plan import BendPlan

    base = BendPlan.load(args.plan) if args.plan else BendPlan()
    return base.then(BendPlan.from_specs(args.bend))


def _prompt_weights(text: str | None, prompts: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        weights = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BendbridgeError(
            "--prompt-weights", f"{text!r}: expected comma-separated numbers, one per --prompt"
        ) from None
    if len(weights) != prompts or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise BendbridgeError(
            "--prompt-weights", f"{text!r}: expected {prompts} finite weights ≥ 0 with a positive sum, one per --prompt"
        )
    return weights


def run_render(args: argparse.Namespace) -> int:
    from PIL import Image

    from bendbridge.protocol.render import RenderSettings

    if args.out.suffix.lower() not in IMAGE_SUFFIXES:
        raise BendbridgeError(
            "--out", f"cannot write {args.out.name!r}: bendbridge writes {', '.join(IMAGE_SUFFIXES)} images"
        )
    weights = _prompt_weights(args.prompt_weights, len(args.prompt))
    names = {"seed": "--seed", "width": "--width", "height": "--height", "steps": "--steps", "guidance": "--guidance"}
    settings = RenderSettings(tuple(args.prompt), args.negative_prompt).override(
        names, seed=args.seed, width=args.width, height=args.height, steps=args.steps, guidance=args.guidance
    )
    plan = _plan(args)
    check_scheduler(args.scheduler, "--scheduler")
    _inversion(args)
    if args.init_image is not None:
        _picture(args.init_image, "--init-image")
        if args.scheduler not in ("default", "ddim"):
            raise BendbridgeError(
                "--scheduler", f"--init-image denoises with ddim (its inversion's), not {args.scheduler}"
            )

    from bendbridge.server.model import load_model
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    renderer = Renderer(
        load_model(args.model, args.device, precision=args.precision, decoder=args.decoder),
        RenderConfig(settings, plan, scheduler=args.scheduler),
    )
    frames = [FrameSpec(noise_angle=args.noise_angle, prompt_weights=weights)]
    if args.init_image is not None:
        frames = _start_from_picture(renderer, args.init_image, frames, args)
    res = renderer.render(frames)[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(res.image).save(args.out)
    for f in res.faults:
        print(f"warning: {f}")
    if res.black:
        print("warning: the frame is all black")
    print(f"wrote {args.out}")
    return 0 if res.ok else 1


def _start_from_picture(renderer, path: Path, frames: list, args: argparse.Namespace) -> list:
    """``frames`` set to start from the picture at ``path``, inverted (see server/render/inversion.py)."""
    from bendbridge.server.render.inversion import start_from
    from bendbridge.server.render.pictures import read_picture

    inversion = _inversion(args, renderer.steps)
    picture = read_picture(path, (renderer.width, renderer.height), "--init-image")
    return start_from(renderer, picture[None], frames, inversion)


def run_invert(args: argparse.Namespace) -> int:
    import json

    from bendbridge.bridge.report import pyplot
    from bendbridge.protocol.render import RenderSettings

    _picture(args.image, "--image")
    if args.out.suffix.lower() != ".png":
        raise BendbridgeError("--out", f"{args.out.name!r}: the sheet is a .png")
    pyplot("--out")
    inversion = _inversion(args)
    names = {"width": "--width", "height": "--height", "steps": "--steps", "guidance": "--guidance"}
    settings = RenderSettings((args.prompt,), args.negative_prompt).override(
        names, width=args.width, height=args.height, steps=args.steps, guidance=args.guidance
    )

    from bendbridge.server.model import load_model
    from bendbridge.server.render import RenderConfig, Renderer
    from bendbridge.server.render.inversion_sheet import inversion_report, inversion_sheet
    from bendbridge.server.render.pictures import read_picture

    renderer = Renderer(
        load_model(args.model, args.device, precision=args.precision, decoder=args.decoder), RenderConfig(settings)
    )
    inversion = _inversion(args, renderer.steps)
    picture = read_picture(args.image, (renderer.width, renderer.height), "--image")
    report = inversion_report(renderer, picture, inversion)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    inversion_sheet(report, args.out)
    numbers = args.out.with_suffix(".json")
    numbers.write_text(json.dumps({"image": str(args.image), **report.to_dict()}, indent=1) + "\n")
    e, v = report.error, report.vae_error
    print(
        f"reconstruction: {e.mean_abs:.2f} levels mean abs, PSNR {e.psnr:.2f} dB "
        f"(the VAE alone: {v.mean_abs:.2f}, {v.psnr:.2f} dB); wrote {args.out} and {numbers}"
    )
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from bendbridge.server.render.sheet import load_sweep, render_sheet

    sweep = load_sweep(args.config)

    from bendbridge.server.model import load_model

    sheet = render_sheet(load_model(args.model, args.device, precision=args.precision, decoder=args.decoder), sweep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({len(sweep.rows)} rows)")
    return 0
