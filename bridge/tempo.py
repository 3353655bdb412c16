"""Tempo and time-signature maps in exact arithmetic.

Units: seconds and beats are :class:`fractions.Fraction` (beats are quarter notes), tempo in BPM.
A tempo map is a list of segments; each holds a constant tempo or ramps to the next point's tempo,
*linearly in time* (REAPER's linear tempo shape) or *linearly in beats* (Ardour's ramps, which are
exponential in time). For the first, beats(t) is a quadratic in t with rational coefficients, so
seconds → beats is exact and beats → seconds solves that quadratic from the segment's start
(never by accumulating steps): exact for constant segments, within 10⁻¹⁵ s for ramps. A ramp
linear in beats is evaluated in double precision from its segment's start (within 10⁻¹² s).
:meth:`TempoMap.sample_at_beats` rounds to the exact nearest sample.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.position import BarBeat

__all__ = ["TempoPoint", "TempoMap", "TimeSignature", "TimeSignatureMap", "TimelineError", "as_fraction"]

Number = int | float | Fraction


class TimelineError(BendbridgeError):
    """A tempo, time signature, frame rate or position that the timeline cannot hold."""


def as_fraction(x: Number | str) -> Fraction:
    """Exact rational of ``x`` (floats are taken at their exact binary value)."""
    if isinstance(x, float) and not math.isfinite(x):
        raise TimelineError(None, f"{x} is not a finite time or tempo")
    return x if isinstance(x, Fraction) else Fraction(x)


@dataclass(frozen=True)
class TempoPoint:
    """Tempo ``bpm`` from ``seconds`` on.

    ``ramp`` = True ramps to the next point's tempo: linearly in time (``curve`` "time", REAPER),
    or linearly in beats (``curve`` "beats", Ardour), which makes the tempo exponential in time.
    ``beats``, when given, anchors the point at that beat position (as a DAW stores it) instead
    of the position the tempo before it integrates to.
    """

    seconds: Fraction
    bpm: Fraction
    ramp: bool = False
    beats: Fraction | None = None
    curve: str = "time"


@dataclass(frozen=True)
class _Segment:
    t0: Fraction  # seconds
    b0: Fraction  # beats at t0
    bpm0: Fraction
    slope: Fraction  # d(bpm)/d(seconds) of a ramp linear in time; 0 otherwise
    growth: float = 0.0  # 1/s: a ramp linear in beats has bpm(t) = bpm0·exp(growth·(t − t0)); 0 otherwise


class TempoMap:
    """Piecewise tempo map. Build it from points in seconds (:meth:`from_points`) or from
    stepped changes at beat positions (:meth:`from_beat_changes`, as in a MIDI file)."""

    def __init__(self, points: list[TempoPoint]):
        if not points:
            points = [TempoPoint(Fraction(0), Fraction(120))]
        pts = sorted(points, key=lambda p: p.seconds)
        if pts[0].seconds != 0:
            pts.insert(0, TempoPoint(Fraction(0), pts[0].bpm))
        for p in pts:
            if not 0 < p.bpm <= 10_000:
                raise TimelineError(
                    "tempo", f"{float(p.bpm):g} BPM at {float(p.seconds):g} s is out of range; allowed (0, 10000]"
                )
        self.points = pts
        segs: list[_Segment] = []
        b = Fraction(0)
        for i, p in enumerate(pts):
            nxt = pts[i + 1] if i + 1 < len(pts) else None
            seg = _segment(p, nxt, p.beats if p.beats is not None else b)
            segs.append(seg)
            if nxt is not None:
                b = self._beats_in(seg, nxt.seconds)
        self._segs = segs
        self._t = [s.t0 for s in segs]
        self._b = [s.b0 for s in segs]

    @classmethod
    def constant(cls, bpm: Number) -> TempoMap:
        return cls([TempoPoint(Fraction(0), as_fraction(bpm))])

    @classmethod
    def from_points(cls, points: list[tuple[Number, Number, bool]]) -> TempoMap:
        """``(seconds, bpm, ramp_to_next)`` triples."""
        return cls([TempoPoint(as_fraction(t), as_fraction(b), r) for t, b, r in points])

    @classmethod
    def from_beat_changes(cls, changes: list[tuple[Number, Number]]) -> TempoMap:
        """Stepped tempo changes ``(beat, bpm)`` in file order; the times follow exactly.

        As in a Standard MIDI File: of several changes at one beat the last one given is in force,
        and before the first change the tempo is 120 BPM (500,000 µs per quarter note)."""
        by_beat: dict[Fraction, Fraction] = {}
        for b, bpm in changes:
            by_beat[as_fraction(b)] = as_fraction(bpm)  # a later change at the same beat replaces it
        ch = sorted(by_beat.items())
        if not ch or ch[0][0] != 0:
            ch.insert(0, (Fraction(0), Fraction(120)))
        pts, t = [], Fraction(0)
        for i, (b, bpm) in enumerate(ch):
            if i:
                pb, pbpm = ch[i - 1]
                t += (b - pb) * 60 / pbpm
            pts.append(TempoPoint(t, bpm))
        return cls(pts)

    # ------------------------------------------------------------------ conversions
    @staticmethod
    def _beats_in(s: _Segment, t: Fraction) -> Fraction:
        d = t - s.t0
        if s.growth:
            return s.b0 + Fraction(float(s.bpm0) / 60 * math.expm1(s.growth * float(d)) / s.growth)
        return s.b0 + (s.bpm0 * d + s.slope * d * d / 2) / 60

    def beats_at(self, seconds: Number) -> Fraction:
        """Exact beat position (quarter notes) at ``seconds`` ≥ 0."""
        t = as_fraction(seconds)
        i = max(0, bisect.bisect_right(self._t, t) - 1)
        return self._beats_in(self._segs[i], t)

    def bpm_at(self, seconds: Number) -> Fraction:
        t = as_fraction(seconds)
        s = self._segs[max(0, bisect.bisect_right(self._t, t) - 1)]
        if s.growth:
            return Fraction(float(s.bpm0) * math.exp(s.growth * float(t - s.t0)))
        return s.bpm0 + s.slope * (t - s.t0)

    def seconds_at(self, beats: Number) -> Fraction:
        """Time of beat position ``beats``: exact for constant tempo, ≤ 1e-15 s off on ramps."""
        b = as_fraction(beats)
        s = self._segs[max(0, bisect.bisect_right(self._b, b) - 1)]
        db = b - s.b0
        if s.growth:
            return s.t0 + Fraction(math.log1p(s.growth * 60 * float(db) / float(s.bpm0)) / s.growth)
        if s.slope == 0:
            return s.t0 + db * 60 / s.bpm0
        # k/2·d² + bpm0·d − 60·db = 0  →  d = 2·60·db / (bpm0 + sqrt(bpm0² + 2·k·60·db))  (stable form)
        disc = s.bpm0 * s.bpm0 + 2 * s.slope * 60 * db
        root = _sqrt(disc)
        return s.t0 + 120 * db / (s.bpm0 + root)

    def sample_at_beats(self, beats: Number, rate: int) -> int:
        """The sample nearest to beat position ``beats`` (exact: checked against beats_at)."""
        b = as_fraction(beats)
        n = math.floor(self.seconds_at(b) * rate + Fraction(1, 2))
        # make n exactly the nearest sample: compare neighbours with exact beat positions
        best = min((n - 1, n, n + 1), key=lambda k: (abs(self.beats_at(Fraction(max(k, 0), rate)) - b), k))
        return max(best, 0)


def _segment(p: TempoPoint, nxt: TempoPoint | None, b0: Fraction) -> _Segment:
    """The segment from point ``p`` (at beat ``b0``) to ``nxt``."""
    if not (p.ramp and nxt is not None and nxt.seconds > p.seconds):
        return _Segment(p.seconds, b0, p.bpm, Fraction(0))
    if p.curve == "beats":  # linear in beats: exponential in time, reaching nxt.bpm at nxt.seconds
        growth = math.log(nxt.bpm / p.bpm) / float(nxt.seconds - p.seconds)
        return _Segment(p.seconds, b0, p.bpm, Fraction(0), growth)
    return _Segment(p.seconds, b0, p.bpm, (nxt.bpm - p.bpm) / (nxt.seconds - p.seconds))


def _sqrt(x: Fraction) -> Fraction:
    """Square root of a non-negative rational to about 1e-30 relative precision."""
    if x < 0:
        raise TimelineError("tempo", "a tempo ramp reaches a negative tempo")
    scale = 10**40
    n = x.numerator * scale * scale // x.denominator
    return Fraction(math.isqrt(n), scale)


# ---------------------------------------------------------------------------- time signatures
@dataclass(frozen=True)
class TimeSignature:
    bar: int  # first bar (1-based) with this signature
    num: int
    den: int
    start: Fraction | None = None  # quarter notes where it starts, when that cuts the bar before it short

    def __post_init__(self) -> None:
        if self.num < 1 or self.den < 1 or self.den & (self.den - 1):
            raise TimelineError(
                "time signature", f"{self.num}/{self.den} at bar {self.bar}: numerator ≥ 1, denominator a power of two"
            )

    @property
    def bar_beats(self) -> Fraction:
        """Quarter notes per bar."""
        return Fraction(self.num * 4, self.den)


class TimeSignatureMap:
    """Time-signature changes at bar starts; converts quarter-note beats ↔ bar:beat:tick."""

    def __init__(self, sigs: list[TimeSignature] | None = None):
        sigs = sorted(sigs or [TimeSignature(1, 4, 4)], key=lambda s: s.bar)
        if sigs[0].bar != 1:
            sigs.insert(0, TimeSignature(1, sigs[0].num, sigs[0].den))
        self.sigs = sigs
        self._start: list[Fraction] = []  # beat position of each signature's first bar
        b = Fraction(0)
        for i, s in enumerate(sigs):
            if i:
                prev = sigs[i - 1]
                full = b + (s.bar - prev.bar) * prev.bar_beats
                if s.start is not None and not full - prev.bar_beats < s.start <= full:
                    raise TimelineError(
                        "time signature",
                        f"{s.num}/{s.den} at bar {s.bar} starts at beat {float(s.start):g}, not within bar {s.bar - 1}",
                    )
                b = full if s.start is None else as_fraction(s.start)
            self._start.append(b)

    @classmethod
    def from_beat_changes(
        cls, changes: list[tuple[Number, int, int]], warnings: list[str] | None = None
    ) -> TimeSignatureMap:
        """Changes ``(beat, num, den)`` in file order, as in a MIDI file. A change off the bar line of
        the meter before it is refused, unless ``warnings`` is given: then it starts a new bar (the
        bar in progress is cut short, as notation programs write pickups and cadenzas) and is named
        there once."""
        sigs: list[TimeSignature] = []
        bar, last_b, last = 1, Fraction(0), None
        for b, num, den in sorted(((as_fraction(b), n, d) for b, n, d in changes), key=lambda c: c[0]):
            start = None
            if last is not None:
                bars = (b - last_b) / last.bar_beats
                if bars.denominator != 1:
                    where = f"{num}/{den} at beat {float(b):g} does not fall on a bar line"
                    if warnings is None:
                        raise TimelineError("time signature", where)
                    cut = bar + math.floor(bars)
                    warnings.append(f"{where} of {last.num}/{last.den}: it starts a new bar; bar {cut} is cut short")
                    start = b
                bar += math.ceil(bars)
            last, last_b = TimeSignature(bar, num, den, start), b
            if sigs and sigs[-1].bar == bar:
                sigs[-1] = TimeSignature(bar, num, den, sigs[-1].start)
                last = sigs[-1]
            else:
                sigs.append(last)
        return cls(sigs)

    def changes(self) -> list[tuple[Fraction, TimeSignature]]:
        """Each signature with the quarter-note position where it starts."""
        return list(zip(self._start, self.sigs))

    def at_beats(self, beats: Number) -> TimeSignature:
        return self.sigs[max(0, bisect.bisect_right(self._start, as_fraction(beats)) - 1)]

    def bar_beat(self, beats: Number, ppq: int = 960) -> BarBeat:
        """bar:beat:tick of a quarter-note position (beats ≥ 0); ticks are floored."""
        b = as_fraction(beats)
        i = max(0, bisect.bisect_right(self._start, b) - 1)
        s, start = self.sigs[i], self._start[i]
        x = b - start
        bars = math.floor(x / s.bar_beats)
        within = x - bars * s.bar_beats
        unit = Fraction(4, s.den)
        beat = math.floor(within / unit)
        tick = math.floor((within - beat * unit) / unit * ppq)
        return BarBeat(s.bar + bars, beat + 1, tick, ppq)

    def beats_of(self, bar: int, beat: Number = 1, tick: int = 0, ppq: int = 960) -> Fraction:
        """Quarter-note position of bar:beat:tick (bar and beat 1-based)."""
        if bar < 1:
            raise TimelineError("bar", f"{bar}: bars start at 1")
        i = max(0, bisect.bisect_right([s.bar for s in self.sigs], bar) - 1)
        s = self.sigs[i]
        unit = Fraction(4, s.den)
        return (
            self._start[i] + (bar - s.bar) * s.bar_beats + (as_fraction(beat) - 1) * unit + Fraction(tick, ppq) * unit
        )
