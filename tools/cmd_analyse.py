"""``bendbridge analyse pca``: input→output maps of the model as figures (PNG) and numbers (JSON
beside them); library: ``bendbridge.server.analysis``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.operators import MAX_PROMPTS, MIN_PROMPTS

__all__ = ["add_commands"]


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="diffusers folder (default: the embedded model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="start noise of every frame (default 0)")
    p.add_argument("--out", type=Path, required=True, help="the figure (.png); its numbers go beside it as .json")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyse", help="input→output maps of the model: figures and numbers")
    what = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    q = what.add_parser("pca", help="a prompt set's PCA plane (the pca_move bend's) and frames rendered across it")
    q.add_argument("prompts", nargs="+", metavar="PROMPT", help=f"{MIN_PROMPTS}–{MAX_PROMPTS} related prompts")
    q.add_argument("--grid", type=int, default=5, help="grid points a side (default 5)")
    q.add_argument("--span", type=float, default=2.0, help="the grid covers [-span, span]² in units of σ (default 2)")
    q.add_argument("--line-frames", type=int, default=16, help="frames on the line from the 1st to the 2nd prompt")
    _model_args(q)
    q.set_defaults(run=run_pca)


def _figure_out(out: Path) -> Path:
    if out.suffix.lower() != ".png":
        raise BendbridgeError("--out", f"{out.name!r}: the figure is a .png")
    from bendbridge.bridge.report import pyplot

    pyplot("--out")
    return out.with_suffix(".json")


def _settings(args: argparse.Namespace, prompts: tuple[str, ...]):
    from bendbridge.protocol.render import RenderSettings

    names = {"steps": "--steps", "guidance": "--guidance", "seed": "--seed"}
    return RenderSettings(prompts).override(names, steps=args.steps, guidance=args.guidance, seed=args.seed)


def run_pca(args: argparse.Namespace) -> int:
    from bendbridge.protocol.operators import operator_spec

    numbers = _figure_out(args.out)
    prompts = operator_spec("pca_move").params["prompts"].check(args.prompts, "PROMPT", BendbridgeError)
    if not 2 <= args.grid <= 12:
        raise BendbridgeError("--grid", f"{args.grid} is outside 2…12")
    if not 0 < args.span <= 4:
        raise BendbridgeError("--span", f"{args.span} is outside (0, 4]")
    if not 2 <= args.line_frames <= 256:
        raise BendbridgeError("--line-frames", f"{args.line_frames} is outside 2…256")
    settings = _settings(args, prompts)

    from bendbridge.server.analysis.pca import pca_figure, pca_study
    from bendbridge.server.model import load_model

    study = pca_study(load_model(args.model, args.device), prompts, settings, args.grid, args.span, args.line_frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pca_figure(study, args.out)
    data = study.to_dict()
    numbers.write_text(json.dumps(data, indent=1) + "\n")
    line = data["line"]
    print(
        f"plane: {data['explained_variance'][0]:.0%} + {data['explained_variance'][1]:.0%} of the set's variance; "
        f"frame-to-frame change along '{line['from']}' → '{line['to']}': through the plane mean "
        f"{line['pca']['mean']:.2f}, largest {line['pca']['max']:.2f}; by prompt weights mean "
        f"{line['weights']['mean']:.2f}, largest {line['weights']['max']:.2f} levels; wrote {args.out} and {numbers}"
    )
    return 0
