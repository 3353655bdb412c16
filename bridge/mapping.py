"""Parameter mapping: each operator parameter = base + Σ depth · curve(source), clamped.

Config (TOML, the same file as the bend plan)::

    [[param]]
    bend = "spin"            # a bend id of the plan
    name = "angle"           # one of its per-frame parameters (or "mix")
    base = 0.0
    [[param.source]]
    kind = "feature"         # feature | lane | lfo | const | phase
    name = "centroid"        # feature name, lane name (cc:1:74, Track/volume…), or beat/bar for phase
    depth = 6.283
    curve = "linear"         # linear | exp | log | s
    [[param.source]]
    kind = "lfo"
    shape = "sine"           # sine | triangle | saw | square
    rate = 1                 # cycles per `unit`
    unit = "bars"            # beats | bars
    phase = 0.25
    depth = 0.5

    [smoothing.rms]          # optional per feature: median/attack/release (s), gate (fraction)
    release = 0.3

Every source value is normalised to [0, 1] before its curve (features: min-max over the song
offline, or a fixed range live; lanes through their own range; LFOs and phases are already in
[0, 1]). The result is clamped to the operator parameter's allowed range (and ``min``/``max`` if
given), so a mapping can never ask the renderer for an out-of-range value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from bendbridge.server.bending.plan import BendPlan, PlanError
from bendbridge.server.operators import get_operator, suggest

from .features import FEATURES, Smoothing
from .timeline import FramePosition, Timeline

__all__ = ["Source", "ParamMapping", "Mapping_", "load_mapping", "CURVES", "LFO_SHAPES", "MappingError", "curve"]

CURVES = ("linear", "exp", "log", "s")
LFO_SHAPES = ("sine", "triangle", "saw", "square")
KINDS = ("feature", "lane", "lfo", "const", "phase")


class MappingError(PlanError):
    pass


def curve(name: str, x: np.ndarray | float) -> np.ndarray | float:
    """Shape a [0, 1] value: linear, exponential (slow start), logarithmic (fast start), S."""
    if name == "linear":
        return x
    if name == "exp":
        return (np.exp(3 * np.asarray(x)) - 1) / (math.e**3 - 1)
    if name == "log":
        return np.log1p(9 * np.asarray(x)) / math.log(10)
    xx = np.asarray(x)
    return xx * xx * (3 - 2 * xx)


@dataclass(frozen=True)
class Source:
    kind: str
    name: str = ""
    depth: float = 1.0
    curve: str = "linear"
    shape: str = "sine"
    rate: float = 1.0
    unit: str = "beats"
    phase: float = 0.0
    value: float = 1.0  # const

    def lfo(self, beats: Fraction, timeline: Timeline) -> float:
        if self.unit == "bars":
            bar = timeline.meter.bar_beat(beats).bar
            pos = float(bar - 1 + timeline.bar_phase(beats))
        else:
            pos = float(beats)
        x = (pos * self.rate + self.phase) % 1.0
        if self.shape == "sine":
            return 0.5 - 0.5 * math.cos(2 * math.pi * x)
        if self.shape == "triangle":
            return 1 - abs(2 * x - 1)
        if self.shape == "saw":
            return x
        return 1.0 if x < 0.5 else 0.0


@dataclass(frozen=True)
class ParamMapping:
    bend: str
    name: str
    base: float
    sources: tuple[Source, ...]
    lo: float
    hi: float


@dataclass
class Mapping_:
    """A validated mapping for a plan. ``resolve`` turns frames into per-frame parameter sets."""

    params: list[ParamMapping]
    smoothing: dict[str, Smoothing] = field(default_factory=dict)

    def needs_features(self) -> set[str]:
        return {s.name for p in self.params for s in p.sources if s.kind == "feature"}

    def needs_lanes(self) -> set[str]:
        return {s.name for p in self.params for s in p.sources if s.kind == "lane"}

    def resolve(self, positions: list[FramePosition], timeline: Timeline, features: Mapping[str, np.ndarray],
                lanes: Mapping[str, Any]) -> list[dict[str, dict[str, float]]]:
        """Per frame: {bend id: {param: value}}. ``features`` are already smoothed and in [0, 1]."""
        n = len(positions)
        out: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
        for pm in self.params:
            total = np.full(n, pm.base, dtype=np.float64)
            for s in pm.sources:
                if s.kind == "const":
                    x = np.full(n, s.value)
                elif s.kind == "feature":
                    x = np.asarray(features[s.name], np.float64)
                elif s.kind == "lane":
                    lane = lanes[s.name]
                    x = np.array([lane.normalised_at(p.beats if lane.domain == "beats" else p.seconds) for p in positions])
                elif s.kind == "lfo":
                    x = np.array([s.lfo(p.beats, timeline) for p in positions])
                else:  # phase
                    f = timeline.beat_phase if s.name == "beat" else timeline.bar_phase
                    x = np.array([float(f(p.beats)) for p in positions])
                total += s.depth * np.asarray(curve(s.curve, np.clip(x, 0.0, 1.0)), np.float64)
            total = np.clip(total, pm.lo, pm.hi)
            for i in range(n):
                out[i].setdefault(pm.bend, {})[pm.name] = float(total[i])
        return out


def _f(d: dict, key: str, where: str, default: float | None = None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise MappingError(f"{where}.{key}", f"expected a finite number, got {v!r}")
    return float(v)


def load_mapping(config: Mapping[str, Any], plan: BendPlan, lane_names: set[str] | None = None) -> Mapping_:
    """Validate the ``[[param]]`` and ``[smoothing.*]`` tables of a config against ``plan``.

    ``lane_names``: lanes available (MIDI CC lanes, .rpp envelopes, plain lanes); None skips
    the check (live use, where lanes arrive later)."""
    bends = {b.id: b for b in plan.bends}
    params = []
    for i, p in enumerate(config.get("param", [])):
        where = f"param[{i}]"
        if not isinstance(p, dict):
            raise MappingError(where, "expected a table")
        bid = p.get("bend")
        if bid not in bends:
            raise MappingError(f"{where}.bend", f"no bend with id {bid!r}{suggest(str(bid), list(bends))} bends: {', '.join(bends) or 'none'}")
        spec = get_operator(bends[bid].op)
        name = p.get("name")
        per = spec.frame_params(floats_only=True)
        if name not in per:
            raise MappingError(f"{where}.name", f"{name!r} is not a per-frame parameter of {spec.name!r}{suggest(str(name), per)} valid: {', '.join(per)}")
        lo, hi = (0.0, 1.0) if name == "mix" else (spec.params[name].lo, spec.params[name].hi)
        lo = max(lo, _f(p, "min", where, lo))
        hi = min(hi, _f(p, "max", where, hi))
        if hi < lo:
            raise MappingError(f"{where}.max", f"max {hi} is below min {lo}")
        base_default = bends[bid].mix if name == "mix" else bends[bid].params.get(name, 0.0)
        sources = []
        for j, s in enumerate(p.get("source", [])):
            sw = f"{where}.source[{j}]"
            kind = s.get("kind")
            if kind not in KINDS:
                raise MappingError(f"{sw}.kind", f"{kind!r} is not valid; allowed: {', '.join(KINDS)}")
            src = Source(kind=kind, name=str(s.get("name", "")), depth=_f(s, "depth", sw, 1.0), curve=s.get("curve", "linear"),
                         shape=s.get("shape", "sine"), rate=_f(s, "rate", sw, 1.0), unit=s.get("unit", "beats"),
                         phase=_f(s, "phase", sw, 0.0), value=_f(s, "value", sw, 1.0))
            if src.curve not in CURVES:
                raise MappingError(f"{sw}.curve", f"{src.curve!r} is not valid; allowed: {', '.join(CURVES)}")
            if kind == "feature" and src.name not in FEATURES:
                raise MappingError(f"{sw}.name", f"unknown feature {src.name!r}{suggest(src.name, list(FEATURES))} features: {', '.join(FEATURES)}")
            if kind == "lane" and lane_names is not None and src.name not in lane_names:
                raise MappingError(f"{sw}.name", f"unknown lane {src.name!r}{suggest(src.name, sorted(lane_names))} lanes: {', '.join(sorted(lane_names)) or 'none'}")
            if kind == "lfo":
                if src.shape not in LFO_SHAPES:
                    raise MappingError(f"{sw}.shape", f"{src.shape!r} is not valid; allowed: {', '.join(LFO_SHAPES)}")
                if src.unit not in ("beats", "bars"):
                    raise MappingError(f"{sw}.unit", f"{src.unit!r} is not valid; allowed: beats, bars")
                if not 0 < src.rate <= 64:
                    raise MappingError(f"{sw}.rate", f"{src.rate} is out of range; allowed (0, 64] cycles per {src.unit[:-1]}")
            if kind == "phase" and src.name not in ("beat", "bar"):
                raise MappingError(f"{sw}.name", f"{src.name!r} is not valid; allowed: beat, bar")
            sources.append(src)
        params.append(ParamMapping(bid, name, _f(p, "base", where, float(base_default)), tuple(sources), lo, hi))
    smoothing = {}
    for feat, s in (config.get("smoothing") or {}).items():
        if feat not in FEATURES:
            raise MappingError(f"smoothing.{feat}", f"unknown feature{suggest(feat, list(FEATURES))} features: {', '.join(FEATURES)}")
        vals = {k: _f(s, k, f"smoothing.{feat}") for k in s}
        bad = set(vals) - {"median", "attack", "release", "gate"}
        if bad:
            raise MappingError(f"smoothing.{feat}.{sorted(bad)[0]}", "unknown field; valid: median, attack, release, gate")
        if any(v < 0 for v in vals.values()) or vals.get("gate", 0) > 1:
            raise MappingError(f"smoothing.{feat}", "times must be ≥ 0 s and gate in [0, 1]")
        smoothing[feat] = Smoothing(**vals)
    return Mapping_(params, smoothing)
