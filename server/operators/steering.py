"""Steering operators: add a steering vector, edit one sparse-autoencoder feature.

Shapes: ``x`` is ``[B, C, H, W]``; ``alpha``, ``scale`` and ``clamp`` are ``[B]`` (one value per
frame). The file parameters arrive loaded for the current denoising step: ``vector`` a tensor
``[C]`` (added to every pixel) or ``[C, H, W]``; ``gate`` (static) how it is spread over the pixels; ``sae`` a
:class:`~bendbridge.server.steering.sae.SparseAutoencoder`.
"""

from __future__ import annotations

import torch

from bendbridge.server.steering.sae import load_sae_resource
from bendbridge.server.steering.vectors import load_steer_resource

from ._util import per_sample
from .spec import implements, loads

__all__: list[str] = []  # operators are reached through the registry

loads("steer", "vector")(load_steer_resource)
loads("sae_feature", "sae")(load_sae_resource)


def salience(x: torch.Tensor) -> torch.Tensor:
    """Where each frame's activation stands out from its mean: (‖x_p − x̄‖ / max_p ‖x_p − x̄‖)² in
    [0, 1]. [B, C, H, W] → [B, 1, H, W]. Objects stand out from flat backgrounds, so a vector added
    through it lands on them rather than tinting the whole frame."""
    dev = (x.float() - x.float().mean((2, 3), keepdim=True)).norm(dim=1, keepdim=True)
    return (dev / dev.amax((2, 3), keepdim=True).clamp_min(1e-12)).square().to(x.dtype)


@implements("steer")
def _steer(x: torch.Tensor, vector: torch.Tensor, alpha: torch.Tensor, gate: str = "salience") -> torch.Tensor:
    v = vector.to(device=x.device, dtype=x.dtype)
    v = v.reshape(1, -1, 1, 1) if v.ndim == 1 else v.unsqueeze(0)
    step = per_sample(alpha, x) * v
    return x + (step * salience(x) if gate == "salience" else step)


@implements("sae_feature")
def _sae_feature(x: torch.Tensor, sae, feature: int, scale: torch.Tensor, clamp: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # [B·H·W, C]
    a = sae.activation(pixels.to(sae.W_dec.dtype), feature)  # [B·H·W]
    s = scale.to(a).repeat_interleave(h * w)
    cl = clamp.to(a).repeat_interleave(h * w)
    new = torch.where(cl >= 0, cl * sae.feature_max[feature], a * s)
    delta = (new - a)[:, None] * sae.direction(feature)[None]  # [B·H·W, C]
    return x + delta.to(x.dtype).reshape(b, h, w, c).permute(0, 3, 1, 2)
