"""Exact timeline arithmetic: tempo maps, time signatures, the frame grid."""

from __future__ import annotations

import random
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.bridge.tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap
from bendbridge.bridge.timeline import FrameGrid, Timeline, parse_fps

settings.register_profile("bridge", max_examples=50, deadline=None)
settings.load_profile("bridge")

tempo_points = st.lists(
    st.tuples(st.fractions(0, 600, max_denominator=1000), st.integers(40, 240), st.booleans()), min_size=1, max_size=12
)


@given(tempo_points, st.fractions(0, 900, max_denominator=10_000))
def test_seconds_to_beats_and_back_is_exact_on_steps_and_within_a_femtosecond_on_ramps(points, t):
    tm = TempoMap.from_points(points)
    back = tm.seconds_at(tm.beats_at(t))
    assert abs(back - t) < F(1, 10**15)


@given(tempo_points)
def test_beats_increase_strictly_with_time(points):
    tm = TempoMap.from_points(points)
    ts = [F(i, 7) for i in range(0, 7 * 700, 13)]
    bs = [tm.beats_at(t) for t in ts]
    assert all(a < b for a, b in zip(bs, bs[1:]))


def test_constant_tempo_is_exact():
    tm = TempoMap.constant(120)
    assert tm.beats_at(F(1, 3)) == F(2, 3) and tm.seconds_at(7) == F(7, 2)


def test_stepped_changes_at_beats_place_times_exactly():
    tm = TempoMap.from_beat_changes([(0, 120), (8, 90), (16, 150)])
    assert tm.seconds_at(8) == 4 and tm.seconds_at(16) == 4 + F(8 * 60, 90) and tm.beats_at(tm.seconds_at(20)) == 20


def test_a_linear_ramp_integrates_the_tempo():
    tm = TempoMap.from_points([(0, 60, True), (10, 120, False)])
    # bpm(t) = 60 + 6t → beats(10) = (60·10 + 3·100) / 60 = 15
    assert tm.beats_at(10) == 15 and tm.bpm_at(5) == 90 and tm.beats_at(12) == 15 + 4


@given(st.integers(40, 240), st.integers(40, 240), st.fractions(1, 30, max_denominator=100))
def test_a_ramp_linear_in_beats_reaches_the_next_tempo_and_round_trips(bpm0, bpm1, length):
    """Ardour's ramps: the tempo is linear in beats, so exponential in time."""
    tm = TempoMap([TempoPoint(F(0), F(bpm0), True, curve="beats"), TempoPoint(length, F(bpm1))])
    assert float(tm.bpm_at(length - F(1, 10**9))) == pytest.approx(bpm1, rel=1e-6)
    mid = tm.beats_at(length / 2)
    assert float(tm.bpm_at(length / 2)) == pytest.approx(
        bpm0 + (bpm1 - bpm0) * float(mid / tm.beats_at(length)), rel=1e-9
    )
    for t in (F(0), length / 3, length, length + 5):
        assert abs(tm.seconds_at(tm.beats_at(t)) - t) < F(1, 10**12)


def test_a_point_anchored_at_a_beat_keeps_that_beat():
    """A DAW stores each tempo point's own beat position; the map uses it rather than re-integrating."""
    tm = TempoMap([TempoPoint(F(0), F(120)), TempoPoint(F(4), F(90), beats=F(8) + F(1, 1920))])
    assert tm.beats_at(4) == 8 + F(1, 1920) and tm.beats_at(5) == 8 + F(1, 1920) + F(90, 60)


def test_time_signatures_give_bar_beat_tick_and_back():
    m = TimeSignatureMap([TimeSignature(1, 4, 4), TimeSignature(3, 7, 8), TimeSignature(5, 3, 4)])
    assert str(m.bar_beat(0)) == "1:1:000" and str(m.bar_beat(F(7, 2))) == "1:4:480"
    assert (
        str(m.bar_beat(8)) == "3:1:000" and str(m.bar_beat(F(23, 2))) == "4:1:000" and str(m.bar_beat(15)) == "5:1:000"
    )
    for b in [F(i, 8) for i in range(0, 200)]:
        bb = m.bar_beat(b)
        assert m.beats_of(bb.bar, bb.beat, bb.tick) <= b < m.beats_of(bb.bar, bb.beat, bb.tick + 1)


def test_time_signature_changes_off_the_bar_line_are_refused():
    with pytest.raises(ValueError, match="does not fall on a bar line"):
        TimeSignatureMap.from_beat_changes([(0, 4, 4), (6, 3, 4)])
    with pytest.raises(ValueError, match="denominator a power of two"):
        TimeSignature(1, 4, 3)


@pytest.mark.parametrize("fps", ["24", "25", "30000/1001", "30", "60", "29.97"])
def test_frame_times_never_drift(fps):
    g = FrameGrid(parse_fps(fps), 48_000)
    for i in (0, 1, 1000, 10**6, 10**7 + 3):
        assert g.time(i) == i / g.fps
        assert abs(g.sample(i) - g.time(i) * 48_000) <= F(1, 2)
        assert g.frame_at(g.time(i)) == i


def test_frame_count_covers_every_frame_before_the_end():
    g = FrameGrid(F(30000, 1001), 48_000, start=F(3, 2))
    n = g.count(F(21, 2))  # 9 s of 29.97 fps
    assert g.time(n - 1) < F(21, 2) <= g.time(n) and n == 270


def test_bad_frame_rates_are_named():
    with pytest.raises(ValueError, match=r"frame rate 'abc': expected a number or a ratio such as 30000/1001"):
        parse_fps("abc")
    with pytest.raises(ValueError, match=r"out of range"):
        parse_fps("0")


@pytest.mark.slow
def test_three_hours_at_29_97_with_50_tempo_changes_places_every_frame_within_half_a_sample():
    rng = random.Random(3)
    pts = [(0, 120, False)] + [
        (F(rng.randrange(1, 3 * 3600 * 1000), 1000), rng.randrange(60, 181), rng.random() < 0.5) for _ in range(50)
    ]
    tl = Timeline(FrameGrid(F(30000, 1001), 48_000), TempoMap.from_points(pts))
    n = tl.grid.count(3 * 3600)
    assert n == 323_677
    g = tl.grid
    assert all(abs(g.sample(i) - g.time(i) * 48_000) <= F(1, 2) for i in range(n))
    for i in range(0, n, 11):  # beats and the beats → sample round trip on every 11th frame
        p = tl.position(i)
        assert abs(p.sample - p.seconds * 48_000) <= F(1, 2)
        assert tl.tempo.sample_at_beats(p.beats, 48_000) == p.sample
    last = tl.position(n - 1)
    assert last.seconds == F((n - 1) * 1001, 30000)


def test_beat_and_bar_phase():
    tl = Timeline(FrameGrid(F(24), 48_000), TempoMap.constant(120), TimeSignatureMap([TimeSignature(1, 3, 4)]))
    assert tl.beat_phase(F(5, 2)) == F(1, 2) and tl.bar_phase(F(9, 2)) == F(1, 2)
