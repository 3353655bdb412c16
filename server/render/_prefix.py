"""Shared denoising prefix: steps before any bend acts are the same for many frames.

Frames with the same start noise (seed, noise angle) and the same prompt mix follow the same
trajectory until the first step at which a bend can act (a latent bend at step k, a module bend
from the first step of its range; text bends act from step 0). The renderer computes that
prefix once per distinct (seed, angle, prompt mix), batched, keeps the latent in a small LRU
cache, and runs only the remaining steps per frame. With the same seed for every frame (the
default) a bounce whose bends start at step k of N denoises steps 0…k−1 once for the whole song.

Only schedulers whose state after step k does not depend on the sample (DDIM, Euler) are
shared; others (multistep solvers keep per-sample history) always run the full trajectory.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from bendbridge.server.bending.binding import BoundBend

__all__: list[str] = []  # private to server.render

SHAREABLE_SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler")


def first_bent_step(bound: Sequence[BoundBend], steps: int) -> int:
    """The first denoising step (0…steps) at which any bend can change a frame."""
    first = steps
    for bb in bound:
        t = bb.bend.target
        if t.kind == "text":
            return 0
        if t.kind == "latent":
            first = min(first, int(t.step or 0))
        else:
            first = min(first, t.steps[0] if t.steps else 0)
    return max(0, first)


def shareable(scheduler: Any) -> bool:
    return type(scheduler).__name__ in SHAREABLE_SCHEDULERS


class PrefixCache:
    """LRU cache: frame key → (latent [C, h, w] after ``first`` steps, scheduler after them)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, tuple[torch.Tensor, Any]] = OrderedDict()
        self.computed = 0  # prefixes computed (for tests and benchmarks)
        self.reused = 0

    def clear(self) -> None:
        self._items.clear()

    def latents(
        self, keys: Sequence[Hashable], compute: Callable[[list[int]], tuple[torch.Tensor, Any]]
    ) -> tuple[torch.Tensor, Any]:
        """Latents [B, C, h, w] for ``keys`` and a scheduler positioned after the prefix.

        ``compute(rows)`` runs the prefix for the frames at ``rows`` (one per missing key) and
        returns their latents [R, C, h, w] and the scheduler after the prefix."""
        missing: dict[Hashable, int] = {}
        for i, k in enumerate(keys):
            if k not in self._items and k not in missing:
                missing[k] = i
        if missing:
            lat, sched = compute(list(missing.values()))
            for k, row in zip(missing, lat):
                self._items[k] = (row, sched)
            self.computed += len(missing)
        self.reused += len(set(keys)) - len(missing)
        rows = []
        for k in keys:
            self._items.move_to_end(k)
            rows.append(self._items[k][0])
        sched = copy.deepcopy(self._items[keys[0]][1])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return torch.stack(rows), sched
