"""A host's control-port values, heard at the start of each run(), as an automation lane.

An LV2 control port holds one value per ``run()``. A host evaluates a control's automation at the
start of each run() and splits a cycle into several run() calls at automation points (Ardour
does), so the native plugin, which sends every macro's value at the start of every run() while
rolling, hears a step at its exact sample and a linear ramp as values on one line at the start of
every cycle. This module turns those values back into the lane the host plays: a segment between
two heard values is linear where it belongs to a run of three or more values on one line (a ramp,
or a constant), and a step (the value held until the next one) everywhere else. Curved automation
(Ardour's logarithmic and exponential styles) is held per cycle, as the plugin heard it.
"""

from __future__ import annotations

from fractions import Fraction

from .lanes import AutomationLane, LanePoint

__all__ = ["COLLINEAR_TOLERANCE", "control_lane"]

COLLINEAR_TOLERANCE = 1e-6  # a value within this (times max(1, |value|)) of the line counts as on it


def _on_line(a: tuple[int, float], b: tuple[int, float], c: tuple[int, float]) -> bool:
    """Whether ``b`` lies on the line from ``a`` to ``c`` (samples a < b < c)."""
    (sa, va), (sb, vb), (sc, vc) = a, b, c
    expected = va + (vc - va) * (sb - sa) / (sc - sa)
    return abs(vb - expected) <= COLLINEAR_TOLERANCE * max(1.0, abs(vb))


def _tolerance(v: float) -> float:
    return COLLINEAR_TOLERANCE * max(1.0, abs(v))


def _last_on_line(pts: list[tuple[int, float]], first: int, stop: int) -> int:
    """The furthest index ≤ ``stop`` that a straight line from ``pts[first]`` reaches with every point
    in between within the tolerance of it (the cone of slopes through the first point)."""
    s0, v0 = pts[first]
    lo, hi = float("-inf"), float("inf")
    last = first + 1
    for k in range(first + 1, stop + 1):
        s, v = pts[k]
        slope = (v - v0) / (s - s0)
        if not lo <= slope <= hi:
            break
        last = k
        lo = max(lo, (v - _tolerance(v) - v0) / (s - s0))
        hi = min(hi, (v + _tolerance(v) - v0) / (s - s0))
    return last


def control_lane(name: str, heard: list[tuple[int, float]], rate: int) -> AutomationLane:
    """The lane through ``heard`` (sample, value) pairs; a sample heard twice keeps the last value.

    Points in the middle of a straight run are dropped, so a long ramp is two points."""
    pts = sorted(dict(heard).items())
    n = len(pts)
    on = [0 < k < n - 1 and _on_line(pts[k - 1], pts[k], pts[k + 1]) for k in range(n)]
    linear = [k + 1 < n and (on[k] or on[k + 1]) for k in range(n)]  # segment k → k+1
    points: list[LanePoint] = []
    k = 0
    while k < n:
        s, v = pts[k]
        points.append(LanePoint(Fraction(s, rate), v, 0 if linear[k] else 1))
        if not linear[k]:
            k += 1
            continue
        stop = k + 1
        while stop + 1 < n and linear[stop]:
            stop += 1  # the end of this run of linear segments
        k = _last_on_line(pts, k, stop)
    return AutomationLane(name, points, "seconds")
