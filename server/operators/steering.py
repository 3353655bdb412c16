"""Steering operators: add a steering vector, edit one sparse-autoencoder feature.

Shapes: ``x`` is ``[B, C, H, W]`` (a module) or, for ``steer`` on the text target, ``[B, T, D]``;
``alpha``, ``scale`` and ``clamp`` are ``[B]`` (one value per frame). The file parameters arrive
loaded for the current denoising step: ``vector`` a tensor ``[C]`` (added to every pixel),
``[C, H, W]``, or ``[K, D]`` (token rows from a word on); ``gate`` (static) how it is spread over
the pixels; ``sae`` a
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
def _steer(
    x: torch.Tensor,
    vector: torch.Tensor,
    alpha: torch.Tensor,
    gate: str = "salience",
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    if x.ndim == 3:
        return _steer_tokens(x, vector, alpha, token_mask)
    v = vector.to(device=x.device, dtype=x.dtype)
    v = v.reshape(1, -1, 1, 1) if v.ndim == 1 else v.unsqueeze(0)
    step = per_sample(alpha, x) * v
    return x + (step * salience(x) if gate == "salience" else step)


def _steer_tokens(x: torch.Tensor, vector: torch.Tensor, alpha: torch.Tensor, token_mask: torch.Tensor | None):
    """Text conditioning x [B, T, D] + alpha · v [K, D] on the K token rows from the first token of
    the word in ``token_mask`` [B, T] on (rows past T are dropped); frames without the word are kept."""
    if token_mask is None:
        raise ValueError("a token steering vector needs the word to steer at (text target option word=…)")
    b, t, _ = x.shape
    k = min(vector.shape[0], t)
    first = token_mask.int().argmax(1)  # [B]: the word's first token (0 where the word is absent)
    rows = first[:, None] + torch.arange(k, device=x.device)[None]  # [B, K]
    keep = token_mask.any(1)[:, None] & (rows < t)
    add = per_sample(alpha, x).reshape(b, 1, 1) * vector[:k].to(device=x.device, dtype=x.dtype)[None]  # [B, K, D]
    add = add * keep[..., None].to(x.dtype)
    return x.scatter_add(1, rows.clamp_max(t - 1)[..., None].expand(-1, -1, x.shape[2]), add)


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
