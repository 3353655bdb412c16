"""A host's tempo map, rebuilt from the positions it reported while rolling.

A plugin hears, at the start of (most) blocks, where the host is: the sample, the bar and the
position in the bar (LV2 ``time:bar``/``time:barBeat``), and a tempo. The positions are the truth;
the tempo is not always the one in force (inside a tempo ramp Ardour reports the ramp's starting
tempo, and in its own unit of ``note-type`` notes per minute). So the map is fitted to the
positions: the anchors are split into runs that one straight line (one constant tempo) passes
within :data:`ANCHOR_TOLERANCE` of — the tempo the host reported when it fits, else the one the
positions give — and neighbouring lines are joined where they meet, or, if they do not meet
between their anchors, by a constant tempo from the end of one to the start of the next. Inside
a ramp this gives a run of short constant tempos, each within the tolerance of the host.

Hosts count the fraction in ``time:barBeat`` in two ways (see :func:`bar_beat_count`); the
positions themselves tell which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from bendbridge.protocol import Transport

from .tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap

__all__ = ["ANCHOR_TOLERANCE", "Anchor", "anchors_of", "bar_beat_count", "meter_from_bars", "tempo_through"]

ANCHOR_TOLERANCE = Fraction(1, 1920)  # quarter notes: one tick at 1920 per quarter (Ardour counts whole ticks)


@dataclass(frozen=True)
class Anchor:
    sample: int
    quarters: Fraction  # quarter notes from the start of the song
    bpm: Fraction  # the tempo the host reported here (quarter notes per minute, perhaps stale)


@dataclass(frozen=True)
class _Line:
    first: int  # index of the first anchor on the line
    last: int  # index of the last
    sample: int  # where ``quarters`` holds (the first anchor's sample)
    quarters: Fraction
    slope: Fraction  # quarter notes per sample

    def at(self, sample: Fraction | int) -> Fraction:
        return self.quarters + (sample - self.sample) * self.slope


def meter_from_bars(barred: list[Transport]) -> TimeSignatureMap:
    """Each meter starts at the bar the host first reported it in."""
    sigs = [TimeSignature(1, barred[0].ts_num, barred[0].ts_den)]
    for t in barred[1:]:
        if (t.ts_num, t.ts_den) != (sigs[-1].num, sigs[-1].den):
            sigs = [s for s in sigs if s.bar < t.bar] + [TimeSignature(t.bar, t.ts_num, t.ts_den)]
    return TimeSignatureMap(sigs)


def _quarters_in_bar(t: Transport, count: str) -> Fraction:
    """Quarter notes from the bar line to ``t``, reading ``t.bar_beat`` as counted in ``count``."""
    beats = Fraction(t.bar_beat)
    if count == "beats":
        return beats * 4 / t.ts_den
    whole = math.floor(beats)
    return Fraction(whole * 4, t.ts_den) + (beats - whole)


def bar_beat_count(barred: list[Transport]) -> str:
    """How the host counts the fraction in its bar_beat: ``"beats"`` (the LV2 ``time:barBeat``
    definition: beats of the meter's unit) or ``"quarters"`` (whole beats plus the quarter notes
    since the beat: Ardour 7 and 8 send beats − 1 + ticks/1920, with 1920 ticks per quarter note in
    any meter). The two differ only where the beat is not a quarter note; the count whose
    positions move on most evenly from block to block is the host's (the other jumps at every beat).
    """
    if all(t.ts_den == 4 for t in barred):
        return "beats"
    meter = meter_from_bars(barred)
    unevenness = {}
    for count in ("beats", "quarters"):
        q = [meter.beats_of(t.bar) + _quarters_in_bar(t, count) for t in barred]
        speeds = [(q[i + 1] - q[i]) / (barred[i + 1].sample - barred[i].sample) for i in range(len(q) - 1)]
        unevenness[count] = sum(abs(v2 - v1) for v1, v2 in zip(speeds, speeds[1:]))
    return min(unevenness, key=lambda c: (unevenness[c], c != "beats"))


def _reported_bpm(tempo: float) -> Fraction:
    """The simplest rational that a host's single-precision tempo stands for (91.30000305 → 91.3)."""
    exact = Fraction(tempo)
    for den in (1, 10, 100, 1000, 10_000):
        simple = exact.limit_denominator(den)
        if np.float32(float(simple)) == np.float32(tempo):
            return simple
    return exact


def anchors_of(barred: list[Transport], meter: TimeSignatureMap | None = None) -> list[Anchor]:
    """Sample, quarter notes and reported tempo of every transport that has the host's bar and beat
    (``meter``: the song's, when ``barred`` is only its recent part)."""
    meter = meter or meter_from_bars(barred)
    count = bar_beat_count(barred)
    return [
        Anchor(t.sample, meter.beats_of(t.bar) + _quarters_in_bar(t, count), _reported_bpm(t.tempo)) for t in barred
    ]


def _fit(anchors: list[Anchor], first: int, rate: int) -> _Line:
    """The longest run from ``first`` that a line through its first anchor passes within the
    tolerance of (the cone of slopes that reach every later one), with that line's slope: the
    reported tempo's where it fits, else the middle of the cone. The line goes through the first
    anchor exactly, so a run that starts on a bar line keeps it there."""
    a0 = anchors[first]
    lo, hi = Fraction(-(10**9)), Fraction(10**9)
    last = first
    for k in range(first + 1, len(anchors)):
        d = anchors[k].sample - a0.sample
        nlo = max(lo, (anchors[k].quarters - ANCHOR_TOLERANCE - a0.quarters) / d)
        nhi = min(hi, (anchors[k].quarters + ANCHOR_TOLERANCE - a0.quarters) / d)
        if nlo > nhi:
            break
        lo, hi, last = nlo, nhi, k
    reported = a0.bpm / (60 * rate)
    slope = reported if last == first or lo <= reported <= hi else (lo + hi) / 2
    return _Line(first, last, a0.sample, a0.quarters, slope)


def _on_the_beat(q: Fraction, meter: TimeSignatureMap) -> Fraction | None:
    """The beat of ``meter`` within :data:`ANCHOR_TOLERANCE` of position ``q`` (quarter notes), if any."""
    bb = meter.bar_beat(q)
    unit = Fraction(4, meter.at_beats(q).den)
    beat = meter.beats_of(bb.bar, bb.beat)
    nearest = min((beat, beat + unit), key=lambda b: abs(b - q))
    return nearest if abs(nearest - q) <= ANCHOR_TOLERANCE else None


def _join(a: _Line, b: _Line, end: int, start: int, meter: TimeSignatureMap, rate: int) -> list[TempoPoint]:
    """The tempo points that take line ``a`` (last anchor at ``end``) on to line ``b`` (first at
    ``start``): a change where the lines meet — on the beat if one is that close, as DAWs put
    tempo changes on the grid, with ``b`` moved to pass through it — else a constant tempo
    bridging the two anchors."""
    meet = (b.at(0) - a.at(0)) / (a.slope - b.slope) if a.slope != b.slope else None
    if meet is not None and end <= meet <= start:
        q = a.at(meet)
        beat = _on_the_beat(q, meter)
        if beat is not None and a.slope > 0:
            meet, q = a.sample + (beat - a.quarters) / a.slope, beat
        return [TempoPoint(meet / rate, b.slope * 60 * rate, beats=q)]
    points = []
    bridge = (b.at(start) - a.at(end)) / (start - end)
    if bridge > 0:
        points.append(TempoPoint(Fraction(end, rate), bridge * 60 * rate, beats=a.at(end)))
    points.append(TempoPoint(Fraction(start, rate), b.slope * 60 * rate, beats=b.at(start)))
    return points


def tempo_through(anchors: list[Anchor], rate: int, meter: TimeSignatureMap | None = None) -> TempoMap:
    """The tempo map through the host's anchors (in timeline order, at least one); ``meter`` puts
    tempo changes that fall within a tick of a beat on it."""
    meter = meter or TimeSignatureMap()
    lines = [_fit(anchors, 0, rate)]
    while lines[-1].last + 1 < len(anchors):
        lines.append(_fit(anchors, lines[-1].last + 1, rate))
    first = lines[0]
    points = [TempoPoint(Fraction(0), first.slope * 60 * rate, beats=first.at(0))]
    for i in range(1, len(lines)):
        a, b = lines[i - 1], lines[i]
        joined = _join(a, b, anchors[a.last].sample, anchors[b.first].sample, meter, rate)
        last = joined[-1]
        lines[i] = _Line(b.first, b.last, last.seconds * rate, last.beats, b.slope)  # b from where it starts
        points += joined
    return TempoMap(points)
