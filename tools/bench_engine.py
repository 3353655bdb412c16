"""Benchmark of the bending engine, measured side by side in one run.

1. hook mechanism overhead: 5 module targets with identity parameters vs no plan (goal ≤ 2 %),
   and the same 5 targets with real (non-identity) multiplies;
2. the cost of each operator family (steering included) on a real activation shape, against one
   U-Net call;
3. batched vs one-at-a-time rendering of 16 frames that all have different parameters.

Runs are interleaved (A, B, A, B, …) and medians compared, so machine noise hits both sides.
``--unet FAMILY`` (sd1, sd2-base, sd2-v, sd-turbo, sdxl, sdxl-turbo) builds a random-weight pipeline
of that family's full size from the shipped configs (the real cost, no download); the default is
the embedded model. Section [1] is the bent-vs-unbent comparison.

    bendbridge bench engine [--model DIR | --unet sdxl] [--device cuda] [--size 512]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["main"]


def _device_text(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _side_by_side(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_timed(f, device))
    return {k: statistics.median(v) for k, v in times.items()}


def _pick_targets(layers, n: int = 5) -> list[str]:
    """n module targets spread over the U-Net: blocks first, then resnets."""
    blocks = [
        layer.name
        for layer in layers
        if layer.name.count(".") <= 1 and layer.kind.endswith(("Block2D", "CrossAttn", "Block2DCrossAttn"))
    ]
    names = blocks + [layer.name for layer in layers if layer.kind == "ResnetBlock2D" and layer.name not in blocks]
    step = max(1, len(names) // n)
    return names[::step][:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="diffusers folder (default: embedded model)")
    ap.add_argument("--unet", default="embedded", help="embedded, or a family for a full-size random-weight model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--size", type=int, default=None, help="image size in pixels")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import default_device, load_model
    from bendbridge.server.render import RenderConfig, Renderer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.unet == "embedded":
        model = load_model(args.model, device)
    else:
        from bendbridge.server.model_families import random_pipeline

        model = random_pipeline(args.unet, device, dtype)
        args.steps = args.steps or min(4, model.defaults.steps)  # the cost per step is what is compared
    settings = RenderSettings(
        ("a red circle on a blue background",), width=args.size, height=args.size, steps=args.steps
    )
    # no prefix sharing anywhere here: with no bends every step would be a cached prefix, and the
    # hook overhead and batching are measured on whole denoising passes
    probe = Renderer(model, RenderConfig(settings, max_batch=args.batch, share_prefix=False))
    print(
        f"device {device} ({_device_text(device)}), "
        f"model {model.name if args.unet == 'embedded' else args.unet + '-size, random weights'}, "
        f"{probe.width}x{probe.height}, {probe.steps} steps, guidance {probe.guidance}"
    )
    targets = _pick_targets(probe.layers)
    _hook_overhead(model, probe, targets, args, device)
    _operator_costs(probe, args, device, dtype)
    _batched_speedup(model, probe, targets, args, device)
    return 0


def _hook_overhead(model, probe, targets: list[str], args: argparse.Namespace, device: torch.device) -> None:
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    def with_plan(factor: str) -> Renderer:
        plan = BendPlan.from_specs([f"multiply:factor={factor}@{t}" for t in targets])
        return Renderer(model, RenderConfig(probe.config.settings, plan, max_batch=args.batch, share_prefix=False))

    ident, active = with_plan("1"), with_plan("1.001")
    frame = [FrameSpec()]
    t = _side_by_side(
        {
            "plain": lambda: probe.render(frame),
            "identity": lambda: ident.render(frame),
            "active": lambda: active.render(frame),
        },
        args.repeats,
        device,
    )
    print(f"\n[1] hook overhead, 1 frame, 5 module targets: {', '.join(targets)}")
    print(f"    no plan             {t['plain'] * 1e3:9.2f} ms/frame")
    print(
        f"    5 identity bends    {t['identity'] * 1e3:9.2f} ms/frame   "
        f"overhead {100 * (t['identity'] / t['plain'] - 1):+.2f} %  (goal ≤ 2 %)"
    )
    print(
        f"    5 multiply bends    {t['active'] * 1e3:9.2f} ms/frame   "
        f"overhead {100 * (t['active'] / t['plain'] - 1):+.2f} %"
    )


def _operator_costs(probe, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    from bendbridge.protocol.operators import R6_PLANES
    from bendbridge.server.operators import get_operator

    mid = next(layer for layer in probe.layers if layer.name == "mid_block")
    up = max(
        (layer for layer in probe.layers if layer.kind == "ResnetBlock2D"),
        key=lambda layer: layer.shape[1] * layer.shape[2],
    )
    rows = 2 * args.batch if probe.guided else args.batch
    unet_call = _unet_call_time(probe, rows, args.repeats, device)
    print(
        f"\n[2] operator cost per call, {rows} rows (a guided batch of {args.batch}); "
        f"one U-Net call = {unet_call * 1e3:.2f} ms"
    )
    lat = (4, probe.height // probe.vae_factor, probe.width // probe.vae_factor)
    cases = [
        ("pointwise", "add", {"value": 1.0}, up.shape),
        ("pointwise", "noise", {"std": 0.5}, up.shape),
        ("pointwise", "soft_threshold", {"r": 0.5}, up.shape),
        ("channel", "rotate_plane", {"angle": 1.0}, lat),
        ("channel", "rotate_r6", {f"a{i}{j}": 0.3 for i, j in R6_PLANES}, lat),
        ("channel", "rotate_plane", {"angle": 1.0}, up.shape),
        ("channel", "hadamard", {}, lat),
        ("spatial", "rotate", {"degrees": 30.0}, up.shape),
        ("spatial", "scale", {"factor": 1.2}, up.shape),
        ("morphological", "dilate", {"size": 3.0}, up.shape),
        ("morphological", "dilate", {"size": 5.0, "shape": "ellipse"}, mid.shape),
        *_steering_cases(up.shape, device, dtype),
    ]
    for family, name, params, shape in cases:
        op = get_operator(name)
        x = torch.randn(rows, *shape, device=device, dtype=dtype)
        static = {k: v for k, v in params.items() if not op.spec.params[k].per_frame}
        per = {
            k: torch.full((rows,), float(v), dtype=torch.float64, device=device)
            for k, v in params.items()
            if op.spec.params[k].per_frame
        }
        ms = _side_by_side(
            {"op": lambda op=op, x=x, static=static, per=per: op.fn(x, **static, **per)}, args.repeats, device
        )["op"]
        print(
            f"    {family:<14} {name:<15} {str(tuple(shape)):<18} {ms * 1e3:8.3f} ms  "
            f"= {100 * ms / unet_call:6.2f} % of a U-Net call"
        )


def _steering_cases(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> list[tuple]:
    """Steering bends with what their files hand the operator: a vector [C], an autoencoder of 8·C
    features (k = 8) — random, the cost does not depend on the values."""
    from bendbridge.server.steering.sae import SparseAutoencoder

    c = shape[0]
    v = torch.randn(c, device=device, dtype=dtype)
    sae = SparseAutoencoder(c, 8 * c, 8).requires_grad_(False).to(device=device, dtype=dtype)
    return [
        ("steering", "steer", {"vector": v, "alpha": 1.0, "gate": "none"}, shape),
        ("steering", "steer", {"vector": v, "alpha": 1.0, "gate": "salience"}, shape),
        ("steering", "sae_feature", {"sae": sae, "feature": 3, "scale": 2.0, "clamp": -1.0}, shape),
    ]


def _batched_speedup(model, probe, targets: list[str], args: argparse.Namespace, device: torch.device) -> None:
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    plan = BendPlan.from_specs(
        ["rotate_plane:angle=0@latent:step=0", f"multiply:factor=1@{targets[0]}", "dilate:size=1@mid_block"]
    )
    r = Renderer(model, RenderConfig(probe.config.settings, plan, max_batch=args.batch, share_prefix=False))
    frames = [
        FrameSpec(
            params={
                "rotate_plane": {"angle": 0.2 * i},
                "multiply": {"factor": 1 + 0.05 * i},
                "dilate": {"size": 1 + 2 * (i % 2)},
            }
        )
        for i in range(args.frames)
    ]
    reps = max(1, args.repeats // 3)
    t = _side_by_side(
        {"batched": lambda: r.render(frames), "single": lambda: [r.render([f]) for f in frames]}, reps, device
    )
    print(f"\n[3] {args.frames} frames with different parameters")
    print(f"    one at a time       {args.frames / t['single']:8.2f} frames/s")
    print(
        f"    batched (≤{args.batch})        {args.frames / t['batched']:8.2f} frames/s   "
        f"speed-up ×{t['single'] / t['batched']:.2f}"
    )


def _unet_call_time(r, rows: int, repeats: int, device: torch.device) -> float:
    c, h, w = r.unet.config.in_channels, r.height // r.vae_factor, r.width // r.vae_factor
    x = torch.randn(rows, c, h, w, device=device, dtype=r.dtype)
    from bendbridge.server.render.conditioning import stand_in_conditioning

    text = stand_in_conditioning(r.unet.config, rows, r.seq_len, r.height, r.width, device, r.dtype, random=True)
    with torch.no_grad():
        return _side_by_side({"u": lambda: r.unet(x, 500, **text)}, repeats, device)["u"]


if __name__ == "__main__":
    raise SystemExit(main())
