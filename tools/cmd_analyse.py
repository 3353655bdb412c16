"""``bendbridge analyse pca``: input→output maps of the model as figures (PNG) and numbers (JSON
beside them); library: ``bendbridge.server.analysis``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.operators import MAX_PROMPTS, MIN_PROMPTS
from bendbridge.protocol.render import MODEL_HELP

PERTURB_DELTA, GRADIENT_DELTA = 0.15, 0.01  # the thesis' values (server.analysis.perturb has the same)

__all__ = ["add_commands"]


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--seed", type=int, default=None, help="start noise of every frame (default 0)")
    p.add_argument("--out", type=Path, required=True, help="the figure (.png); its numbers go beside it as .json")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyse", help="input→output maps of the model: figures and numbers")
    what = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    q = what.add_parser("attention", help="word attention in the text encoder, as a bar chart")
    q.add_argument("prompt", metavar="PROMPT")
    q.add_argument("--per-head", action="store_true", help="also a heads × words map per layer")
    q.add_argument("--model", type=Path, default=None, help=MODEL_HELP)
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    q.add_argument("--out", type=Path, required=True, help="the figure (.png); its numbers go beside it as .json")
    q.set_defaults(run=run_attention)

    q = what.add_parser("noise", help="how the start noise changes how well pictures match their prompts")
    q.add_argument("prompts", nargs="+", metavar="PROMPT")
    q.add_argument("--seeds", type=int, default=32, help="start noises per prompt (default 32)")
    q.add_argument("--clip", type=Path, default=None, help="a local CLIP model folder: score by CLIP score")
    _model_args(q)
    q.set_defaults(run=run_noise)

    for name, delta, what_it_is in (
        ("perturb", PERTURB_DELTA, "perturbation maps: where each word acts (its conditioning scaled by 1 + δ)"),
        ("gradient", GRADIENT_DELTA, "gradient maps by finite difference: change per unit of embedding change"),
    ):
        q = what.add_parser(name, help=what_it_is)
        q.add_argument("prompt", metavar="PROMPT")
        q.add_argument(
            "--delta", type=float, default=delta, help=f"relative change of a word's embedding (default {delta})"
        )
        q.add_argument("--mode", default="both", choices=("dominant", "each", "both"), help="the overlays drawn")
        q.add_argument(
            "--at", default="input", choices=("input", "output"),
            help="scale the word's token embeddings at the text encoder's input (default; the change reaches "
            "the later tokens) or its output rows only",
        )  # fmt: skip
        _model_args(q)
        q.set_defaults(run=run_word_maps, kind=name)

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


def run_word_maps(args: argparse.Namespace) -> int:
    numbers = _figure_out(args.out)
    if not (0 < abs(args.delta) <= 2):
        raise BendbridgeError("--delta", f"{args.delta} is outside [-2, 0) ∪ (0, 2]")
    settings = _settings(args, (args.prompt,))

    from bendbridge.server.analysis.perturb import word_maps, word_maps_figure
    from bendbridge.server.model import load_model

    wm = word_maps(load_model(args.model, args.device), args.prompt, settings, args.kind, args.delta, at=args.at)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    word_maps_figure(wm, args.out, args.mode)
    data = wm.to_dict()
    numbers.write_text(json.dumps(data, indent=1) + "\n")
    shares = ", ".join(f"{w['word']} {w['share']:.0%}" for w in data["words"])
    masks = "; ".join(f"'{c}' {m['inside']:.0%} on its colour's pixels ({m['area']:.0%} of the picture)"
                      for c, m in data["colour_masks"].items())  # fmt: skip
    print(
        f"share of the change by word: {shares}" + (f"; {masks}" if masks else "") + f"; wrote {args.out} and {numbers}"
    )
    return 0


def run_attention(args: argparse.Namespace) -> int:
    numbers = _figure_out(args.out)

    from bendbridge.server.analysis.attention import attention_figure, word_attention
    from bendbridge.server.model import load_model

    wa = word_attention(load_model(args.model, args.device), args.prompt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    attention_figure(wa, args.out, args.per_head)
    numbers.write_text(json.dumps(wa.to_dict(), indent=1) + "\n")
    bars = ", ".join(f"{label} {v:.3f}" for label, v in zip(wa.labels, wa.mean))
    print(f"attention received: {bars}; wrote {args.out} and {numbers}")
    return 0


def run_noise(args: argparse.Namespace) -> int:
    numbers = _figure_out(args.out)
    if not 2 <= args.seeds <= 1024:
        raise BendbridgeError("--seeds", f"{args.seeds} is outside 2…1024")
    if len(args.prompts) > 16:
        raise BendbridgeError("PROMPT", f"{len(args.prompts)} prompts; at most 16 in one figure")
    if args.clip is not None and not args.clip.is_dir():
        raise BendbridgeError("--clip", f"no such folder {str(args.clip)!r}")
    prompts = tuple(args.prompts)
    settings = _settings(args, prompts)
    if args.clip is None:
        from bendbridge.server.analysis.noise import prompt_labels

        if args.model is not None:
            raise BendbridgeError("--clip", "the scene classifier judges only the embedded model: give --clip DIR")
        for p in prompts:
            if not prompt_labels(p):
                raise BendbridgeError("PROMPT", f"{p!r} names no colour or shape the scene classifier knows")

    from bendbridge.server.analysis.noise import classifier_scorer, clip_scorer, noise_figure, noise_scores
    from bendbridge.server.model import load_model

    model = load_model(args.model, args.device)
    if args.clip is not None:
        scorer, name = clip_scorer(args.clip, model.pipe.unet.device), "CLIP score"
    else:
        scorer, name = classifier_scorer(), "scene classifier probability"
    ns = noise_scores(model, prompts, settings, args.seeds, scorer, name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    noise_figure(ns, args.out)
    data = ns.to_dict()
    numbers.write_text(json.dumps(data, indent=1) + "\n")
    summary = "; ".join(f"'{p['prompt']}' {p['mean']:.3f} ± {p['std']:.3f}" for p in data["prompts"])
    print(f"{name} over {args.seeds} seeds: {summary}; wrote {args.out} and {numbers}")
    return 0
