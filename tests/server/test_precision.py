"""--precision: the dtype each name means on each device, and the embedded model in bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bendbridge.protocol.render import PRECISIONS, RenderSettings
from bendbridge.server.model import ModelError, load_model, native_bf16, precision_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_fp16_on_cuda_and_bf16_only_on_a_cpu_that_has_it():
    assert precision_dtype("auto", CUDA) == torch.float16
    assert precision_dtype("auto", CPU) == (torch.bfloat16 if native_bf16() else torch.float32)
    assert [precision_dtype(p, CUDA) for p in PRECISIONS[1:]] == [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize(
    "name, device, match",
    [("fp16", CPU, "fp16 runs only on a GPU; on the CPU use fp32 or bf16"), ("fp64", CPU, "allowed: auto, fp32")],
)
def test_a_precision_that_cannot_run_is_named(name, device, match):
    with pytest.raises(ModelError, match=match):
        precision_dtype(name, device)


@pytest.mark.slow
def test_the_embedded_model_renders_in_bf16_within_a_few_levels_of_fp32():
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    settings = RenderSettings(("a yellow sun over a purple sea",), steps=3)
    images = {}
    for name in ("fp32", "bf16"):
        model = load_model(None, "cpu", precision=name)
        assert model.pipe.unet.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        frames = [FrameSpec(seed=s, params={}) for s in (1, 2)]
        images[name] = np.stack([r.image for r in Renderer(model, RenderConfig(settings)).render(frames)])
    diff = np.abs(images["bf16"].astype(int) - images["fp32"].astype(int))
    assert 0 < diff.mean() < 3 and diff.max() < 64  # the same picture, rounded differently
