"""``bendbridge steer build | steer sweep``, ``bendbridge patch``, ``bendbridge sae train | sae features``:
activation steering from the command line (library: ``bendbridge.server.steering``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.plan import parse_region

__all__ = ["add_commands"]


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="diffusers Stable Diffusion folder, or embedded / fast (default: embedded)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument(
        "--steps-total", type=int, default=None, dest="num_steps", help="denoising steps (default: the model's)"
    )
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")


def _prompts(text: str, where: str) -> tuple[str, ...]:
    """``"a red star|a red square"`` or ``@FILE`` (one prompt per line) → prompts."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise BendbridgeError(where, f"no such prompt file {str(path)!r}")
        items = path.read_text(encoding="utf-8").splitlines()
    else:
        items = text.split("|")
    prompts = tuple(p.strip() for p in items if p.strip())
    if not prompts:
        raise BendbridgeError(where, "expected prompts separated by '|', or @FILE with one prompt per line")
    return prompts


def _floats(text: str, where: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BendbridgeError(where, f"{text!r}: expected comma-separated numbers") from None
    if not vals:
        raise BendbridgeError(where, "expected at least one number")
    return vals


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BendbridgeError("--seeds", f"{text!r}: expected comma-separated integers") from None
    return seeds


def _out(path: Path, suffixes: tuple[str, ...]) -> Path:
    if path.suffix.lower() not in suffixes:
        raise BendbridgeError("--out", f"{path.name!r}: expected a {' or '.join(suffixes)} file")
    return path


def check_targets(*args, **kw) -> None:
    from bendbridge.server.steering.probes import check_targets as check

    check(*args, **kw)


def _load(args: argparse.Namespace, prompt: str = "steering"):
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import check_model_options, load_model

    settings = RenderSettings((prompt,)).override(
        {"steps": "--steps-total", "guidance": "--guidance"}, steps=args.num_steps, guidance=args.guidance
    )
    check_model_options(args.model, args.device)
    return load_model(args.model, args.device), settings


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc)


def add_commands(sub: argparse._SubParsersAction) -> None:
    steer = sub.add_parser("steer", help="steering vectors by contrastive activation addition (CAA)")
    ssub = steer.add_subparsers(dest="steer_command", required=True, metavar="SUBCOMMAND")
    p = ssub.add_parser("build", help="mean activation difference between two prompt sets, saved as .safetensors")
    _model_args(p)
    p.add_argument("--positive", default=None, help="prompts toward which to steer: 'P1|P2|…' or @FILE")
    p.add_argument("--negative", default=None, help="prompts away from which to steer: 'P1|P2|…' or @FILE")
    p.add_argument(
        "--toward",
        default=None,
        help="embedded model, instead of the prompt sets: ATTR=LABEL (fg=red, shape=star, bg=white); scenes "
        "with any other value against the same scenes with LABEL",
    )
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="LABEL",
        help="with --toward: pair only scenes whose attribute is LABEL (--toward fg=red --from blue: red vs blue)",
    )
    p.add_argument("--pairs", type=int, default=32, help="with --toward: scene pairs, 1-256 (default 32)")
    p.add_argument("--pairs-seed", type=int, default=0, help="with --toward: which scenes (default 0)")
    p.add_argument(
        "--target",
        required=True,
        help="MODULE[,MODULE…]: dotted names or #N from 'bendbridge layers'; text for --broadcast token",
    )
    p.add_argument("--steps", default=None, help="denoising step range A-B (default: all)")
    p.add_argument("--seeds", type=int, default=4, help="start noises per prompt (default 4)")
    p.add_argument("--per-step", action="store_true", help="keep one vector per step instead of their mean")
    p.add_argument(
        "--broadcast",
        default="channel",
        help="channel: one [C] vector for every pixel; spatial: [C, H, W]; token: the text encoder's rows "
        "from the word where paired prompts differ (with --target text)",
    )
    p.add_argument("--tokens", type=int, default=2, help="--broadcast token: rows from the word on, 1-16 (default 2)")
    p.add_argument(
        "--weighting",
        default="difference",
        help="channel vectors: difference (pixels weighted by how much the sets differ there) or pixels (plain mean)",
    )
    p.add_argument("--out", type=Path, required=True, help="NAME.safetensors")
    p.set_defaults(run=run_steer_build)

    p = ssub.add_parser("sweep", help="a bend's strength against the scene classifier on held-out prompts (embedded)")
    _model_args(p)
    p.add_argument(
        "--bend",
        required=True,
        action="append",
        help="a bend to sweep, e.g. steer:vector=red.safetensors@#45 (repeat: all take each strength)",
    )
    p.add_argument("--param", default=None, help="its per-frame parameter to sweep (default: alpha, or scale)")
    p.add_argument("--values", default="0,0.25,0.5,0.75,1", help="comma-separated strengths")
    p.add_argument("--watch", required=True, help="the class to watch: fg=red, shape=star, bg=white, …")
    p.add_argument("--prompts", type=int, default=24, help="held-out prompts (default 24)")
    p.add_argument("--seed", type=int, default=0, help="first start noise (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="start noises per prompt, 1-64 (default 3)")
    p.add_argument("--out", type=Path, required=True, help="curve .png (also _sheet.png and .json beside it)")
    p.set_defaults(run=run_steer_sweep)

    p = sub.add_parser("patch", help="activation patching: which module and steps carry a concept (heatmap + JSON)")
    _model_args(p)
    p.add_argument("--clean", required=True, help="prompt with the concept, e.g. 'a red star on a white background'")
    p.add_argument("--corrupt", required=True, help="prompt without it, e.g. 'a blue star on a white background'")
    p.add_argument(
        "--metric",
        default="colour",
        help="colour, shape, background (embedded classifier); latent, pixels, mean-colour (any model)",
    )
    p.add_argument("--region", default=None, help="x0,y0,x1,y1 fractions: limit pixels / mean-colour to this region")
    p.add_argument(
        "--targets",
        default=None,
        help="MODULE[,MODULE…]: names, #N, or attention layers like ….attn2 "
        "(default: every cross-attention layer and attention block)",
    )
    p.add_argument(
        "--steps", default=None, help="step ranges as columns, e.g. 0,1,2-5,all (default: from each step to the last)"
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--out", type=Path, required=True, help="map.png (and map.json beside it)")
    p.set_defaults(run=run_patch)

    sae = sub.add_parser("sae", help="sparse autoencoders on a module's activations")
    asub = sae.add_subparsers(dest="sae_command", required=True, metavar="SUBCOMMAND")
    p = asub.add_parser("train", help="train a top-k sparse autoencoder on one module (resumable)")
    _model_args(p)
    p.add_argument("--target", required=True, help="MODULE or #N")
    p.add_argument("--prompts", type=int, default=256, help="prompts rendered (default 256)")
    p.add_argument("--prompt-file", type=Path, default=None, help="one prompt per line (default: the scene grammar)")
    p.add_argument("--steps", default=None, help="denoising step range A-B (default: all)")
    p.add_argument("--features", type=int, default=512)
    p.add_argument("--k", type=int, default=8, help="active features per pixel")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="activations and checkpoints (default: OUT.work/)")
    p.add_argument("--out", type=Path, required=True, help="NAME.safetensors")
    p.set_defaults(run=run_sae_train)

    p = asub.add_parser("features", help="contact sheet of each feature's top-activating images")
    p.add_argument("--sae", type=Path, required=True, help="a file from 'sae train'")
    p.add_argument("--work", type=Path, default=None, help="its work folder (default: SAE.work/)")
    p.add_argument("--features", default=None, help="feature indices (default: the 12 most frequent live ones)")
    p.add_argument(
        "--effects",
        action="store_true",
        help="also edit each feature on held-out prompts (needs its model) and report what the classifier sees change",
    )
    p.add_argument("--edit", default="clamp", choices=("clamp", "scale"), help="the edit for --effects (default clamp)")
    p.add_argument("--value", type=float, default=1.0, help="its value (default 1: the feature at its largest)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per feature for --effects (default 8)")
    p.add_argument(
        "--on",
        default="top",
        choices=("top", "held-out"),
        help="--effects on each feature's top-activating training prompts (default) or on held-out prompts",
    )
    p.add_argument("--model", default=None, help="the model the autoencoder was trained on (default: embedded)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="sheet .png (with --effects also _effects.png and .json)")
    p.set_defaults(run=run_sae_features)


def _prompt_sets(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The positive and negative prompts: given, or scene pairs ``--toward`` a class."""
    if args.toward is None:
        if args.source is not None:
            raise BendbridgeError("--from", "goes with --toward (scene pairs of the embedded model)")
        if args.positive is None or args.negative is None:
            raise BendbridgeError("--positive", "give --positive and --negative prompt sets, or --toward ATTR=LABEL")
        return _prompts(args.positive, "--positive"), _prompts(args.negative, "--negative")
    from bendbridge.server.embedded.scenes import caption, contrast_pairs
    from bendbridge.server.steering.evaluate import parse_watch

    if args.positive is not None or args.negative is not None:
        raise BendbridgeError("--toward", "give either --toward or --positive/--negative, not both")
    if args.model not in (None, "embedded", "fast"):
        raise BendbridgeError("--toward", "scene pairs are the embedded model's grammar; give --positive/--negative")
    if not 1 <= args.pairs <= 256:
        raise BendbridgeError("--pairs", f"{args.pairs} is out of range [1, 256]")
    watch = parse_watch(args.toward, "--toward")
    if args.source is not None:
        parse_watch(f"{watch.attribute}={args.source}", "--from")  # a label of the same attribute
        if args.source == watch.label:
            raise BendbridgeError("--from", f"{args.source!r} is the label steered toward; name another")
    try:
        pairs = contrast_pairs(watch.attribute, watch.label, args.pairs, args.pairs_seed, args.source)
    except ValueError as e:
        raise BendbridgeError("--pairs", str(e)) from None
    return tuple(caption(t) for t, _ in pairs), tuple(caption(s) for _, s in pairs)


def run_steer_build(args: argparse.Namespace) -> int:
    from bendbridge.server.steering.caa import CAARequest, build_vectors

    targets = tuple(t.strip() for t in args.target.split(",") if t.strip())
    positive, negative = _prompt_sets(args)
    request = CAARequest(
        positive, negative, targets, args.steps, args.seeds, args.per_step, args.broadcast, args.weighting, args.tokens
    )
    request.check()
    out = _out(args.out, (".safetensors",))
    model, settings = _load(args)
    if request.broadcast != "token":
        check_targets(model, settings, request.targets, (request.steps,), "--target")
    total = (len(request.positive) + len(request.negative)) * request.seeds
    with _bar(total, "steer build") as bar:
        vectors = build_vectors(model, request, settings=settings, progress=bar.update)
    vectors.save(out)
    for name, shape in ((m, tuple(v.shape)) for m, v in vectors.vectors.items()):
        print(f"{name}: {shape}, mean norm {vectors.meta['norms'][name]}")
    print(f"wrote {out}")
    return 0


def run_steer_sweep(args: argparse.Namespace) -> int:
    from bendbridge.bridge.report import pyplot
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.server.steering.evaluate import parse_watch, strength_sweep

    plan = BendPlan.from_specs(args.bend)
    spec = plan.bends[0].spec
    param = args.param or next((p for p in ("alpha", "scale", "clamp") if p in spec.params), "mix")
    values = _floats(args.values, "--values")
    watch = parse_watch(args.watch)
    if not 1 <= args.seeds <= 64:
        raise BendbridgeError("--seeds", f"{args.seeds} is out of range [1, 64]")
    out = _out(args.out, (".png",))
    pyplot("--out")
    model, settings = _load(args)
    with _bar(len(values) * args.prompts * args.seeds, "steer sweep") as bar:
        curve = strength_sweep(
            model,
            plan,
            param,
            values,
            watch,
            prompts=args.prompts,
            seed=args.seed,
            seeds=args.seeds,
            settings=settings,
            progress=bar.update,
        )
    curve.save(out)
    for v, p, w, s, k in zip(values, curve.watched_prob, curve.watched_wins, curve.shape_right, curve.shape_kept()):
        shape = f"shape right {100 * s:.0f} % ({100 * k:.0f} % of unsteered)"
        print(f"{param}={v:g}: P({watch})={p:.3f}  wins {100 * w:.0f} %  {shape}")
    print(f"wrote {out} (monotonic: {curve.monotonic()})")
    return 0


def run_patch(args: argparse.Namespace) -> int:
    from bendbridge.bridge.report import pyplot
    from bendbridge.server.steering.patching import PatchRequest, patch_map

    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip()) if args.targets else None
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip()) if args.steps else None
    region = parse_region(args.region, "--region") if args.region else None
    request = PatchRequest(args.clean, args.corrupt, args.metric, targets, steps, _seeds(args.seeds), region)
    request.check()
    out = _out(args.out, (".png",))
    pyplot("--out")
    model, settings = _load(args, args.clean)
    check_targets(model, settings, request.targets, request.steps or (None,))
    with _bar(None, "patch") as bar:
        pm = patch_map(model, request, settings=settings, progress=bar.update)
    pm.save(out)
    rho = pm.seed_agreement()
    for t, c, v in pm.top(5):
        print(f"{t} steps {c}: restored {v:.2f}")
    print(
        f"wrote {out} and {out.with_suffix('.json')}"
        + (f"; seeds' rank correlation {rho:.3f}" if rho is not None else "")
    )
    return 0


def run_sae_train(args: argparse.Namespace) -> int:
    from bendbridge.server.steering.sae_train import SAERequest, collect, train

    request = SAERequest(args.target, args.prompts, args.prompt_file, args.steps, args.features, args.k,
                         train_steps=args.train_steps, seed=args.seed)  # fmt: skip
    request.check()
    out = _out(args.out, (".safetensors",))
    work = args.work or out.with_name(out.stem + ".work")
    work.mkdir(parents=True, exist_ok=True)
    model, settings = _load(args)
    check_targets(model, settings, (request.target,), (request.steps,), "--target")
    with _bar(request.prompts, "activations") as bar:
        data = collect(model, request, work, progress=bar.update)
    with _bar(request.train_steps, "sae") as bar:
        sae, report = train(data["vectors"], request, work, progress=bar.update)
    meta = {**data["meta"], "report": report, "train_steps": request.train_steps, "vectors": len(data["vectors"])}
    sae.save(out, meta)
    (work / "prompts.json").write_text(json.dumps(data["prompts"]))
    print(json.dumps(report))
    print(f"wrote {out}")
    return 0


def run_sae_features(args: argparse.Namespace) -> int:
    import torch

    from bendbridge.server.render.sheet import labelled_grid
    from bendbridge.server.steering.sae import SparseAutoencoder
    from bendbridge.server.steering.sae_train import top_images

    out = _out(args.out, (".png",))
    if not args.sae.is_file():
        raise BendbridgeError("--sae", f"no such file {str(args.sae)!r}")
    sae = SparseAutoencoder.load(args.sae, "--sae")
    work = args.work or args.sae.with_name(args.sae.stem + ".work")
    chunks = sorted(work.glob("acts_*.pt"))
    if not chunks:
        raise BendbridgeError("--work", f"{str(work)!r} holds no activations from 'sae train'")
    parts = [torch.load(c, weights_only=True) for c in chunks]
    maps = torch.cat([p["maps"] for p in parts])
    images = torch.cat([p["images"] for p in parts]).numpy()
    values, index = top_images(sae, maps, per_feature=max(6, args.prompts))
    if args.features:
        feats = [int(f) for f in args.features.split(",")]
        bad = [f for f in feats if not 0 <= f < sae.features]
        if bad:
            raise BendbridgeError("--features", f"{bad} out of range [0, {sae.features - 1}]")
    else:
        freq = (values > 0).sum(1)
        feats = [int(f) for f in torch.argsort(-(freq * 1000 + values[:, 0]))[:12]]
    rows = [
        (
            f"feature {f}",
            [(images[int(i)], f"{float(v):.2f}") for v, i in zip(values[f], index[f]) if v > 0]
            or [(images[0] * 0, "never fires")],
        )
        for f in feats
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows).save(out)
    print(f"wrote {out} ({len(rows)} features)")
    if args.effects:
        _effects(args, sae, feats, out, index, work)
    return 0


def _effects(args: argparse.Namespace, sae, feats: list[int], out: Path, top_index, work: Path) -> None:
    from bendbridge.server.model import check_model_options, load_model
    from bendbridge.server.render.sheet import labelled_grid
    from bendbridge.server.steering.evaluate import feature_effects, held_out_cases

    check_model_options(args.model, args.device)
    if args.on == "top":
        prompts = json.loads((work / "prompts.json").read_text())
        seed = int(sae.meta.get("seed", 0))
        cases = {f: [(prompts[int(i)], seed + int(i)) for i in top_index[f][: args.prompts]] for f in feats}
    else:
        cases = held_out_cases(feats, args.prompts)
    model = load_model(args.model, args.device)
    with _bar(sum(len(c) for c in cases.values()), "feature effects") as bar:
        effects, rows = feature_effects(
            model, args.sae.resolve(), sae.meta["module"], cases, edit=args.edit, value=args.value, progress=bar.update
        )
    labelled_grid(rows).save(out.with_name(out.stem + "_effects.png"))
    report = [
        {"feature": e.feature, "changed": e.changed, "became": e.became, "only": e.single_attribute()} for e in effects
    ]
    summary = {"edit": args.edit, "value": args.value, "on": args.on, "effects": report}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    for e in effects:
        only = e.single_attribute()
        tag = f"  <- changes only {only} (to {e.became[only]})" if only else ""
        print(f"feature {e.feature}: changed " + ", ".join(f"{a} {100 * v:.0f} %" for a, v in e.changed.items()) + tag)
