"""Point-wise operators (REFERENCE.md §1), NaN-safe where the research code was not.

Shapes: ``x`` is ``[B, ...]``; every float parameter is a ``[B]`` tensor (one value per frame).
"""

from __future__ import annotations

import torch

from ._util import per_sample, seeded_normal
from .spec import OperatorSpec, ParamSpec, register

__all__: list[str] = []  # operators are reached through the registry

_EPS = 1e-6
_VAL = ParamSpec("float", 0.0, -30.0, 30.0, identity=0.0)


def _add(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x + per_sample(value, x)


def _subtract(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x - per_sample(value, x)


def _multiply(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x * per_sample(factor, x)


def _weight(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    # the thesis' word-weight control: scale by (1 + δ)
    return x * (1.0 + per_sample(delta, x))


def _noise(x: torch.Tensor, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    # one seeded field shared by every frame (temporally coherent), scaled per frame
    return x + per_sample(std, x) * seeded_normal(x.shape[1:], seed, x)


def _threshold(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < per_sample(r, x), torch.zeros_like(x), x)


def _soft_threshold(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # sign(x)·max(|x| − r, 0); torch.sign(0) = 0, so no x/|x| division and no NaN at 0
    return torch.sign(x) * torch.clamp(x.abs() - per_sample(r, x), min=0.0)


def _invert(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # 1/r − x; |r| is kept ≥ 1e-3 so the term stays finite as r → 0 (sign kept, 0 counts as +)
    r = per_sample(r, x)
    safe = torch.where(r < 0, torch.clamp(r, max=-1e-3), torch.clamp(r, min=1e-3))
    return 1.0 / safe - x


def _negate(x: torch.Tensor) -> torch.Tensor:
    return -x


def _power(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # sign-preserving power: defined for negative x, finite at 0 for p ≥ 0
    return torch.sign(x) * x.abs().pow(per_sample(p, x))


def _log(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    # log_base(|x| + ε), with |ln base| kept ≥ 1e-2 so base → 1 does not divide by zero
    ln_b = torch.log(per_sample(base, x))
    ln_b = torch.where(ln_b < 0, torch.clamp(ln_b, max=-1e-2), torch.clamp(ln_b, min=1e-2))
    return torch.log(x.abs() + _EPS) / ln_b


def _absolute(x: torch.Tensor) -> torch.Tensor:
    return x.abs()


def _clamp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    lo, hi = per_sample(lo, x), per_sample(hi, x)
    return torch.minimum(torch.maximum(x, torch.minimum(lo, hi)), torch.maximum(lo, hi))


def _rescale(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    # min–max rescale of each sample (over all its elements) into [lo, hi]
    flat = x.reshape(x.shape[0], -1)
    mn = per_sample(flat.min(dim=1).values, x)
    mx = per_sample(flat.max(dim=1).values, x)
    unit = (x - mn) / torch.clamp(mx - mn, min=_EPS)
    return per_sample(lo, x) + unit * (per_sample(hi, x) - per_sample(lo, x))


def _gaussian(x: torch.Tensor, value: torch.Tensor, sigma: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    # add value · exp(−d²/2σ²), a 2-D bump centred at (cx, cy) (fractions of width, height)
    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    dy = ys.view(1, h, 1) - cy.to(x).view(-1, 1, 1)
    dx = xs.view(1, 1, w) - cx.to(x).view(-1, 1, 1)
    s = torch.clamp(sigma.to(x), min=1e-3).view(-1, 1, 1)
    bump = torch.exp(-(dx**2 + dy**2) / (2 * s**2))  # [B, H, W]
    return x + value.to(x).view(-1, 1, 1, 1) * bump.unsqueeze(1)


_F = "float"
register(OperatorSpec("add", "pointwise", _add, {"value": _VAL}, doc="x + value"))
register(OperatorSpec("subtract", "pointwise", _subtract, {"value": _VAL}, doc="x − value"))
register(OperatorSpec("multiply", "pointwise", _multiply, {"factor": ParamSpec(_F, 1.0, -10.0, 10.0, identity=1.0)}, doc="x · factor"))
register(OperatorSpec("weight", "pointwise", _weight, {"delta": ParamSpec(_F, 0.0, -5.0, 10.0, identity=0.0)}, doc="x · (1 + delta); word weighting on text conditioning"))
register(OperatorSpec("noise", "pointwise", _noise, {"std": ParamSpec(_F, 0.0, 0.0, 5.0, identity=0.0), "seed": ParamSpec("int", 0, 0, 2**31 - 1)}, doc="x + std · N(0, 1), one seeded field for all frames"))
register(OperatorSpec("threshold", "pointwise", _threshold, {"r": ParamSpec(_F, 0.0, 0.0, 10.0, identity=0.0)}, doc="0 where |x| < r"))
register(OperatorSpec("soft_threshold", "pointwise", _soft_threshold, {"r": ParamSpec(_F, 0.0, 0.0, 10.0, identity=0.0)}, doc="sign(x)·max(|x| − r, 0)"))
register(OperatorSpec("invert", "pointwise", _invert, {"r": ParamSpec(_F, 1.0, -10.0, 10.0)}, doc="1/r − x (|r| ≥ 1e-3)"))
register(OperatorSpec("negate", "pointwise", _negate, {}, doc="−x"))
register(OperatorSpec("power", "pointwise", _power, {"p": ParamSpec(_F, 1.0, 0.0, 5.0, identity=1.0)}, doc="sign(x)·|x|^p"))
register(OperatorSpec("log", "pointwise", _log, {"base": ParamSpec(_F, 2.718281828, 0.01, 10.0)}, doc="log_base(|x| + 1e-6)"))
register(OperatorSpec("absolute", "pointwise", _absolute, {}, doc="|x|"))
register(OperatorSpec("clamp", "pointwise", _clamp, {"lo": ParamSpec(_F, -1.0, -100.0, 100.0), "hi": ParamSpec(_F, 1.0, -100.0, 100.0)}, doc="clamp x to [lo, hi]"))
register(OperatorSpec("rescale", "pointwise", _rescale, {"lo": ParamSpec(_F, -1.0, -100.0, 100.0), "hi": ParamSpec(_F, 1.0, -100.0, 100.0)}, doc="min–max rescale each sample to [lo, hi]"))
register(OperatorSpec(
    "gaussian", "pointwise", _gaussian,
    {"value": _VAL, "sigma": ParamSpec(_F, 0.2, 0.001, 2.0), "cx": ParamSpec(_F, 0.5, 0.0, 1.0), "cy": ParamSpec(_F, 0.5, 0.0, 1.0)},
    ranks=(4,), doc="add value · a 2-D Gaussian bump",
))
