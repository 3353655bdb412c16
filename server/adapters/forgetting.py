"""Measuring forgetting on the embedded model: three new concepts, one after another.

The concepts are ones the embedded model never saw, drawn by the scene generator
(``scenes.NOVEL_*``): a shape (``heart``), a background pattern (``dotted``) and a colour name
(``navy``). Each has 48 training images (scenes of the grammar with the concept put in, each
captioned) and 24 held-out prompts (combinations absent from its training images). Adherence is
the share of held-out renders (prompts × seeds, adapter at weight 1) in which the concept judge
(``classifier.load_concept_judge``) sees the concept.

:func:`forgetting_table` trains the concepts in order with each strategy of :mod:`.continual`
(with replay of the earlier concepts when the request asks for it, :mod:`.replay`) and measures
every concept after every stage: the forgetting table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bendbridge.protocol.errors import BendbridgeError

from .continual import STRATEGIES, after_stage, continual_setup
from .lora import LoraAdapter
from .train import AdaptRequest, Objective, TrainingImages, TrainSetup, new_layers, train_adapter

__all__ = ["Concept", "CONCEPTS", "concept_images", "adherence", "forgetting_table", "ForgettingTable"]

_PLAIN_STYLES = ("flat", "gradient", "checkered")


@dataclass(frozen=True)
class Concept:
    """A new word for the embedded model: ``token``, the scene attribute it sets and the judge's
    attribute that reads it back."""

    token: str
    attribute: str  # Scene field: fg, shape or style
    judge: str  # concept-judge head: fg, shape or style

    def _put(self, s):
        return dataclasses.replace(s, **{self.attribute: self.token})

    def scenes(self, n: int, seed: int, avoid: set | None = None) -> list:
        """``n`` scenes with the concept, distinct captions, combinations not in ``avoid``."""
        from bendbridge.server.embedded import scenes

        rng = np.random.default_rng(seed)
        out: dict[str, object] = {}
        while len(out) < n:
            s0 = scenes.random_scene(rng)
            if s0.style not in _PLAIN_STYLES or (self.attribute == "style" and s0.shape == "stripes"):
                continue
            s = self._put(s0)
            if s.fg == s.bg or (avoid and s.combo() in avoid):
                continue
            out.setdefault(scenes.caption(s), s)
        return list(out.values())

    def held_out(self, n: int = 24) -> list:
        return self.scenes(n, seed=7, avoid={s.combo() for s in self.scenes(48, seed=42)})


CONCEPTS: dict[str, Concept] = {
    "heart": Concept("heart", "shape", "shape"),
    "dotted": Concept("dotted", "style", "style"),
    "navy": Concept("navy", "fg", "fg"),
}


def concept_images(concept: Concept, n: int = 48) -> TrainingImages:
    """The concept's training images (rendered, captioned)."""
    from bendbridge.server.embedded import scenes

    chosen = concept.scenes(n, seed=42)
    return TrainingImages(
        np.stack([scenes.render_scene(s) for s in chosen]),
        [scenes.caption(s) for s in chosen],
        [f"{concept.token}_{i:03d}" for i in range(n)],
    )


def adherence(model, adapter: Path | None, concept: Concept, prompts: int = 24, seeds: int = 8) -> float:
    """Share of the concept's held-out renders (``prompts`` × ``seeds``) in which the judge sees it,
    with ``adapter`` at weight 1 (None: the base model)."""
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.embedded import scenes
    from bendbridge.server.embedded.classifier import load_concept_judge
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    captions = tuple(scenes.caption(s) for s in concept.held_out(prompts))
    plan = BendPlan.from_specs([f"lora:adapter={adapter.resolve()}:weight=1@unet:id=a"]) if adapter else BendPlan()
    r = Renderer(model, RenderConfig(RenderSettings(captions), plan))
    frames = [FrameSpec.of_prompt(i, len(captions), seed=s) for s in range(seeds) for i in range(len(captions))]
    images = np.stack([res.image for res in r.render(frames)])
    judge = load_concept_judge()
    said = [p[concept.judge] for p in judge.predict(images)]
    return round(float(np.mean([v == concept.token for v in said])), 4)


@dataclass
class ForgettingTable:
    """Per strategy, per stage (after training concept k): each concept's adherence."""

    concepts: list[str]
    base: dict[str, float]
    stages: dict[str, list[dict[str, float]]]
    settings: dict = dataclasses.field(default_factory=dict)  # the training request, token aside

    def kept_within(self, points: float = 0.10) -> dict[str, bool]:
        """Per strategy: every earlier concept ends within ``points`` of its adherence right after its own stage."""
        out = {}
        for strategy, rows in self.stages.items():
            last = rows[-1]
            out[strategy] = all(rows[k][c] - last[c] <= points for k, c in enumerate(self.concepts))
        return out

    def to_json(self) -> dict:
        return {
            "concepts": self.concepts,
            "base": self.base,
            "stages": self.stages,
            "settings": self.settings,
            "kept_within_10_points": self.kept_within(),
        }

    def markdown(self) -> str:
        head = "| strategy | after | " + " | ".join(self.concepts) + " |"
        lines = [head, "| --- | --- | " + " | ".join("---" for _ in self.concepts) + " |"]
        lines.append("| base model | — | " + " | ".join(f"{100 * self.base[c]:.0f}" for c in self.concepts) + " |")
        for strategy, rows in self.stages.items():
            for k, row in enumerate(rows):
                cells = [f"{100 * row[c]:.0f}" if j <= k else "" for j, c in enumerate(self.concepts)]
                lines.append(f"| {strategy} | {self.concepts[k]} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def forgetting_table(
    model,
    concepts: Sequence[str],
    strategies: Sequence[str],
    request: AdaptRequest,
    work: Path,
    *,
    progress: Callable[[str], None] = lambda msg: None,
) -> ForgettingTable:
    """Train ``concepts`` in order with each of ``strategies`` (adapters and checkpoints under
    ``work/STRATEGY/``, resumable) and measure every concept after every stage."""
    for c in concepts:
        if c not in CONCEPTS:
            raise BendbridgeError("--concepts", f"{c!r} is not a concept; allowed: {', '.join(CONCEPTS)}")
    for s in strategies:
        if s not in STRATEGIES:
            raise BendbridgeError("--strategies", f"{s!r} is not valid; allowed: {', '.join(STRATEGIES)}")
    base = {c: adherence(model, None, CONCEPTS[c]) for c in concepts}
    stages: dict[str, list[dict[str, float]]] = {}
    first: Path | None = None  # the first stage's adapter and adherence: the same for every strategy
    first_row: dict[str, float] | None = None
    for strategy in strategies:
        held: list[LoraAdapter] = []
        rows = []
        for k, name in enumerate(concepts):
            concept, folder = CONCEPTS[name], work / strategy
            path = folder / f"stage{k + 1}_{name}.safetensors"
            if k == 0 and not path.exists() and first is not None:  # every strategy starts alike
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(first.read_bytes())
            if not path.exists():
                images = concept_images(concept)
                req = dataclasses.replace(request, token=concept.token)
                setup = (
                    continual_setup(model, Objective(model, images, req), req, held, strategy)
                    if held
                    else TrainSetup(new_layers(model.pipe.unet, req.rank, req.seed))
                )
                trained = train_adapter(model, images, req, folder / f"stage{k + 1}.work", setup=setup)
                after_stage(strategy, held, trained).save(path)
                progress(f"{strategy}: trained {name}")
            state = LoraAdapter.load(path)
            held = [state] if strategy == "naive" else [*held, _stage_only(state, held)]
            if k == 0 and first_row is not None:
                rows.append(dict(first_row))
            else:
                rows.append({c: adherence(model, path, CONCEPTS[c]) for c in concepts})
            if k == 0:
                first, first_row = first or path, rows[0]
            progress(f"{strategy} after {name}: " + json.dumps(rows[-1]))
        stages[strategy] = rows
    settings = {k: v for k, v in dataclasses.asdict(request).items() if k not in ("token", "caption")}
    return ForgettingTable(list(concepts), base, stages, settings)


def _stage_only(merged: LoraAdapter, earlier: Sequence[LoraAdapter]) -> LoraAdapter:
    """The newest stage's part of a merged adapter (its rows after the earlier stages' ranks)."""
    from .continual import merge_adapters

    if not earlier:
        return merged
    before = merge_adapters(earlier).layers
    layers = {}
    for m, (a, b) in merged.layers.items():
        k = before[m][0].shape[0] if m in before else 0
        if a.shape[0] > k:
            layers[m] = (a[k:], b[:, k:])
    return LoraAdapter(layers, merged.meta)
