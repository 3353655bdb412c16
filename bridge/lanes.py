"""Automation lanes: breakpoints with shapes, evaluated at any exact timeline position.

A lane lives in ``seconds`` or ``beats`` (quarter notes); each point's shape says how the value
moves to the next point, numbered as REAPER numbers them (0 linear, 1 square, 2 slow start/end,
3 fast start, 4 fast end, 5 Bézier with the point's tension) plus Ardour's 6 logarithmic and
7 fader; :mod:`bridge.shapes` gives each formula. Before the first point a lane's value is the first value
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

from .shapes import SHAPES, bezier_value, ease, fader_value, log_value
from .tempo import as_fraction

__all__ = ["LanePoint", "AutomationLane", "SHAPES", "load_lanes", "LaneError"]

_BY_NAME = {v: k for k, v in SHAPES.items()} | {"step": 1, "hold": 1}


class LaneError(BendbridgeError):
    """An automation lane or lane file that is wrong."""


@dataclass(frozen=True)
class LanePoint:
    time: Fraction  # in the lane's domain
    value: float
    shape: int = 0
    tension: float = 0.0


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
        return self._between(i, t)

    def _between(self, i: int, t: Fraction) -> float:
        """The value at ``t`` between point ``i`` and the next, by point ``i``'s shape."""
        p, q = self.points[i], self.points[i + 1]
        x = float((t - p.time) / (q.time - p.time))
        if p.shape == 5:
            before = self.points[i - 1] if i > 0 else p
            after = self.points[i + 2] if i + 2 < len(self.points) else q
            rel = [float(pt.time - p.time) for pt in (before, q, after)]  # seconds or beats after p
            return bezier_value(
                (rel[0], before.value),
                (0.0, p.value),
                (rel[1], q.value),
                (rel[2], after.value),
                p.tension,
                float(t - p.time),
                (self.lo, self.hi),
            )
        if p.shape == 6:
            return log_value(p.value, q.value, x)
        if p.shape == 7:
            return fader_value(p.value, q.value, x, self.hi)
        return p.value + (q.value - p.value) * ease(p.shape, x)

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
