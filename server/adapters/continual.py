"""Continual personalisation: one concept after another without forgetting the earlier ones.

Four strategies, after the study of continual adapter training in the research behind bendbridge:

- ``naive``: keep fine-tuning the same adapter on each new concept (the baseline that forgets);
- ``merge``: train a new adapter on the base model, then merge it with the earlier ones: the
  result holds every stage's layers side by side (ranks add up). (Training it with the earlier
  adapters applied instead was measured to be worse: the new adapter learns to cancel them.)
- ``orthogonal``: as ``merge``, with the new adapter's ``A`` initialised orthogonal to the row
  space of the earlier adapters' ``A`` at each layer, and projected back after every step (so
  the new update reads input directions the earlier ones do not: O-LoRA, Wang et al. 2023);
- ``relevant``: as ``merge``, training only the layers most relevant to the new concept — the
  share ``RELEVANT_SHARE`` with the largest loss gradient at the start — and leaving the others
  as the earlier stages left them.

A merged adapter is exact: per layer ``A = [A₁; A₂]`` and ``B = [B₁, B₂]``, so
``B·A = B₁A₁ + B₂A₂``.

With replay (``AdaptRequest.replay`` > 0, :mod:`.replay`) every strategy also distils the model
after the earlier stages on renders of the earlier concepts: ``naive`` from the adapter it goes on
from; the others train the new adapter with the earlier ones applied (frozen), which is what
sequential merging means once the merged model is the one that has to keep the earlier concepts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.server.bending.layers import module_hooks

from .lora import LoraAdapter
from .replay import earlier_captions, unique_stages
from .train import AdaptRequest, Objective, TrainSetup, adapter_hooks, new_layers

__all__ = ["STRATEGIES", "RELEVANT_SHARE", "merge_adapters", "continual_setup", "after_stage"]

STRATEGIES = ("naive", "merge", "orthogonal", "relevant")
RELEVANT_SHARE = 0.25
_SCORE_BATCHES = 4


def merge_adapters(adapters: Sequence[LoraAdapter]) -> LoraAdapter:
    """One adapter equal to applying all of ``adapters`` at weight 1 (ranks concatenated per layer)."""
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for ad in adapters:
        for m, (a, b) in ad.layers.items():
            if m in layers:
                a0, b0 = layers[m]
                layers[m] = (torch.cat([a0, a]), torch.cat([b0, b], dim=1))
            else:
                layers[m] = (a, b)
    meta = dict(adapters[-1].meta) if adapters else {}
    return LoraAdapter(layers, meta)


def _orthogonal_to(a: torch.Tensor, earlier: torch.Tensor | None) -> torch.Tensor:
    """Rows of ``a`` [r, in] minus their projection on the row space of ``earlier`` [k, in]."""
    if earlier is None or earlier.numel() == 0:
        return a
    q, _ = torch.linalg.qr(earlier.T.double())  # [in, k], orthonormal columns
    q = q.to(a.dtype)
    return a - (a @ q) @ q.T


def continual_setup(
    model, objective: Objective, request: AdaptRequest, earlier: Sequence[LoraAdapter], strategy: str
) -> TrainSetup:
    """Where the next stage's training starts for ``strategy``, after the ``earlier`` stages' adapters."""
    if strategy not in STRATEGIES:
        raise BendbridgeError("--strategy", f"{strategy!r} is not valid; allowed: {', '.join(STRATEGIES)}")
    unet = model.pipe.unet
    stages = unique_stages(earlier)
    replay = earlier_captions(earlier) if request.replay else []
    if strategy == "naive":
        if len(earlier) != 1:
            raise BendbridgeError(
                "--after", "naive continual training goes on from exactly one adapter: the last stage's"
            )
        start = {m: (a.clone(), b.clone()) for m, (a, b) in earlier[0].layers.items()}
        teacher = {m: (a.clone(), b.clone()) for m, (a, b) in start.items()} if replay else {}
        return TrainSetup(start, None, stages, teacher=teacher, replay_captions=replay)
    held = merge_adapters(earlier) if earlier else None
    frozen = dict(held.layers) if held and replay else {}
    layers = new_layers(unet, request.rank, request.seed)
    after_step = None
    if strategy == "orthogonal":
        old = {m: a for m, (a, _) in held.layers.items()} if held else {}
        layers = {m: (_orthogonal_to(a, old.get(m)), b) for m, (a, b) in layers.items()}

        @torch.no_grad()
        def after_step(params) -> None:  # keep A orthogonal to the earlier adapters'
            for m, (a, _) in params.items():
                if m in old:
                    a.copy_(_orthogonal_to(a, old[m]))

    if strategy == "relevant":
        keep = relevant_layers(unet, objective, layers)
        layers = {m: layers[m] for m in keep}
    return TrainSetup(layers, after_step, stages, frozen=frozen, replay_captions=replay)


def relevant_layers(
    unet: torch.nn.Module,
    objective: Objective,
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]],
    share: float = RELEVANT_SHARE,
) -> list[str]:
    """The ``share`` of ``layers`` whose ``B`` (zero at the start) gets the largest loss gradient,
    per parameter, over a few batches of the new concept: where the new task pulls hardest."""
    probe = {m: (a.clone(), b.clone().requires_grad_(True)) for m, (a, b) in layers.items()}
    score = dict.fromkeys(probe, 0.0)
    with module_hooks(unet, adapter_hooks(probe), lambda i, n: RuntimeError(n)):
        for k in range(_SCORE_BATCHES):
            loss = objective.loss(-1 - k)  # batches the training run does not draw
            grads = torch.autograd.grad(loss, [b for _, b in probe.values()])
            for m, g in zip(probe, grads):
                score[m] += float(g.norm()) / g.numel() ** 0.5
    ranked = sorted(score, key=score.get, reverse=True)
    return sorted(ranked[: max(1, round(share * len(ranked)))])


def after_stage(strategy: str, earlier: Sequence[LoraAdapter], trained: LoraAdapter) -> LoraAdapter:
    """The adapter that holds every concept so far: the continued one (naive) or all merged."""
    return trained if strategy == "naive" else merge_adapters([*earlier, trained])
