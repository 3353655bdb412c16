"""Envelope shapes as REAPER and Ardour evaluate them (bridge.shapes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bendbridge.bridge.shapes import bezier_value, ease, fader_value, log_value

unit = st.floats(0.0, 1.0)


@given(unit)
def test_reaper_eases_follow_their_polynomials(x):
    assert ease(0, x) == pytest.approx(x)
    assert ease(1, x) == 0.0
    assert ease(2, x) == pytest.approx(3 * x**2 - 2 * x**3)
    assert ease(3, x) == pytest.approx(1 - (1 - x) ** 3)
    assert ease(4, x) == pytest.approx(x**3)


@given(unit)
def test_fast_start_and_fast_end_mirror_each_other(x):
    assert ease(3, x) == pytest.approx(1 - ease(4, 1 - x))


@given(st.floats(-5, 5), st.floats(0.1, 3), st.floats(0.1, 3), st.floats(0.1, 3), unit)
def test_a_bezier_through_points_on_a_line_is_that_line(slope, d0, d1, d2, x):
    """The cardinal spline of collinear points is their line, whatever the spacing."""
    line = lambda t: 1.0 + slope * t  # noqa: E731
    at = x * d1
    v = bezier_value((-d0, line(-d0)), (0.0, line(0.0)), (d1, line(d1)), (d1 + d2, line(d1 + d2)), 0.0, at, (-99, 99))
    assert v == pytest.approx(line(at), abs=1e-9)


@given(st.floats(-1, 1), unit)
def test_a_bezier_starts_and_ends_on_its_points_and_stays_between_them(tension, x):
    v = bezier_value((0.0, 0.0), (0.0, 0.0), (2.0, 1.0), (2.0, 1.0), tension, 2.0 * x, (0.0, 1.0))
    assert -1e-9 <= v <= 1 + 1e-9
    assert bezier_value((0.0, 0.0), (0.0, 0.0), (2.0, 1.0), (2.0, 1.0), tension, 0.0, (0, 1)) == pytest.approx(0)
    assert bezier_value((0.0, 0.0), (0.0, 0.0), (2.0, 1.0), (2.0, 1.0), tension, 2.0, (0, 1)) == pytest.approx(1)


def test_bezier_tension_moves_the_change_later_or_sooner():
    def at_quarter(tension):
        return bezier_value((0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0), tension, 0.25, (0.0, 1.0))

    assert at_quarter(0.9) < at_quarter(0.0) < at_quarter(-0.9)
    assert at_quarter(0.0) == pytest.approx(0.25)  # at a lane's edges, with no tension, the segment is straight


@given(st.floats(0.01, 4), st.floats(0.01, 4), unit)
def test_logarithmic_segments_keep_equal_ratios(v1, v2, x):
    assert log_value(v1, v2, x) == pytest.approx(v1 ** (1 - x) * v2**x, rel=1e-9)


def test_fader_segments_pass_through_both_ends():
    assert fader_value(0.5, 1.5, 0.0, 2.0) == pytest.approx(0.5, rel=1e-5)
    assert fader_value(0.5, 1.5, 1.0, 2.0) == pytest.approx(1.5, rel=1e-5)
