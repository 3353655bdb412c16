"""Movement-to-image: the conditioning moved through the plane of a prompt set's first two principal
components (``pca_move``), so two per-frame parameters — an XY pad, two lanes — steer the picture
between related prompts.

The prompts' text-encoder outputs ``E`` [P, T, D] are flattened to [P, T·D]; the plane's centre is
their mean ``μ``, its axes ``e₁, e₂`` the first two right singular vectors of ``E − μ``, and each
axis's spread ``σₖ = sₖ / √(P − 1)`` (the prompts' standard deviation along it). A frame at
``(x, y)`` is conditioned on ``μ + x·σ₁·e₁ + y·σ₂·e₂``: at (0, 0) that is the equal mix of the
prompts (what ``prompt_weights`` of all ones gives), and a prompt sits near its own coordinates
(:attr:`PcaPlane.coordinates`). Each axis points towards the first prompt's side (its coordinate
is ≥ 0), so a plane is the same whatever the SVD's signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bendbridge.protocol.operators import MAX_PROMPTS, MIN_PROMPTS
from bendbridge.protocol.plan import PlanError
from bendbridge.server.steering.files import FileContext

from ._util import per_sample
from .spec import implements, loads

__all__ = ["PcaPlane", "pca_plane", "read_prompt_set"]


@dataclass(frozen=True)
class PcaPlane:
    """A prompt set's plane: ``centre`` [T, D], ``axes`` [2, T, D] (unit length over T·D),
    ``spread`` [2] (σ₁, σ₂), each prompt's ``coordinates`` [P, 2] in units of σ, and the share of the
    set's variance each axis explains."""

    prompts: tuple[str, ...]
    centre: torch.Tensor
    axes: torch.Tensor
    spread: torch.Tensor
    coordinates: torch.Tensor
    explained: tuple[float, float]

    def at(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Conditioning at plane points ``(x, y)`` (each [B], units of σ) → [B, T, D]."""
        c, a, s = self.centre, self.axes, self.spread
        return c + per_sample(x * s[0], c[None]) * a[0] + per_sample(y * s[1], c[None]) * a[1]

    def to(self, device: torch.device, dtype: torch.dtype) -> PcaPlane:
        return PcaPlane(
            self.prompts,
            self.centre.to(device, dtype),
            self.axes.to(device, dtype),
            self.spread.to(device, dtype),
            self.coordinates,
            self.explained,
        )


def pca_plane(prompts: tuple[str, ...], embeddings: torch.Tensor) -> PcaPlane:
    """The plane of ``prompts`` from their text-encoder outputs [P, T, D] (computed in float64)."""
    p = embeddings.shape[0]
    flat = embeddings.double().reshape(p, -1)
    centre = flat.mean(0)
    _, s, vh = torch.linalg.svd(flat - centre, full_matrices=False)
    axes = vh[:2].clone()
    spread = s[:2] / (p - 1) ** 0.5
    coordinates = (flat - centre) @ axes.T / spread.clamp_min(1e-12)
    flip = torch.where(coordinates[0] < 0, -1.0, 1.0).double()
    axes, coordinates = axes * flip[:, None], coordinates * flip
    variance = s.square()
    explained = tuple(float(v) for v in (variance[:2] / variance.sum().clamp_min(1e-30)))
    shape = embeddings.shape[1:]
    return PcaPlane(
        tuple(prompts),
        centre.reshape(shape).float(),
        axes.reshape(2, *shape).float(),
        spread.float(),
        coordinates.float(),
        (explained[0], explained[1]),
    )


def read_prompt_set(value: str | tuple[str, ...], where: str) -> tuple[str, ...]:
    """A prompt set as given: the prompts, or ``@FILE`` read (one prompt a line, blank lines skipped)."""
    if isinstance(value, tuple):
        return value
    path = Path(value[1:]).expanduser()
    if not path.is_file():
        raise PlanError(where, f"no such prompt file {str(path)!r}")
    try:
        prompts = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(where, f"{path.name} is not a readable text file ({e})") from None
    if not MIN_PROMPTS <= len(prompts) <= MAX_PROMPTS:
        raise PlanError(
            where, f"{path.name} holds {len(prompts)} prompts; a PCA plane needs {MIN_PROMPTS} to {MAX_PROMPTS}"
        )
    return prompts


class _PlaneResource:
    """The bound ``prompts`` parameter: the plane, on the device and dtype of each call."""

    def __init__(self, plane: PcaPlane):
        self.plane = plane
        self._cache: dict[tuple, PcaPlane] = {}

    def at_step(self, step: int, device: torch.device, dtype: torch.dtype) -> PcaPlane:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = self.plane.to(device, dtype)
        return self._cache[key]


@loads("pca_move", "prompts")
def _load_plane(value: str | tuple[str, ...], ctx: FileContext) -> _PlaneResource:
    prompts = read_prompt_set(value, ctx.where)
    if ctx.embed is None:
        raise PlanError(ctx.where, "a prompt set needs the model's text encoder, which this renderer does not have")
    embeddings = torch.stack([ctx.embed(p).float().cpu() for p in prompts])
    distinct = torch.unique(embeddings.flatten(1), dim=0).shape[0]
    if distinct < MIN_PROMPTS:
        raise PlanError(ctx.where, f"{distinct} distinct prompts after encoding; a PCA plane needs {MIN_PROMPTS}")
    return _PlaneResource(pca_plane(prompts, embeddings))


@implements("pca_move")
def _pca_move(cond: torch.Tensor, prompts: PcaPlane, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Conditioning [B, T, D] → the plane's points at (x, y) [B] (the input is replaced, not shifted;
    ``mix`` blends the two)."""
    if cond.shape[1:] != prompts.centre.shape:
        raise PlanError(
            "pca_move", f"conditioning {tuple(cond.shape[1:])} is not the plane's {tuple(prompts.centre.shape)}"
        )
    return prompts.at(x.to(cond), y.to(cond))
