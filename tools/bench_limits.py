"""How close a model's U-Net runs to what this machine can do, and what a lower precision costs
in pixels — the second and third parts of ``bendbridge bench model``.

- *Against the limit*: the FLOPs of one U-Net row (one sample, one denoising step) counted by
  PyTorch's ``FlopCounterMode`` at the model's latent size, the row's time at batch 16, and the
  achieved GFLOP/s beside this machine's own dense-matmul peak, measured in the same run and the
  same precision (square matmuls sized to take about 0.2 s).
- *Where the time goes*: one U-Net row's operators, grouped by kind (convolutions, matmuls,
  fused attention, normalisation, element-wise, copies), with each kind's share of the time
  (``torch.profiler`` self time) and, for the kinds that do arithmetic, their own GFLOP/s: what
  holds the whole row below the peak is read off this table.
- *Precision against fp32*: frames of the demo song (its bends and per-frame parameters) rendered
  in fp32 and in each other precision; max and mean absolute difference per pixel (0–255) and
  the seconds per frame of each.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["unet_row_flops", "matmul_peak", "row_speed", "row_breakdown", "precision_difference"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _unet_inputs(model, batch: int, dtype: torch.dtype):
    """Latents [B, C, h, w], a timestep and the U-Net's text arguments (random embeddings [B, T, D];
    SDXL's added conditioning) of the model's own sizes."""
    unet, vae = model.pipe.unet, model.pipe.vae
    side = model.defaults.size // 2 ** (len(vae.config.block_out_channels) - 1)  # the VAE's down-sampling
    x = torch.randn(batch, unet.config.in_channels, side, side, dtype=dtype).contiguous(
        memory_format=torch.channels_last
    )
    from bendbridge.server.render.conditioning import stand_in_conditioning

    seq, size = model.pipe.tokenizer.model_max_length, model.defaults.size
    return x, torch.tensor(500), stand_in_conditioning(unet.config, batch, seq, size, size, "cpu", dtype, random=True)


def unet_row_flops(model) -> float:
    """FLOPs of one U-Net row (multiply-adds count 2), at the model's image size."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, enc = _unet_inputs(model, 1, model.pipe.unet.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.pipe.unet(x, t, **enc)
    return float(counter.get_total_flops())


def row_speed(model, batch: int = 16, repeats: int = 3) -> float:
    """Seconds per U-Net row at ``batch`` (median of ``repeats`` after a warm-up)."""
    x, t, enc = _unet_inputs(model, batch, model.pipe.unet.dtype)
    times = []
    with torch.no_grad():
        model.pipe.unet(x, t, **enc)
        for _ in range(repeats):
            start = time.perf_counter()
            model.pipe.unet(x, t, **enc)
            times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


OP_KINDS = {  # aten operator (profiler name without "aten::") → kind
    **dict.fromkeys(("mkldnn_convolution", "convolution", "_convolution", "conv2d", "cudnn_convolution"),
                    "convolutions"),
    **dict.fromkeys(("addmm", "mm", "bmm", "baddbmm", "matmul", "linear"), "matmuls"),
    **dict.fromkeys(("native_group_norm", "group_norm", "native_layer_norm", "layer_norm"), "normalisation"),
    **dict.fromkeys(("add", "add_", "mul", "mul_", "div", "div_", "sub", "silu", "gelu", "sigmoid", "tanh", "exp",
                     "neg", "relu", "pow", "rsqrt", "sin", "cos", "clamp", "softmax", "_softmax"), "element-wise"),
    **dict.fromkeys(("copy_", "cat", "clone", "contiguous", "_to_copy", "to", "upsample_nearest2d"), "copies"),
}  # fmt: skip
KIND_ORDER = ("convolutions", "matmuls", "attention", "normalisation", "element-wise", "copies", "other")
OUTSIDE = "outside"  # the wall time no operator accounts for: Python, module calls, hooks, dispatch


def _kind(op: str) -> str:
    name = op.removeprefix("aten::").removeprefix("aten.").split(".")[0]
    return "attention" if "scaled_dot_product" in name else OP_KINDS.get(name, "other")


def row_breakdown(model, batch: int = 16, repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Per operator kind: (seconds per U-Net row, FLOPs per row) at ``batch``, from the profiler's
    self time of each aten operator (its own time, without the operators it calls); and
    :data:`OUTSIDE`, the profiled wall time that no operator accounts for."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    unet = model.pipe.unet
    x, t, enc = _unet_inputs(model, batch, unet.dtype)
    seconds = dict.fromkeys(KIND_ORDER, 0.0)
    flops = dict.fromkeys(KIND_ORDER, 0.0)
    with torch.no_grad():
        unet(x, t, **enc)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(repeats):
                unet(x, t, **enc)
            wall = (time.perf_counter() - start) / repeats / batch
        with FlopCounterMode(display=False) as counter:
            unet(x, t, **enc)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            seconds[_kind(event.key)] += event.self_cpu_time_total / 1e6 / repeats / batch
    for op, n in counter.get_flop_counts()["Global"].items():
        flops[_kind(str(op))] += n / batch
    out = {k: (seconds[k], flops[k]) for k in KIND_ORDER}
    out[OUTSIDE] = (max(0.0, wall - sum(seconds.values())), 0.0)
    return out


def matmul_peak(dtype: torch.dtype, target_s: float = 0.2, repeats: int = 3) -> tuple[float, int, str]:
    """This machine's dense-product rate in ``dtype`` (FLOP/s), the square size it was measured at
    and the kernel: the better of ``a @ b`` and the same product as a 1×1 convolution (oneDNN's
    path, which the U-Net's convolutions take; for bf16 without native support PyTorch's matmul
    falls back to a reference loop that a model never uses). Sizes double from 128 until one
    product takes ``target_s`` / 4."""
    best = (0.0, 0, "")
    for kernel in ("matmul", "conv1x1"):
        n = 64
        while True:
            n *= 2
            run = _product(kernel, n, dtype)
            start = time.perf_counter()
            run()
            if time.perf_counter() - start >= target_s / 4 or n >= 4096:
                break
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rate = 2 * n**3 / statistics.median(times)
        best = max(best, (rate, n, kernel))
    return best


def _product(kernel: str, n: int, dtype: torch.dtype):
    """An n×n by n×n product as a matmul, or as a 1×1 convolution of n channels over n pixels."""
    if kernel == "matmul":
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        return lambda: a @ b
    x = torch.randn(1, n, n, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)

    def conv():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w)

    return conv


def precision_difference(models: dict, frames: int = 8) -> dict[str, dict[str, float]]:
    """Render the demo's first ``frames`` frames on each of ``models`` (precision name → the same
    model loaded in it; ``fp32`` among them): per precision, seconds per frame and the max / mean
    absolute pixel difference from fp32 (0–255)."""
    from bendbridge.bridge.bounce import BounceSpec, plan_bounce
    from bendbridge.bridge.demo_song import DEMO_CONFIG, DEMO_FAST_CONFIG, write_demo
    from bendbridge.server.model import FAST_MODEL
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    fast = models["fp32"].path == FAST_MODEL
    demo = write_demo(Path(tempfile.mkdtemp(prefix="bb-precision-")), DEMO_FAST_CONFIG if fast else DEMO_CONFIG)
    bp = plan_bounce(BounceSpec(audio=demo["audio"], config=demo["config"], midi=demo["midi"], out=Path("x.mp4")))
    specs = [FrameSpec(params=p) for p in bp.params[:frames]]
    images, seconds = {}, {}
    for name, model in models.items():
        renderer = Renderer(model, RenderConfig(bp.settings, bp.plan, max_batch=8))
        renderer.render(specs[:1])  # warm-up
        renderer.prefix.clear()
        start = time.perf_counter()
        images[name] = np.stack([r.image for r in renderer.render(specs)]).astype(np.int16)
        seconds[name] = (time.perf_counter() - start) / len(specs)
    out = {}
    for name, img in images.items():
        diff = np.abs(img - images["fp32"])
        out[name] = {"s_per_frame": seconds[name], "max": float(diff.max()), "mean": float(diff.mean())}
    return out
