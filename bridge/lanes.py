"""Automation lanes: breakpoints with shapes, evaluated at any exact timeline position.

A lane lives in ``seconds`` or ``beats`` (quarter notes); each point's shape says how the value
moves to the next point (REAPER's numbering): 0 linear, 1 square (hold), 2 slow start/end,
3 fast start, 4 fast end, 5 Bézier (taken as a smooth S with the point's tension); and Ardour's
6 logarithmic (v0·(v1/v0)^x) and 7 fader (linear in a gain fader's position, for gain lanes
whose maximum is the lane's ``hi``). Before the first point a lane's value is the first value
(as hosts evaluate it), but it has no *normalised* value: mapping leaves the parameter at its base
there. After the last point a lane holds the last value. Values are normalised to [0, 1] through
the lane's ``lo``/``hi`` (e.g. a REAPER ``PARMENV``'s min/max).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .tempo import as_fraction

__all__ = ["LanePoint", "AutomationLane", "SHAPES", "load_lanes", "LaneError"]

SHAPES = {
    0: "linear",
    1: "square",
    2: "slow",
    3: "fast_start",
    4: "fast_end",
    5: "bezier",
    6: "logarithmic",
    7: "fader",
}
_BY_NAME = {v: k for k, v in SHAPES.items()} | {"step": 1, "hold": 1}


class LaneError(BendbridgeError):
    """An automation lane or lane file that is wrong."""


@dataclass(frozen=True)
class LanePoint:
    time: Fraction  # in the lane's domain
    value: float
    shape: int = 0
    tension: float = 0.0


def _fader_position(gain: float) -> float:
    """A gain coefficient in [0, 2] as a fader position in [0, 1] (the mixer's fader law)."""
    return 0.0 if gain <= 0 else ((6.0 * math.log2(gain) + 192.0) / 198.0) ** 8


def _fader_gain(position: float) -> float:
    return 0.0 if position <= 0 else 2.0 ** ((position ** (1 / 8) * 198.0 - 192.0) / 6.0)


def _interpolate(p: LanePoint, q: LanePoint, x: float, hi: float) -> float:
    """The value a fraction ``x`` of the way from point ``p`` to point ``q``."""
    if p.shape == 6 and p.value * q.value > 0:
        return p.value * (q.value / p.value) ** x
    if p.shape == 7:
        tiny = 1e-7  # as the host does, to stay clear of log 0
        g0, g1 = (_fader_position((v + tiny) * 2.0 / hi) for v in (p.value, q.value))
        if abs(q.value - p.value) < tiny:
            return q.value
        return _fader_gain(g0 + x * (g1 - g0)) * hi / 2.0
    return p.value + (q.value - p.value) * _ease(p.shape, x, p.tension)


def _ease(shape: int, x: float, tension: float) -> float:
    if shape == 0:
        return x
    if shape == 1:
        return 0.0
    if shape == 2:
        return 0.5 - 0.5 * math.cos(math.pi * x)
    if shape == 3:
        return 1.0 - (1.0 - x) ** 2
    if shape == 4:
        return x * x
    # Bézier: a smoothstep bent by tension in [-1, 1]
    s = x * x * (3 - 2 * x)
    return s + tension * (x - s) if tension else s


@dataclass
class AutomationLane:
    name: str
    points: list[LanePoint]
    domain: str = "seconds"  # or "beats"
    lo: float = 0.0
    hi: float = 1.0
    _times: list[Fraction] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.domain not in ("seconds", "beats"):
            raise LaneError(None, f"lane {self.name!r}: domain {self.domain!r} is not valid; allowed: seconds, beats")
        if not self.points:
            raise LaneError(None, f"lane {self.name!r} has no points")
        if not self.hi > self.lo:
            raise LaneError(None, f"lane {self.name!r}: range [{self.lo}, {self.hi}] is empty")
        for p in self.points:
            if not math.isfinite(p.value):
                raise LaneError(None, f"lane {self.name!r}: value {p.value} at {float(p.time):g} is not finite")
            if p.shape not in SHAPES:
                raise LaneError(None, f"lane {self.name!r}: shape {p.shape} is not valid; allowed: {SHAPES}")
        self.points = sorted(self.points, key=lambda p: p.time)  # stable: equal times keep file order
        self._times = [p.time for p in self.points]

    def value_at(self, t: Fraction | float | int) -> float:
        """Raw value at position ``t`` (in the lane's domain)."""
        t = as_fraction(t)
        i = bisect.bisect_right(self._times, t) - 1
        if i < 0:
            return self.points[0].value
        p = self.points[i]
        if i + 1 >= len(self.points):
            return p.value
        q = self.points[i + 1]
        if q.time == p.time:
            return q.value
        return _interpolate(p, q, float((t - p.time) / (q.time - p.time)), self.hi)

    def normalised_at(self, t: Fraction | float | int) -> float | None:
        """The value in [0, 1] through ``lo``/``hi``; None before the first point, where the lane
        has no value yet (a mapped parameter keeps its base there)."""
        if as_fraction(t) < self.points[0].time:
            return None
        return min(1.0, max(0.0, (self.value_at(t) - self.lo) / (self.hi - self.lo)))


def _shape(v: object, where: str) -> int:
    if isinstance(v, str):
        if v in _BY_NAME:
            return _BY_NAME[v]
        if v.isdigit():
            v = int(v)
        else:
            raise LaneError(where, f"shape {v!r} is not valid; allowed: {', '.join(_BY_NAME)} or 0-7")
    if isinstance(v, int) and v in SHAPES:
        return v
    raise LaneError(where, f"shape {v!r} is not valid; allowed: 0-7 or {', '.join(_BY_NAME)}")


def load_lanes(path: str | Path) -> list[AutomationLane]:
    """Plain lanes from JSON (``{"lanes": [{"name", "domain", "lo", "hi", "points": [[t, v, shape?], …]}]}``)
    or CSV (header ``seconds,value[,shape]`` or ``beats,value[,shape]``; the lane is named after the file)."""
    p = Path(path)
    if not p.exists():
        raise LaneError(str(p), "no such lane file")
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LaneError(str(p), f"not valid JSON ({e})") from None
        out = []
        for i, lane in enumerate(d.get("lanes", []) if isinstance(d, dict) else []):
            where = f"{p}: lanes[{i}]"
            try:
                pts = [
                    LanePoint(
                        as_fraction(pt[0]), float(pt[1]), _shape(pt[2] if len(pt) > 2 else 0, f"{where}.points[{j}]")
                    )
                    for j, pt in enumerate(lane["points"])
                ]
                out.append(
                    AutomationLane(
                        str(lane["name"]),
                        pts,
                        lane.get("domain", "seconds"),
                        float(lane.get("lo", 0)),
                        float(lane.get("hi", 1)),
                    )
                )
            except (KeyError, TypeError, IndexError, ValueError) as e:
                raise LaneError(where, f"{e}") from None
        if not out:
            raise LaneError(str(p), 'expected {"lanes": [...]} with at least one lane')
        return out
    with open(p, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] not in (["seconds", "value"], ["beats", "value"]):
        raise LaneError(str(p), "line 1: expected a header 'seconds,value[,shape]' or 'beats,value[,shape]'")
    pts = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            pts.append(
                LanePoint(
                    as_fraction(row[0]),
                    float(row[1]),
                    _shape(row[2], f"{p}: line {n}") if len(row) > 2 and row[2] else 0,
                )
            )
        except (ValueError, IndexError, ZeroDivisionError):
            raise LaneError(str(p), f"line {n}: expected time,value[,shape], got {','.join(row)!r}") from None
    return [AutomationLane(p.stem, pts, rows[0][0])]
