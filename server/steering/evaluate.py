"""Measuring a steering bend on the embedded model: classifier probabilities against its strength.

Held-out scenes (combinations the model never saw) are rendered with the bend at each strength;
the scene classifier reads every frame. Reported per strength: the mean probability of the
*watched* class (e.g. ``fg=red``), the share of frames where it wins, and shape adherence (the
classifier's shape equals the caption's) — so "redder, and still a star" is one table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings

__all__ = ["Watch", "parse_watch", "SteerCurve", "strength_sweep", "held_out_prompts"]


@dataclass(frozen=True)
class Watch:
    """A class of one classifier attribute: ``fg=red``, ``shape=star``, ``bg=white``."""

    attribute: str
    label: str

    def __str__(self) -> str:
        return f"{self.attribute}={self.label}"


def parse_watch(text: str, where: str = "--watch") -> Watch:
    from bendbridge.server.embedded.classifier import LABELS

    attr, _, label = text.partition("=")
    if attr not in LABELS:
        raise BendbridgeError(where, f"{text!r}: the attribute must be one of {', '.join(LABELS)} (e.g. fg=red)")
    if label not in LABELS[attr]:
        raise BendbridgeError(where, f"{text!r}: {attr} is one of {', '.join(LABELS[attr])}")
    return Watch(attr, label)


def held_out_prompts(n: int, seed: int, avoid: Watch | None = None) -> list[Any]:
    """``n`` held-out scenes whose watched attribute is not already the watched class."""
    from bendbridge.server.embedded import scenes
    from bendbridge.server.embedded.classifier import LABELS, scene_labels

    out = []
    for s in scenes.held_out_scenes(4 * n + 16, seed=seed):
        if avoid is not None and scene_labels(s)[avoid.attribute] == LABELS[avoid.attribute].index(avoid.label):
            continue
        out.append(s)
        if len(out) == n:
            break
    return out


@dataclass
class SteerCurve:
    """Per strength: mean watched probability, share where the watched class wins, shape adherence."""

    bend: str
    param: str
    strengths: list[float]
    watch: Watch
    watched_prob: list[float]
    watched_wins: list[float]
    shape_right: list[float]
    captions: list[str]
    sheet_rows: list[tuple[str, list[tuple[np.ndarray, str]]]] = field(default_factory=list)
    seeds: int = 1

    def shape_kept(self) -> list[float]:
        """Shape adherence relative to the unsteered frames (the first strength)."""
        base = self.shape_right[0] or 1.0
        return [round(v / base, 4) for v in self.shape_right]

    def monotonic(self) -> bool:
        return all(b >= a - 1e-9 for a, b in zip(self.watched_prob, self.watched_prob[1:]))

    def to_json(self) -> dict:
        return {
            "bend": self.bend,
            "param": self.param,
            "strengths": self.strengths,
            "watch": str(self.watch),
            "prompts": self.captions,
            "seeds": self.seeds,
            "watched_probability": self.watched_prob,
            "watched_wins": self.watched_wins,
            "shape_adherence": self.shape_right,
            "shape_kept": self.shape_kept(),
            "monotonic": self.monotonic(),
        }

    def save(self, png: Path) -> Path:
        """The curve (``png``), a contact sheet (``…_sheet.png``) and the numbers (``.json``)."""
        from bendbridge.server.render.sheet import labelled_grid

        from .figures import steer_curve

        png.parent.mkdir(parents=True, exist_ok=True)
        steer_curve(
            self.strengths,
            {f"P({self.watch})": self.watched_prob, f"{self.watch} wins": self.watched_wins,
             "shape adherence": self.shape_right},
            f"{self.bend}: {self.param} swept on {len(self.captions)} held-out prompts × {self.seeds} seeds",
            png,
        )  # fmt: skip
        if self.sheet_rows:
            labelled_grid(self.sheet_rows).save(png.with_name(png.stem + "_sheet.png"))
        out = png.with_suffix(".json")
        out.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return out


def strength_sweep(
    model,
    plan: BendPlan,
    param: str,
    strengths: Sequence[float],
    watch: Watch,
    *,
    prompts: int = 24,
    seed: int = 0,
    seeds: int = 1,
    sheet_prompts: int = 4,
    settings: RenderSettings | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> SteerCurve:
    """Render ``prompts`` held-out scenes from ``seeds`` start noises (``seed``, ``seed`` + 1, …) with
    the plan's bends, all at each of ``strengths`` (their per-frame parameter ``param``), and read
    them with the scene classifier; every number is a mean over the prompts × seeds frames."""
    from bendbridge.server.embedded.classifier import LABELS, load_classifier
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    if not plan.bends:
        raise BendbridgeError("--bend", "give one or more bends to sweep together")
    for bend in plan.bends:
        if bend.spec.frame_param(param) is None:
            raise BendbridgeError("--param", f"{param!r} is not a per-frame parameter of {bend.op!r} ({bend.id})")
    chosen = held_out_prompts(prompts, seed, watch)
    captions = [_caption(s) for s in chosen]
    base = settings or RenderSettings(tuple(captions), seed=seed)
    renderer = Renderer(model, RenderConfig(replace(base, prompts=tuple(captions), seed=seed), plan))
    clf = load_classifier()
    want = LABELS[watch.attribute].index(watch.label)
    if not 1 <= seeds <= 64:
        raise BendbridgeError("--seeds", f"{seeds} is out of range [1, 64]")
    truth = np.tile([LABELS["shape"].index(s.shape) for s in chosen], seeds)
    prob, wins, shape_ok, images = [], [], [], []
    for a in strengths:
        frames = [
            FrameSpec.of_prompt(i, len(captions), seed=seed + k, params={b.id: {param: a} for b in plan.bends})
            for k in range(seeds)
            for i in range(len(captions))
        ]
        imgs = np.stack([r.image for r in renderer.render(frames)])
        p = clf.probabilities(imgs)
        prob.append(round(float(p[watch.attribute][:, want].mean()), 4))
        wins.append(round(float((p[watch.attribute].argmax(1) == want).mean()), 4))
        shape_ok.append(round(float((p["shape"].argmax(1) == truth).mean()), 4))
        images.append(imgs[:sheet_prompts])
        progress(len(frames))
    rows = [
        (captions[i], [(images[k][i], f"{param}={a:g}") for k, a in enumerate(strengths)])
        for i in range(min(sheet_prompts, len(captions)))
    ]
    return SteerCurve(
        "+".join(b.id for b in plan.bends), param, list(strengths), watch, prob, wins, shape_ok, captions, rows, seeds
    )


def _caption(scene) -> str:
    from bendbridge.server.embedded import scenes

    return scenes.caption(scene)


@dataclass
class FeatureEffect:
    """How editing one feature changes the classifier's answers: per attribute, the share of
    frames whose answer changed from the unedited frame's, and the new answers' most common class."""

    feature: int
    changed: dict[str, float]
    became: dict[str, str]

    def single_attribute(self, moved: float = 0.5, kept: float = 0.8) -> str | None:
        """The one attribute that changed in ≥ ``moved`` of the frames while every other kept its
        answer in ≥ ``kept`` of them; None if there is no such attribute."""
        hits = [a for a, v in self.changed.items() if v >= moved]
        if len(hits) != 1:
            return None
        return hits[0] if all(1 - v >= kept for a, v in self.changed.items() if a != hits[0]) else None


def feature_effects(
    model,
    sae_path: Path,
    module: str,
    cases: dict[int, Sequence[tuple[str, int]]],
    *,
    edit: str = "clamp",
    value: float = 1.0,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[list[FeatureEffect], list[tuple[str, list[tuple[np.ndarray, str]]]]]:
    """For each feature and its cases (prompt, seed): render unedited and with the feature's
    ``edit`` (clamp or scale) at ``value``, and compare the classifier's answers. Also returns
    contact-sheet rows (unedited over edited, per feature)."""
    from collections import Counter

    from bendbridge.server.embedded.classifier import LABELS, load_classifier
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    clf = load_classifier()
    effects, rows = [], []
    for f, pairs in cases.items():
        captions = tuple(dict.fromkeys(p for p, _ in pairs))
        frames = [FrameSpec.of_prompt(captions.index(p), len(captions), seed=sd) for p, sd in pairs]
        settings = RenderSettings(captions)
        plan = BendPlan.from_specs([f"sae_feature:sae={sae_path}:feature={f}:{edit}={value}@{module}:id=f"])
        before = np.stack([r.image for r in Renderer(model, RenderConfig(settings)).render(frames)])
        after = np.stack([r.image for r in Renderer(model, RenderConfig(settings, plan)).render(frames)])
        base, got = clf.predict(before), clf.predict(after)
        changed = {a: round(float(np.mean([g[a] != b[a] for g, b in zip(got, base)])), 4) for a in LABELS}
        became = {a: Counter(g[a] for g in got).most_common(1)[0][0] for a in LABELS}
        effects.append(FeatureEffect(int(f), changed, became))
        label = ", ".join(f"{a} {100 * v:.0f} %" for a, v in changed.items())
        rows.append((f"feature {f}, unedited", [(img, g["fg"] + " " + g["shape"]) for img, g in zip(before[:6], base)]))
        rows.append(
            (
                f"{edit}={value:g}: changed {label}",
                [(img, g["fg"] + " " + g["shape"]) for img, g in zip(after[:6], got)],
            )
        )
        progress(len(frames))
    return effects, rows


def held_out_cases(features: Sequence[int], prompts: int, seed: int = 0) -> dict[int, list[tuple[str, int]]]:
    """The same ``prompts`` held-out scenes for every feature."""
    pairs = [(_caption(s), seed) for s in held_out_prompts(prompts, seed)]
    return {int(f): pairs for f in features}
