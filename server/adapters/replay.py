"""Replaying earlier concepts while training a new adapter (continual mode, ``--replay N``).

Before training, the model after the earlier stages (base + their adapters at weight 1, the
*teacher*) renders ``N`` pictures of each earlier concept from its own training captions. Each batch then
gives three eighths of its rows to them (half stays the new concept's, one eighth the prior's),
and their target is the teacher's prediction on the same noisy latent and timestep rather than
the noise, with every timestep weighted alike (min-SNR weighting would mute the low-noise steps
where fine detail such as a pattern is drawn): the new adapter is trained to leave what the model
does with the earlier words as it was, on pictures that show those words (the earlier concepts'
own images are not needed). The student is base + frozen earlier layers + the trained layers
(:class:`~.train.TrainSetup`); the teacher swaps the trained layers for ``teacher`` ones (the
earlier adapter itself when training goes on from it, none when a new adapter is added).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bendbridge.server.bending.layers import module_hooks

from .lora import LoraAdapter, lora_delta

if TYPE_CHECKING:
    from .train import AdaptRequest, Layers, TrainingImages, TrainSetup

__all__ = ["stage_records", "unique_stages", "earlier_captions", "stage_hooks", "replay_images"]


def stage_records(adapter: LoraAdapter) -> list[dict]:
    """The adapter's stage records (token, layers, rank, captions), the last one's captions filled
    from its training captions when an older file did not record them."""
    stages = [dict(s) for s in adapter.meta.get("stages", [])]
    trained = adapter.meta.get("training", {}).get("captions")
    if stages and "captions" not in stages[-1] and trained:
        stages[-1]["captions"] = list(trained)
    return stages


def unique_stages(earlier: Sequence[LoraAdapter]) -> list[dict]:
    """The stage records of the ``earlier`` adapters in stage order; a stage that a merged adapter
    and its parts both list counts once."""
    records = {json.dumps(s, sort_keys=True): s for ad in earlier for s in stage_records(ad)}
    return list(records.values())


def earlier_captions(earlier: Sequence[LoraAdapter]) -> list[list[str]]:
    """The training captions of each stage the ``earlier`` adapters hold, in stage order."""
    return [list(s["captions"]) for s in unique_stages(earlier) if s.get("captions")]


def _sum_hook(sets: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]):
    def hook(_module, args, output):
        x = args[0]
        ones = torch.ones(x.shape[0])
        for a, b in sets():
            output = output + lora_delta(x, a, b, ones)
        return output

    return hook


def stage_hooks(
    trained: Layers, setup: TrainSetup
) -> tuple[list[tuple[str, Callable]], Callable[[], AbstractContextManager] | None]:
    """Forward hooks for training: each module adds its frozen layers and its trained ones (or,
    inside the returned teacher context, its teacher ones instead). Without frozen or teacher
    layers, no teacher."""
    teaching = [False]

    def sets_of(m: str) -> Callable[[], list]:
        def sets() -> list:
            out = [setup.frozen[m]] if m in setup.frozen else []
            use = setup.teacher if teaching[0] else trained
            return out + ([use[m]] if m in use else [])

        return sets

    modules = list(dict.fromkeys([*setup.frozen, *trained, *setup.teacher]))

    @contextmanager
    def teacher() -> Iterator[None]:
        teaching[0] = True
        try:
            yield
        finally:
            teaching[0] = False

    hooks = [(m, _sum_hook(sets_of(m))) for m in modules]
    return hooks, (teacher if setup.frozen or setup.teacher else None)


def replay_images(
    model, setup: TrainSetup, size: tuple[int, int], request: AdaptRequest, work: Path
) -> TrainingImages | None:
    """``request.replay`` renders of each earlier stage's captions (cycled) by the teacher model,
    seeded; kept in ``work/replay.npz``. None without captions or with ``replay`` 0."""
    from .train import render_captions

    if not request.replay or not setup.replay_captions:
        return None
    captions = [stage[i % len(stage)] for stage in setup.replay_captions for i in range(request.replay)]
    hooks, teacher = stage_hooks({}, setup)
    with module_hooks(model.pipe.unet, hooks, lambda i, n: KeyError(n)), teacher() if teacher else nullcontext():
        return render_captions(model, captions, size, request.seed + 1, work / "replay.npz", "replay")
