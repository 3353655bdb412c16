"""Steering vectors (Contrastive Activation Addition): the file and the per-step resource a bend reads.

A file holds, per module, the mean activation difference between a positive and a negative
prompt set: ``[S, C]`` (broadcast over the activation's pixels) or ``[S, C, H, W]`` (a spatial
vector), where S is 1 (averaged over the step range) or the number of steps in the range (one
vector per step); or, with ``broadcast="token"``, one token vector ``[1, K, D]`` under the key
``text``: the text encoder's output rows from the word where paired prompts differ on.
Metadata: model name and fingerprint, steps, broadcast, prompts, seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.plan import PlanError

from .files import FileContext, check_model, read_file, resolve_file, write_file

__all__ = ["STEER_FORMAT", "TEXT_KEY", "SteerVectors", "StepVector", "load_steer_resource"]

STEER_FORMAT = "bendbridge.steer/1"
TEXT_KEY = "text"  # a token vector's key and the target that builds one: the text conditioning, not a module


@dataclass
class SteerVectors:
    """Steering vectors by module; ``meta`` as stored (model, model_id, steps, per_step, broadcast, …)."""

    vectors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        meta = {**self.meta, "modules": {m: list(v.shape) for m, v in self.vectors.items()}}
        write_file(path, STEER_FORMAT, {m: v.float() for m, v in self.vectors.items()}, meta)

    @classmethod
    def load(cls, path: Path, where: str = "vector") -> SteerVectors:
        tensors, meta = read_file(path, STEER_FORMAT, where)
        return cls(tensors, meta)


class StepVector:
    """One module's vector(s) [S, ...]: the one for a denoising step, on the activation's device and dtype."""

    def __init__(self, vectors: torch.Tensor, first_step: int, per_step: bool):
        self.vectors, self.first_step, self.per_step = vectors, first_step, per_step
        self._cache: dict[tuple, torch.Tensor] = {}

    def at_step(self, step: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        i = min(max(step - self.first_step, 0), len(self.vectors) - 1) if self.per_step else 0
        key = (i, device, dtype)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self.vectors[i].to(device=device, dtype=dtype)
        return v


def load_steer_resource(value: str, ctx: FileContext) -> StepVector:
    """The ``vector`` parameter of a ``steer`` bend: the file's vector for the bend's module, checked
    against the model, the module and its activation shape; a channel subset selects channels."""
    path = resolve_file(value, ctx)
    sv = SteerVectors.load(path, ctx.where)
    check_model(path, sv.meta, ctx, "steering vector")
    if sv.meta.get("broadcast") == "token" or ctx.kind == "text":
        return _token_resource(path, sv, ctx)
    if ctx.module not in sv.vectors:
        raise PlanError(
            ctx.where,
            f"{path.name} holds vectors for {', '.join(sorted(sv.vectors))}, not for the bend's target "
            f"{ctx.module or 'latent/text'!r}",
        )
    v = sv.vectors[ctx.module].float()
    want = ctx.shape if v.ndim == 4 else ctx.shape[:1]
    if tuple(v.shape[1:]) != tuple(want):
        raise PlanError(
            ctx.where,
            f"{path.name}'s vector for {ctx.module} has shape {tuple(v.shape[1:])}, the module's activation "
            f"here is {tuple(ctx.shape)} (a spatial vector needs the render size it was built at)",
        )
    if ctx.channels is not None:
        v = v.index_select(1, torch.tensor(ctx.channels))
    steps = sv.meta.get("steps") or [0, 0]
    return StepVector(v, int(steps[0]), bool(sv.meta.get("per_step")))


def _token_resource(path: Path, sv: SteerVectors, ctx: FileContext) -> StepVector:
    """A token vector [1, K, D] for the text target: refused elsewhere, without a word to anchor
    at, or for a text encoder of another width."""
    if sv.meta.get("broadcast") != "token" or TEXT_KEY not in sv.vectors:
        raise PlanError(
            ctx.where, f"{path.name} holds module vectors; the text target takes a token vector (--broadcast token)"
        )
    if ctx.kind != "text":
        raise PlanError(
            ctx.where,
            f"{path.name} is a token vector: it steers the text target (@text:word=…), not {ctx.module or ctx.kind!r}",
        )
    if not ctx.word:
        raise PlanError(ctx.where, f"{path.name} is a token vector: name the word to steer at, @text:word=WORD[|WORD…]")
    v = sv.vectors[TEXT_KEY].float()
    width = ctx.embed("").shape[-1] if ctx.embed is not None else v.shape[-1]
    if v.ndim != 3 or v.shape[-1] != width:
        raise PlanError(
            ctx.where,
            f"{path.name}'s token vector has shape {tuple(v.shape[1:])}, this text encoder's rows are {width} wide",
        )
    return StepVector(v, 0, False)
