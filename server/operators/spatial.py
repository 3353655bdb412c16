"""Spatial and morphological operators on ``[B, C, H, W]`` maps (Broad et al., "Network Bending", 2022).

Spatial transforms (Broad, ComfyUI) resample every channel with one per-sample affine map;
positive angles turn the content clockwise on screen, ``scale`` > 1 zooms in, translations are
fractions of the map size (``tx`` = 0.25 moves the content a quarter width to the right).
Morphology is grey-scale with a flat square or elliptical element of ``size`` pixels per side;
``size`` is per sample and rounded to the nearest integer, 1 being the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .spec import implements

__all__ = ["affine", "dilate", "erode"]


def affine(x: torch.Tensor, theta: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Resample ``x`` [B, C, H, W] through the output→input maps ``theta`` [B, 2, 3] (normalised coords)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@implements("rotate")
def _rotate(x: torch.Tensor, degrees: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    h, w = x.shape[-2:]
    a = degrees.to(torch.float64) * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    # inverse rotation in pixel space, expressed in normalised coordinates (aspect-correct)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = c, s * h / w
    theta[:, 1, 0], theta[:, 1, 1] = -s * w / h, c
    return affine(x, theta.to(x.device), padding)


@implements("scale")
def _scale(x: torch.Tensor, factor: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    f = torch.clamp(factor.to(torch.float64), min=1e-3)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / f
    return affine(x, theta.to(x.device), padding)


@implements("translate")
def _translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * tx.to(torch.float64)
    theta[:, 1, 2] = -2.0 * ty.to(torch.float64)
    return affine(x, theta.to(x.device), padding)


@implements("flip")
def _flip(x: torch.Tensor, axis: str = "horizontal") -> torch.Tensor:
    return torch.flip(x, dims=(-1,) if axis == "horizontal" else (-2,))


# ----------------------------------------------------------------------------- morphology
def _offsets(k: int, shape: str) -> list[tuple[int, int]]:
    lo = -((k - 1) // 2)
    r = (k - 1) / 2
    pts = [(dy, dx) for dy in range(lo, lo + k) for dx in range(lo, lo + k)]
    if shape == "ellipse":
        c = lo + r  # centre of the window (0 for odd k)
        # the disc of radius r about the window centre; + 0.5 keeps even sizes non-empty
        pts = [(dy, dx) for dy, dx in pts if (dy - c) ** 2 + (dx - c) ** 2 <= r * r + 0.5]
    return pts


def _dilate_k(x: torch.Tensor, k: int, shape: str, reflect: bool = False) -> torch.Tensor:
    """Max over the window (offsets −lo…hi); ``reflect`` mirrors the window (hi…−lo), which
    erosion needs so that opening ≤ x ≤ closing also holds for even sizes."""
    if k <= 1:
        return x
    lo = (k - 1) // 2
    hi = k - 1 - lo
    if reflect:
        lo, hi = hi, lo
    padded = F.pad(x, (lo, hi, lo, hi), value=float("-inf"))
    h, w = x.shape[-2:]
    if shape == "square":  # separable: k shifted maxima along rows, then k along columns
        rows = padded[..., :, 0:w]
        for d in range(1, k):
            rows = torch.maximum(rows, padded[..., :, d : d + w])
        out = rows[..., 0:h, :]
        for d in range(1, k):
            out = torch.maximum(out, rows[..., d : d + h, :])
        return out
    out = None
    for dy, dx in _offsets(k, shape):
        if reflect:
            dy, dx = -dy, -dx
        win = padded[..., dy + lo : dy + lo + h, dx + lo : dx + lo + w]
        out = win if out is None else torch.maximum(out, win)
    return out


def _per_size(x: torch.Tensor, size: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn(x_rows, k)`` grouped by each sample's rounded size."""
    ks = torch.round(size.detach().to("cpu", torch.float64)).clamp(min=1).to(torch.int64)
    if bool((ks == ks[0]).all()):
        return fn(x, int(ks[0]))
    out = torch.empty_like(x)
    for k in torch.unique(ks).tolist():
        rows = (ks == k).nonzero().flatten().to(x.device)
        out[rows] = fn(x[rows], int(k))
    return out


def dilate(x: torch.Tensor, k: int, shape: str = "square") -> torch.Tensor:
    """Grey-scale dilation: max over a k×k (square) or elliptical window per channel."""
    return _dilate_k(x, k, shape)


def erode(x: torch.Tensor, k: int, shape: str = "square") -> torch.Tensor:
    """Grey-scale erosion: min over the window (dilation of −x, negated)."""
    return -_dilate_k(-x, k, shape, reflect=True)


@implements("dilate")
def _dilate(x: torch.Tensor, size: torch.Tensor, shape: str = "square") -> torch.Tensor:
    return _per_size(x, size, lambda t, k: dilate(t, k, shape))


@implements("erode")
def _erode(x: torch.Tensor, size: torch.Tensor, shape: str = "square") -> torch.Tensor:
    return _per_size(x, size, lambda t, k: erode(t, k, shape))


@implements("gradient")
def _gradient(x: torch.Tensor, size: torch.Tensor, shape: str = "square") -> torch.Tensor:
    return _per_size(x, size, lambda t, k: dilate(t, k, shape) - erode(t, k, shape))


@implements("open")
def _open(x: torch.Tensor, size: torch.Tensor, shape: str = "square") -> torch.Tensor:
    return _per_size(x, size, lambda t, k: dilate(erode(t, k, shape), k, shape))


@implements("close")
def _close(x: torch.Tensor, size: torch.Tensor, shape: str = "square") -> torch.Tensor:
    return _per_size(x, size, lambda t, k: erode(dilate(t, k, shape), k, shape))
