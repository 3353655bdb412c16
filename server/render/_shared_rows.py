"""Rows shared inside the first bent denoising step.

At step ``d``, the first step at which a bend acts, frames with the same key (seed, noise angle,
prompt mix) enter the U-Net with identical latents and text: the shared prefix (``_prefix``)
ends there. When the first bend of that step is a module bend, every U-Net stage that runs
before the bent stage still computes the same activations for all of those frames. The renderer
therefore runs that step's U-Net on one row per key and branch, and widens the activations to
every frame's rows where the first bend acts: at the output of the bent stage (before the bend's
own hook runs), or at its input when the bend targets a module nested inside it. Later stages
get their other inputs (skip connections, time embedding, text) widened on entry.

With the demo's bends on ``up_blocks.1`` this runs about four fifths of step 0 once per batch
instead of once per frame.

Stages are the top-level parts of diffusers' ``UNet2DConditionModel`` in execution order:
``down_blocks.N``, ``mid_block``, ``up_blocks.N``, ``conv_norm_out``, ``conv_act``,
``conv_out``. Other U-Net classes, and bends on modules before the first down block, are not
shared.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__: list[str] = []  # private to server.render


def unet_stages(unet: torch.nn.Module) -> list[str]:
    """Top-level stages of a diffusers ``UNet2DConditionModel`` in execution order ([] otherwise)."""
    if type(unet).__name__ != "UNet2DConditionModel":
        return []
    names = [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    if getattr(unet, "mid_block", None) is not None:
        names.append("mid_block")
    names += [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]
    names += [n for n in ("conv_norm_out", "conv_act", "conv_out") if getattr(unet, n, None) is not None]
    return names


@dataclass(frozen=True)
class SplitPoint:
    """Where rows are widened: stage ``stage`` (an index into the stage list), at its input or output."""

    stage: int
    at_input: bool


def split_point(stages: Sequence[str], modules: Iterable[str]) -> SplitPoint | None:
    """The split point for bends on ``modules`` (dotted names), or None when none is shareable.

    The earliest stage holding a bent module wins; a bend nested inside that stage (rather than
    on the stage itself) moves the split to the stage's input."""
    best: tuple[int, bool] | None = None
    for m in modules:
        for i, s in enumerate(stages):
            if m == s or m.startswith(s + "."):
                cand = (i, m != s)
                break
        else:
            return None  # a bend outside the known stages (e.g. conv_in) acts before any of them
        if best is None or cand[0] < best[0] or (cand[0] == best[0] and cand[1]):
            best = cand
    return SplitPoint(*best) if best is not None else None


@dataclass(frozen=True)
class RowSharing:
    """Which model-input rows are computed (``compute`` [U]) and which computed row each of the N
    rows is widened from (``widen`` [N])."""

    compute: torch.Tensor
    widen: torch.Tensor

    @property
    def unique(self) -> int:
        return int(self.compute.shape[0])


def guided_rows(frames: Sequence[int], batch: int, guided: bool) -> list[int]:
    """Model-input rows of ``frames`` in a batch of ``batch`` frames: with guidance the rows are
    [uncond; cond] halves, so frame f has rows f and batch + f."""
    return [*frames, *(batch + f for f in frames)] if guided else list(frames)


def row_sharing(keys: Sequence[Hashable], guided: bool, device: torch.device) -> RowSharing | None:
    """Rows to compute for frames with ``keys`` (guided: [uncond; cond] halves), or None when
    every row is distinct."""
    slot_of: dict[Hashable, int] = {}
    reps: list[int] = []  # the first frame of each distinct key
    slot: list[int] = []  # each frame's key, as an index into reps
    for f, key in enumerate(keys):
        if key not in slot_of:
            slot_of[key] = len(reps)
            reps.append(f)
        slot.append(slot_of[key])
    if len(reps) == len(keys):
        return None
    b, k = len(keys), len(reps)
    # the computed rows are themselves a guided batch of k frames, so a row's slot maps the same way
    return RowSharing(
        torch.tensor(guided_rows(reps, b, guided), device=device),
        torch.tensor(guided_rows(slot, k, guided), device=device),
    )


@contextmanager
def widening(unet: torch.nn.Module, stages: Sequence[str], split: SplitPoint, sharing: RowSharing) -> Iterator[None]:
    """While active, a U-Net call on ``sharing.unique`` rows computes the stages before ``split``
    on those rows and every later stage on all N rows. Every hook is removed on exit."""
    unique, index = sharing.unique, sharing.widen

    def widen(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.index_select(0, index) if x.ndim and x.shape[0] == unique else x
        if isinstance(x, tuple):
            return tuple(widen(v) for v in x)
        if isinstance(x, list):
            return [widen(v) for v in x]
        return x

    def widen_output(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        return widen(output)

    def widen_inputs(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return widen(args), {k: widen(v) for k, v in kwargs.items()}

    handles = []
    try:
        for i, name in enumerate(stages):
            if i < split.stage:
                continue
            m = unet.get_submodule(name)
            if i == split.stage and not split.at_input:
                # prepended: runs before the bend hooks on the same module, which need all rows
                handles.append(m.register_forward_hook(widen_output, prepend=True))
            else:
                handles.append(m.register_forward_pre_hook(widen_inputs, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
