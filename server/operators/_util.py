"""Private helpers shared by the operator families."""

from __future__ import annotations

import torch

__all__ = ["per_sample", "seeded_normal", "seeded_generator"]


def per_sample(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample parameter ``[B]`` viewed as ``[B, 1, 1, …]`` to broadcast against ``x``."""
    return p.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def seeded_normal(shape: torch.Size | tuple[int, ...], seed: int, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) field of ``shape`` drawn on the CPU from ``seed`` (identical on every device)."""
    return torch.randn(tuple(shape), generator=seeded_generator(seed)).to(device=like.device, dtype=like.dtype)
