"""Rebuilding a host's tempo map and automation from what a plugin heard, block by block."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.bridge.host_controls import control_lane
from bendbridge.bridge.host_tempo import anchors_of, bar_beat_count, meter_from_bars, tempo_through
from bendbridge.bridge.tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap
from bendbridge.protocol import Transport

RATE = 48_000
TICK = F(1, 1920)


def host_transports(tempo: TempoMap, meter: TimeSignatureMap, end: int, block: int, count: str, reported=None):
    """What a host reports at each block start: its tempo (``reported(seconds)``, default the
    tempo in force), meter, bar and bar_beat — whole beats plus ticks rounded down to 1/1920 of a
    quarter ("quarters", as Ardour counts) or the beat fraction ("beats", the LV2 definition)."""
    out = []
    for sample in range(0, end, block):
        t = F(sample, RATE)
        q = tempo.beats_at(t)
        sig = meter.at_beats(q)
        bb = meter.bar_beat(q)
        into = q - meter.beats_of(bb.bar)  # quarter notes into the bar
        beat_len = F(4, sig.den)
        whole = math.floor(into / beat_len)
        if count == "quarters":
            bar_beat = whole + math.floor((into - whole * beat_len) * 1920) / 1920
        else:
            bar_beat = into / beat_len
        bpm = reported(t) if reported else tempo.bpm_at(t)
        out.append(
            Transport(
                True, sample, float(np.float32(bpm)), sig.num, sig.den, bar=bb.bar, bar_beat=float(np.float32(bar_beat))
            )
        )
    return out


SONG_TEMPO = TempoMap(
    [
        TempoPoint(F(0), F(120)),
        TempoPoint(F(4), F(913, 10), beats=F(8)),
        TempoPoint(F(4) + F(27 * 60, F(913, 10)), F(913, 10), True, beats=F(35), curve="beats"),
        TempoPoint(
            F(4) + F(27 * 60, F(913, 10)) + F(60 * 7 * math.log(140 / 91.3) / (140 - 91.3)), F(140), beats=F(42)
        ),
    ]
)
SONG_METER = TimeSignatureMap([TimeSignature(1, 4, 4), TimeSignature(5, 3, 4), TimeSignature(9, 7, 8)])


@pytest.mark.parametrize("count", ["quarters", "beats"])
def test_the_tempo_map_is_rebuilt_from_positions_within_two_ticks_and_bars_exact(count):
    # inside the ramp the host reports its starting tempo, as Ardour does
    ramp_start = SONG_TEMPO.points[2].seconds
    ramp_end = SONG_TEMPO.points[3].seconds
    stale = lambda t: SONG_TEMPO.bpm_at(ramp_start) if ramp_start <= t < ramp_end else SONG_TEMPO.bpm_at(t)  # noqa: E731
    transports = host_transports(SONG_TEMPO, SONG_METER, 30 * RATE, 1024, count, reported=stale)
    assert bar_beat_count(transports) == count
    rebuilt = tempo_through(anchors_of(transports), RATE, meter_from_bars(transports))
    meter = meter_from_bars(transports)
    assert [(s.bar, s.num, s.den) for s in meter.sigs] == [(1, 4, 4), (5, 3, 4), (9, 7, 8)]
    for sample in range(0, 30 * RATE, 2400):
        t = F(sample, RATE)
        assert abs(rebuilt.beats_at(t) - SONG_TEMPO.beats_at(t)) <= 2 * TICK, sample
        assert meter.bar_beat(rebuilt.beats_at(t)).bar == SONG_METER.bar_beat(SONG_TEMPO.beats_at(t)).bar, sample
    # a tempo change that falls on a beat is put on it: the bar line at the change is exact
    assert rebuilt.beats_at(4) == 8


def test_a_tempo_heard_in_single_precision_is_read_as_the_tempo_the_host_meant():
    transports = host_transports(TempoMap.constant(F(913, 10)), TimeSignatureMap(), RATE * 10, 512, "beats")
    rebuilt = tempo_through(anchors_of(transports), RATE)
    assert [p.bpm for p in rebuilt.points] == [F(913, 10)]


def test_without_bar_and_beat_the_reported_tempo_steps_where_it_was_reported():
    from bendbridge.bridge.plugin_link import PluginStream

    stream = PluginStream(rate=RATE)
    stream.transports = [Transport(True, s, 120.0 if s < 96_000 else 90.0) for s in range(0, 192_000, 1024)]
    tempo = stream._tempo()
    assert [(p.seconds, p.bpm) for p in tempo.points] == [(0, 120), (F(96_256, RATE), 90)]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 400_000), st.floats(0, 1)), min_size=2, max_size=8, unique_by=lambda p: p[0]),
    st.sampled_from([0, 1]),
)
def test_a_lane_through_heard_values_gives_back_every_value_heard(points, shape):
    """Whatever the automation, the rebuilt lane equals the value heard at every run() start."""
    points = sorted(points)
    heard = []
    for sample in sorted({*range(0, 500_000, 1024), *(p[0] for p in points)}):
        i = max((k for k, p in enumerate(points) if p[0] <= sample), default=0)
        v = points[i][1]
        if shape == 0 and i + 1 < len(points) and sample >= points[0][0]:
            (s0, v0), (s1, v1) = points[i], points[i + 1]
            v = v0 + (v1 - v0) * (sample - s0) / (s1 - s0)
        heard.append((sample, float(np.float32(v))))
    lane = control_lane("m", heard, RATE)
    for sample, value in heard:
        assert lane.value_at(F(sample, RATE)) == pytest.approx(value, abs=2e-6)


def test_a_linear_ramp_is_rebuilt_between_blocks_and_a_step_lands_on_its_sample():
    def truth(s):
        if s < 48_000:
            return 0.0
        return min(1.0, (s - 48_000) / 384_000)

    starts = sorted({*range(0, 600_000, 1024), 48_000, 432_000})
    ramp = control_lane("ramp", [(s, float(np.float32(truth(s)))) for s in starts], RATE)
    assert len(ramp.points) <= 5  # the ramp is one segment, not a point per block
    assert max(abs(ramp.value_at(F(s, RATE)) - truth(s)) for s in range(0, 600_000, 97)) < 1e-6

    starts = sorted({*range(0, 400_000, 1024), 120_013})
    step = control_lane("step", [(s, 0.0 if s < 120_013 else 0.5) for s in starts], RATE)
    assert step.value_at(F(120_012, RATE)) == 0.0 and step.value_at(F(120_013, RATE)) == 0.5
