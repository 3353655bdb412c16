"""Channel-space operators (Dzwonczyk et al., DAFx 2024): every pixel's channel vector is multiplied by a
C×C matrix. These are the papers' "rotations": not spatial, they rotate the latent's channel
vector in one plane, so each pixel's channel norm is preserved.

Shapes: ``x`` is ``[B, C, H, W]``; angles are ``[B]`` in radians; matrices ``[B, C, C]``.
When a bend selects a channel subset, ``C`` is the size of that subset.
"""

from __future__ import annotations

import math

import torch

from bendbridge.protocol.operators import R6_PLANES, OperatorError

from .spec import implements

__all__ = ["plane_rotation_matrix", "r6_matrix", "hadamard_matrix", "apply_channel_matrix", "R6_PLANES"]


def _check_plane(i: int, j: int, c: int) -> None:
    if not (0 <= i < c and 0 <= j < c and i != j):
        raise OperatorError(
            None, f"plane ({i}, {j}) is not a plane of {c} channels; both indices must differ and lie in [0, {c - 1}]"
        )


def plane_rotation_matrix(angle: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
    """Rotation by ``angle`` [B] (radians) in channel plane (i, j) of C dims. -> [B, C, C]."""
    _check_plane(i, j, c)
    b = angle.shape[0]
    m = torch.eye(c, dtype=angle.dtype, device=angle.device).repeat(b, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    m[:, i, i] = cos
    m[:, j, j] = cos
    m[:, i, j] = -sin
    m[:, j, i] = sin
    return m


def r6_matrix(angles: list[torch.Tensor]) -> torch.Tensor:
    """Product of the rotations in the six planes of 4-D space, in :data:`R6_PLANES` order."""
    m = plane_rotation_matrix(angles[0], 4, *R6_PLANES[0])
    for a, (i, j) in zip(angles[1:], R6_PLANES[1:]):
        m = m @ plane_rotation_matrix(a, 4, i, j)
    return m


def hadamard_matrix(c: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised (orthonormal) Sylvester Hadamard matrix of size C (a power of two). -> [C, C]."""
    if c < 1 or c & (c - 1):
        raise OperatorError(
            None, f"hadamard needs a power-of-two channel count (1, 2, 4, 8, …), got {c}; select channels to fit"
        )
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < c:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(c)).to(dtype)


def apply_channel_matrix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """y[b, i, …] = Σ_j m[b, i, j] · x[b, j, …]. x [B, C, …], m [B, C, C] or [C, C]."""
    if m.ndim == 2:
        m = m.expand(x.shape[0], -1, -1)
    if m.shape[-1] != x.shape[1]:
        raise OperatorError(None, f"matrix is {m.shape[-2]}×{m.shape[-1]} but the tensor has {x.shape[1]} channels")
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.bmm(m.to(flat), flat).reshape(x.shape)


@implements("rotate_plane")
def _rotate_plane(x: torch.Tensor, angle: torch.Tensor, plane: tuple[int, int] = (0, 1)) -> torch.Tensor:
    # only channels i and j change: O(HW) instead of the full C×C matrix product
    i, j = plane
    c = x.shape[1]
    _check_plane(i, j, c)
    a = angle.to(torch.float64)
    shape = (-1,) + (1,) * (x.ndim - 2)
    cos, sin = torch.cos(a).to(x).reshape(shape), torch.sin(a).to(x).reshape(shape)
    xi, xj = x[:, i], x[:, j]
    y = x.clone()
    y[:, i] = cos * xi - sin * xj
    y[:, j] = sin * xi + cos * xj
    return y


@implements("rotate_r6")
def _rotate_r6(x: torch.Tensor, **angles: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 4:
        raise OperatorError(None, f"rotate_r6 acts on 4 channels, the tensor has {x.shape[1]}; select 4 channels")
    m = r6_matrix([angles[f"a{i}{j}"].to(torch.float64) for i, j in R6_PLANES])
    return apply_channel_matrix(x, m)


@implements("reflect")
def _reflect(x: torch.Tensor, channel: int = 0) -> torch.Tensor:
    if not 0 <= channel < x.shape[1]:
        raise OperatorError(None, f"reflect: channel {channel} out of range [0, {x.shape[1] - 1}]")
    y = x.clone()
    y[:, channel] = -y[:, channel]
    return y


@implements("hadamard")
def _hadamard(x: torch.Tensor) -> torch.Tensor:
    return apply_channel_matrix(x, hadamard_matrix(x.shape[1], torch.float64))


@implements("matrix")
def _matrix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return apply_channel_matrix(x, m)
