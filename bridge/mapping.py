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

from bendbridge.protocol.errors import hint
from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.values import finite_number

from .features import FEATURES, Smoothing
from .timeline import FramePosition, Timeline

__all__ = ["Source", "ParamMapping", "MusicMapping", "load_mapping", "CURVES", "LFO_SHAPES", "MappingError", "curve"]

CURVES = ("linear", "exp", "log", "s")
LFO_SHAPES = ("sine", "triangle", "saw", "square")
KINDS = ("feature", "lane", "lfo", "const", "phase")


class MappingError(PlanError):
    """A ``[[param]]`` or ``[smoothing.*]`` table is wrong."""


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
class MusicMapping:
    """How the music drives a plan's parameters, validated. ``resolve`` turns frames into
    per-frame parameter sets."""

    params: list[ParamMapping]
    smoothing: dict[str, Smoothing] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # sources that had no data in the last resolve

    def needs_features(self) -> set[str]:
        return {s.name for p in self.params for s in p.sources if s.kind == "feature"}

    def needs_lanes(self) -> set[str]:
        return {s.name for p in self.params for s in p.sources if s.kind == "lane"}

    def resolve(
        self,
        positions: list[FramePosition],
        timeline: Timeline,
        features: Mapping[str, np.ndarray],
        lanes: Mapping[str, Any],
    ) -> list[dict[str, dict[str, float]]]:
        """Per frame: {bend id: {param: value}}. ``features`` are already smoothed and in [0, 1].

        A source with no data — a feature or lane not given (no live audio yet, an OSC lane never
        sent), a lane before its first point, NaN — is neutral: it adds nothing, so the parameter
        keeps its base from the other sources; missing names land in :attr:`missing`."""
        n = len(positions)
        self.missing = set()
        out: list[dict[str, dict[str, float]]] = [{} for _ in range(n)]
        for pm in self.params:
            total = np.full(n, pm.base, dtype=np.float64)
            for s in pm.sources:
                if s.kind == "const":
                    x = np.full(n, s.value)
                elif s.kind == "feature":
                    x = np.asarray(features[s.name], np.float64) if s.name in features else np.full(n, np.nan)
                    if np.isnan(x).all():
                        self.missing.add(f"feature {s.name}")
                elif s.kind == "lane":
                    lane = lanes.get(s.name)
                    x = _lane_values(lane, positions)
                    if lane is None or (getattr(lane, "live", False) and np.isnan(x).all()):
                        self.missing.add(f"lane {s.name}")  # not given, or a live lane never sent
                elif s.kind == "lfo":
                    x = np.array([s.lfo(p.beats, timeline) for p in positions])
                else:  # phase
                    f = timeline.beat_phase if s.name == "beat" else timeline.bar_phase
                    x = np.array([float(f(p.beats)) for p in positions])
                term = s.depth * np.asarray(curve(s.curve, np.clip(np.nan_to_num(x), 0.0, 1.0)), np.float64)
                total += np.where(np.isnan(x), 0.0, term)  # a lane before its first point adds nothing
            total = np.clip(total, pm.lo, pm.hi)
            for i in range(n):
                out[i].setdefault(pm.bend, {})[pm.name] = float(total[i])
        return out


def _lane_values(lane: Any, positions: list[FramePosition]) -> np.ndarray:
    """A lane's normalised values at the frames; NaN where it has none (before its first point)."""
    if lane is None:
        return np.full(len(positions), np.nan)
    heard = [lane.normalised_at(p.beats if lane.domain == "beats" else p.seconds) for p in positions]
    return np.array([np.nan if v is None else v for v in heard], np.float64)


def _number(table: dict, key: str, where: str, default: float | None = None) -> float:
    return finite_number(table.get(key, default), f"{where}.{key}", error=MappingError)


def _source(s: Any, where: str, lane_names: set[str] | None) -> Source:
    """One ``[[param.source]]`` table."""
    if not isinstance(s, dict):
        raise MappingError(where, "expected a table")
    kind = s.get("kind")
    if kind not in KINDS:
        raise MappingError(f"{where}.kind", f"{kind!r} is not valid; allowed: {', '.join(KINDS)}")
    src = Source(
        kind=kind,
        name=str(s.get("name", "")),
        depth=_number(s, "depth", where, 1.0),
        curve=s.get("curve", "linear"),
        shape=s.get("shape", "sine"),
        unit=s.get("unit", "beats"),
        rate=finite_number(s.get("rate", 1.0), f"{where}.rate", 0.0, 64.0, lo_open=True, error=MappingError),
        phase=_number(s, "phase", where, 0.0),
        value=_number(s, "value", where, 1.0),
    )
    if src.curve not in CURVES:
        raise MappingError(f"{where}.curve", f"{src.curve!r} is not valid; allowed: {', '.join(CURVES)}")
    if kind == "feature" and src.name not in FEATURES:
        raise MappingError(f"{where}.name", f"unknown feature {src.name!r}{hint(src.name, FEATURES, 'features')}")
    if kind == "lane" and lane_names is not None and src.name not in lane_names:
        raise MappingError(f"{where}.name", f"unknown lane {src.name!r}{hint(src.name, sorted(lane_names), 'lanes')}")
    if kind == "lfo":
        if src.shape not in LFO_SHAPES:
            raise MappingError(f"{where}.shape", f"{src.shape!r} is not valid; allowed: {', '.join(LFO_SHAPES)}")
        if src.unit not in ("beats", "bars"):
            raise MappingError(f"{where}.unit", f"{src.unit!r} is not valid; allowed: beats, bars")
    if kind == "phase" and src.name not in ("beat", "bar"):
        raise MappingError(f"{where}.name", f"{src.name!r} is not valid; allowed: beat, bar")
    return src


def _param_mapping(p: Any, where: str, plan: BendPlan, lane_names: set[str] | None) -> ParamMapping:
    """One ``[[param]]`` table: a bend's per-frame parameter, its range and its sources."""
    if not isinstance(p, dict):
        raise MappingError(where, "expected a table")
    bend, param = plan.frame_param(
        p.get("bend"), p.get("name"), bend_field=f"{where}.bend", name_field=f"{where}.name", error=MappingError
    )
    lo = max(param.lo, _number(p, "min", where, param.lo))
    hi = min(param.hi, _number(p, "max", where, param.hi))
    if hi < lo:
        raise MappingError(f"{where}.max", f"max {hi} is below min {lo}")
    sources = tuple(_source(s, f"{where}.source[{j}]", lane_names) for j, s in enumerate(p.get("source", [])))
    name = p["name"]
    return ParamMapping(bend.id, name, _number(p, "base", where, float(bend.base_value(name))), sources, lo, hi)


def _smoothing(table: Any) -> dict[str, Smoothing]:
    """The ``[smoothing.FEATURE]`` tables: median, attack, release (seconds ≥ 0), gate (fraction)."""
    out = {}
    for feat, s in (table or {}).items():
        if feat not in FEATURES:
            raise MappingError(f"smoothing.{feat}", f"unknown feature{hint(feat, FEATURES, 'features')}")
        bad = sorted(set(s) - {"median", "attack", "release", "gate"})
        if bad:
            raise MappingError(f"smoothing.{feat}.{bad[0]}", "unknown field; valid: median, attack, release, gate")
        out[feat] = Smoothing(
            **{
                k: finite_number(v, f"smoothing.{feat}.{k}", 0.0, 1.0 if k == "gate" else None, error=MappingError)
                for k, v in s.items()
            }
        )
    return out


def load_mapping(config: Mapping[str, Any], plan: BendPlan, lane_names: set[str] | None = None) -> MusicMapping:
    """Validate the ``[[param]]`` and ``[smoothing.*]`` tables of a config against ``plan``.

    ``lane_names``: lanes available (MIDI CC lanes, .rpp envelopes, plain lanes); None skips
    the check (live use, where lanes arrive later)."""
    params = [_param_mapping(p, f"param[{i}]", plan, lane_names) for i, p in enumerate(config.get("param", []))]
    return MusicMapping(params, _smoothing(config.get("smoothing")))
