"""How an automation value moves from one breakpoint to the next: the hosts' curve shapes.

Shapes are numbered as REAPER numbers them (its envelope point ``shape``), plus two of Ardour's:

====  ===========  ==========================================================================
  0   linear       v1 + (v2 − v1)·x
  1   square       v1 until the next point
  2   slow         slow start/end: ease x²(3 − 2x)
  3   fast_start   1 − (1 − x)³
  4   fast_end     x³
  5   bezier       cubic Bézier through cardinal-spline control points (alpha 0.25, from the
                   neighbouring points), bent by the point's tension in [−1, 1] and clamped to
                   the lane's range
  6   logarithmic  v1·(v2/v1)^x (Ardour)
  7   fader        linear in a gain fader's position (Ardour's gain lanes)
====  ===========  ==========================================================================

x is the fraction of the way from one point to the next in the lane's own time. The REAPER
formulas are those its SDK community documents for ``Envelope_Evaluate`` (SWS, BR_EnvelopeUtil:
"fast end f(x) = x^3", "fast start f(x) = 1 − (1 − x)^3", "slow start/end f(x) = x^2 (3 − 2x)", and
the Bézier built with WDL's ``LICE_Bezier_FindCardinalCtlPts`` and ``LICE_CBezier_GetY``).
"""

from __future__ import annotations

import math

__all__ = ["SHAPES", "ease", "bezier_value", "log_value", "fader_value"]

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


def ease(shape: int, x: float) -> float:
    """The fraction of the change done a fraction ``x`` of the way, for shapes 0–4."""
    if shape == 1:
        return 0.0
    if shape == 2:
        return x * x * (3.0 - 2.0 * x)
    if shape == 3:
        return 1.0 - (1.0 - x) ** 3
    if shape == 4:
        return x**3
    return x


def _cardinal(alpha: float, x1: float, x2: float, x3: float, y1: float, y2: float, y3: float) -> tuple[float, ...]:
    """Control points either side of (x2, y2) on the cardinal spline through its neighbours:
    (x before, y before, x after, y after)."""
    dxa, dxb = alpha * (x2 - x1), alpha * (x3 - x2)
    slope = 0.0 if x1 == x3 else (y3 - y1) / (x3 - x1)
    return x2 - dxa, y2 - slope * dxa, x2 + dxb, y2 + slope * dxb


def _cubic_y_at_x(xs: tuple[float, float, float, float], ys: tuple[float, float, float, float], x: float) -> float:
    """y of the cubic Bézier with control points (xs, ys) where its x equals ``x`` (x monotone)."""
    cx = 3.0 * (xs[1] - xs[0])
    bx = 3.0 * (xs[2] - xs[1]) - cx
    ax = xs[3] - xs[0] - cx - bx
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection on t: x(t) is monotone for control points inside [x0, x3]
        t = 0.5 * (lo + hi)
        if ((ax * t + bx) * t + cx) * t + xs[0] < x:
            lo = t
        else:
            hi = t
    t = 0.5 * (lo + hi)
    cy = 3.0 * (ys[1] - ys[0])
    by = 3.0 * (ys[2] - ys[1]) - cy
    ay = ys[3] - ys[0] - cy - by
    return ((ay * t + by) * t + cy) * t + ys[0]


def bezier_value(
    before: tuple[float, float],
    start: tuple[float, float],
    end: tuple[float, float],
    after: tuple[float, float],
    tension: float,
    at: float,
    value_range: tuple[float, float],
) -> float:
    """REAPER's Bézier segment from ``start`` to ``end`` (each ``(time, value)``) at time ``at``.

    ``before``/``after`` are the neighbouring points (or the segment's own ends at the edges of the
    lane); ``tension`` in [−1, 1] holds the curve near the start value longer (> 0: a late, fast
    change) or moves it sooner (< 0: an early change)."""
    (t0, v0), (t1, v1), (t2, v2), (t3, v3) = before, start, end, after
    if at <= t1 or at >= t2:
        return v1 if at <= t1 else v2
    _, _, x1, y1 = _cardinal(0.25, t0, t1, t2, v0, v1, v2)
    x2, y2, _, _ = _cardinal(0.25, t1, t2, t3, v1, v2, v3)
    if tension > 0:
        x1, x2 = x1 + tension * (t2 - x1), x2 + tension * (t2 - x2)
        y1, y2 = y1 - tension * (y1 - v1), y2 - tension * (y2 - v1)
    elif tension < 0:
        x1, x2 = x1 + tension * (x1 - t1), x2 + tension * (x2 - t1)
        y1, y2 = y1 - tension * (v2 - y1), y2 - tension * (v2 - y2)
    lo, hi = value_range
    x1, x2 = min(max(x1, t1), t2), min(max(x2, t1), t2)
    y1, y2 = min(max(y1, lo), hi), min(max(y2, lo), hi)
    return _cubic_y_at_x((t1, x1, x2, t2), (v1, y1, y2, v2), at)


def log_value(v1: float, v2: float, x: float) -> float:
    """Ardour's logarithmic segment (equal ratios in equal times); linear through zero or a sign change."""
    return v1 * (v2 / v1) ** x if v1 * v2 > 0 else v1 + (v2 - v1) * x


def _fader_position(gain: float) -> float:
    """A gain coefficient in [0, 2] as a fader position in [0, 1] (Ardour's fader law)."""
    return 0.0 if gain <= 0 else ((6.0 * math.log2(gain) + 192.0) / 198.0) ** 8


def _fader_gain(position: float) -> float:
    return 0.0 if position <= 0 else 2.0 ** ((position ** (1 / 8) * 198.0 - 192.0) / 6.0)


def fader_value(v1: float, v2: float, x: float, hi: float) -> float:
    """Ardour's gain segment: linear in fader position, for a gain lane whose maximum is ``hi``."""
    tiny = 1e-7  # as the host does, to stay clear of log 0
    if abs(v2 - v1) < tiny:
        return v2
    g0, g1 = (_fader_position((v + tiny) * 2.0 / hi) for v in (v1, v2))
    return _fader_gain(g0 + x * (g1 - g0)) * hi / 2.0
