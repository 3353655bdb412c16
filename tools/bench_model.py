"""Seconds per frame of the embedded model (or ``--model DIR``): batch 1 and batch 8, with and
without classifier-free guidance, measured interleaved in one run; then, per precision, the U-Net
row's achieved GFLOP/s against this machine's matmul peak in the same precision, and the demo's
frames in each precision against fp32 (see ``bench_limits``).

    bendbridge bench model [--model DIR] [--steps N] [--repeats R] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precisions", default="fp32,bf16", help="compared on the CPU (fp16 needs a GPU)")
    ap.add_argument("--frames", type=int, default=8, help="demo frames rendered in each precision")
    args = ap.parse_args(argv)

    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.model import default_device, load_model
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    from .bench_engine import _side_by_side

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    model = load_model(args.model, device)
    runs = {}
    for label, guidance in (("cfg", None), ("no-cfg", 1.0)):  # with and without classifier-free guidance
        settings = RenderSettings(("a red circle on a blue background",), steps=args.steps, guidance=guidance)
        # no bends: with sharing on, every step would be a cached prefix and only decoding would be timed
        r = Renderer(model, RenderConfig(settings, max_batch=8, share_prefix=False))
        if guidance is None:
            print(
                f"model {model.name}: {r.width}x{r.height}, {r.steps} steps, guidance {r.guidance}, {device} "
                f"({torch.get_num_threads()} threads)"
            )
        for b in (1, 8):
            frames = [FrameSpec(seed=i) for i in range(b)]
            runs[(label, b)] = lambda r=r, frames=frames: r.render(frames)
    t = _side_by_side(runs, args.repeats, device)
    print(f"{'':<8}{'batch 1':>14}{'batch 8':>14}{'batch-8 speed-up':>20}")
    for label in ("cfg", "no-cfg"):
        s1, s8 = t[(label, 1)], t[(label, 8)] / 8
        print(f"{label:<8}{s1:>11.3f} s/f{s8:>11.3f} s/f{s1 / s8:>19.2f}x")
    print(f"guidance costs ×{t[('cfg', 8)] / t[('no-cfg', 8)]:.2f} at batch 8")
    _limits(args, [p.strip() for p in args.precisions.split(",") if p.strip()])
    return 0


def _limits(args: argparse.Namespace, precisions: list[str]) -> None:
    """The U-Net row against the matmul peak, per precision; the demo in each precision vs fp32."""
    from bendbridge.server.model import load_model, native_bf16, precision_dtype

    from .bench_limits import matmul_peak, precision_difference, row_speed, unet_row_flops

    for name in precisions:
        precision_dtype(name, torch.device("cpu"))  # a wrong name or fp16 on the CPU is one line
    print(
        f"\nagainst the limit: CPU {torch.backends.cpu.get_cpu_capability()}, native bf16 "
        f"{'yes' if native_bf16() else 'no (emulated)'}, {torch.get_num_threads()} threads, U-Net rows at batch 16"
    )
    print(f"{'':<6}{'GFLOP/row':>10}{'ms/row':>9}{'GFLOP/s':>9}{'peak GFLOP/s':>14}{'of peak':>9}  peak measured on")
    models = {name: load_model(args.model, "cpu", precision=name) for name in dict.fromkeys(["fp32", *precisions])}
    peaks = {}
    for name in precisions:
        model = models[name]
        flops, seconds = unet_row_flops(model), row_speed(model)
        peak, n, kernel = peaks[name] = matmul_peak(model.pipe.unet.dtype)
        achieved = flops / seconds
        print(
            f"{name:<6}{flops / 1e9:>10.3f}{seconds * 1000:>9.2f}{achieved / 1e9:>9.1f}{peak / 1e9:>14.1f}"
            f"{achieved / peak:>9.0%}  {kernel} {n}x{n}"
        )
    _breakdown(models["fp32"], peaks.get("fp32") or matmul_peak(torch.float32))
    diffs = precision_difference(models, args.frames)
    print(f"\nthe demo's first {args.frames} frames, each precision against fp32 (pixel values 0-255)")
    print(f"{'':<6}{'s/frame':>9}{'max diff':>10}{'mean diff':>11}")
    for name, d in diffs.items():
        print(f"{name:<6}{d['s_per_frame']:>9.3f}{d['max']:>10.0f}{d['mean']:>11.3f}")


def _breakdown(model, peak: tuple[float, int, str]) -> None:
    """Where an fp32 U-Net row's time goes, by operator kind, and each kind's own GFLOP/s."""
    from .bench_limits import row_breakdown

    kinds = row_breakdown(model)
    total = sum(s for s, _ in kinds.values())
    print("\nwhere an fp32 U-Net row's time goes (batch 16, profiler self time per operator kind; outside: the "
          "wall time no operator accounts for — Python, module calls, hooks, dispatch)")  # fmt: skip
    print(f"{'':<14}{'ms/row':>8}{'share':>8}{'GFLOP/row':>11}{'GFLOP/s':>9}{'of peak':>9}")
    for kind, (seconds, flops) in kinds.items():
        rate = f"{flops / seconds / 1e9:>9.1f}{flops / seconds / peak[0]:>9.0%}" if flops and seconds else ""
        counted = f"{flops / 1e9:>11.3f}" if flops or kind != "attention" else f"{'not counted':>12}"
        print(f"{kind:<14}{seconds * 1000:>8.2f}{seconds / total:>8.0%}{counted}{rate}")


if __name__ == "__main__":
    raise SystemExit(main())
