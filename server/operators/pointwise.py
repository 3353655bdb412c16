"""Point-wise operators (Dzwonczyk et al., DAFx 2024), NaN-safe where the research code was not:
no x/|x| at 0, no 1/r at r = 0, no log 0, no division by log 1.

Shapes: ``x`` is ``[B, ...]``; every float parameter is a ``[B]`` tensor (one value per frame).
"""

from __future__ import annotations

import torch

from ._util import per_sample, seeded_normal
from .spec import implements

__all__: list[str] = []  # operators are reached through the registry

_EPS = 1e-6


@implements("add")
def _add(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x + per_sample(value, x)


@implements("subtract")
def _subtract(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x - per_sample(value, x)


@implements("multiply")
def _multiply(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x * per_sample(factor, x)


@implements("weight")
def _weight(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    # the thesis' word-weight control: scale by (1 + δ)
    return x * (1.0 + per_sample(delta, x))


@implements("noise")
def _noise(x: torch.Tensor, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    # one seeded field shared by every frame (temporally coherent), scaled per frame
    return x + per_sample(std, x) * seeded_normal(x.shape[1:], seed, x)


@implements("threshold")
def _threshold(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < per_sample(r, x), torch.zeros_like(x), x)


@implements("soft_threshold")
def _soft_threshold(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # sign(x)·max(|x| − r, 0); torch.sign(0) = 0, so no x/|x| division and no NaN at 0
    return torch.sign(x) * torch.clamp(x.abs() - per_sample(r, x), min=0.0)


@implements("invert")
def _invert(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # 1/r − x; |r| is kept ≥ 1e-3 so the term stays finite as r → 0 (sign kept, 0 counts as +)
    r = per_sample(r, x)
    safe = torch.where(r < 0, torch.clamp(r, max=-1e-3), torch.clamp(r, min=1e-3))
    return 1.0 / safe - x


@implements("negate")
def _negate(x: torch.Tensor) -> torch.Tensor:
    return -x


@implements("power")
def _power(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # sign-preserving power: defined for negative x, finite at 0 for p ≥ 0
    return torch.sign(x) * x.abs().pow(per_sample(p, x))


@implements("log")
def _log(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    # log_base(|x| + ε), with |ln base| kept ≥ 1e-2 so base → 1 does not divide by zero
    ln_b = torch.log(per_sample(base, x))
    ln_b = torch.where(ln_b < 0, torch.clamp(ln_b, max=-1e-2), torch.clamp(ln_b, min=1e-2))
    return torch.log(x.abs() + _EPS) / ln_b


@implements("absolute")
def _absolute(x: torch.Tensor) -> torch.Tensor:
    return x.abs()


@implements("clamp")
def _clamp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    lo, hi = per_sample(lo, x), per_sample(hi, x)
    return torch.minimum(torch.maximum(x, torch.minimum(lo, hi)), torch.maximum(lo, hi))


@implements("rescale")
def _rescale(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    # min–max rescale of each sample (over all its elements) into [lo, hi]
    flat = x.reshape(x.shape[0], -1)
    mn = per_sample(flat.min(dim=1).values, x)
    mx = per_sample(flat.max(dim=1).values, x)
    unit = (x - mn) / torch.clamp(mx - mn, min=_EPS)
    return per_sample(lo, x) + unit * (per_sample(hi, x) - per_sample(lo, x))


@implements("gaussian")
def _gaussian(
    x: torch.Tensor, value: torch.Tensor, sigma: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor
) -> torch.Tensor:
    # add value · exp(−d²/2σ²), a 2-D bump centred at (cx, cy) (fractions of width, height)
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    dy = ys.view(1, h, 1) - cy.to(x).view(-1, 1, 1)
    dx = xs.view(1, 1, w) - cx.to(x).view(-1, 1, 1)
    s = torch.clamp(sigma.to(x), min=1e-3).view(-1, 1, 1)
    bump = torch.exp(-(dx**2 + dy**2) / (2 * s**2))  # [B, H, W]
    return x + value.to(x).view(-1, 1, 1, 1) * bump.unsqueeze(1)
