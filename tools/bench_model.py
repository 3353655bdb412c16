"""Seconds per frame of the embedded model (or ``--model DIR``): batch 1 and batch 8, with and
without classifier-free guidance, measured interleaved in one run.

    bendbridge bench model [--model DIR] [--steps N] [--repeats R]
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
