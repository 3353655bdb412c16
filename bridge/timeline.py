"""The video frame grid on the DAW timeline, in exact arithmetic.

Frame ``i`` is shown at ``start + i / fps`` seconds (``fps`` rational, e.g. 30000/1001), at
sample ``round(time · rate)`` — computed from ``i`` directly, never by adding frame durations, so
no frame drifts at any length. A :class:`Timeline` adds the tempo and time-signature maps to give
each frame its beats and bar:beat:tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from bendbridge.protocol.position import FramePosition

from .tempo import TempoMap, TimelineError, TimeSignatureMap, as_fraction

__all__ = ["parse_fps", "round_half_up", "FrameGrid", "Timeline"]


def parse_fps(text: str | int | float | Fraction, where: str = "fps") -> Fraction:
    """'24', '30000/1001', '29.97' (taken as 30000/1001), 25 → a positive rational frame rate."""
    if isinstance(text, Fraction):
        fps = text
    elif isinstance(text, str):
        t = text.strip()
        aliases = {"23.976": Fraction(24000, 1001), "29.97": Fraction(30000, 1001), "59.94": Fraction(60000, 1001)}
        try:
            fps = aliases.get(t) or Fraction(t)
        except (ValueError, ZeroDivisionError):
            raise TimelineError(
                where, f"frame rate {text!r}: expected a number or a ratio such as 30000/1001"
            ) from None
    else:
        fps = as_fraction(text)
    if not 0 < fps <= 1000:
        raise TimelineError(where, f"frame rate {text} out of range (0, 1000]")
    return fps


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@dataclass(frozen=True)
class FrameGrid:
    """Frames at ``start + i/fps`` seconds; samples at ``rate`` Hz."""

    fps: Fraction
    rate: int = 48_000
    start: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", parse_fps(self.fps))
        object.__setattr__(self, "start", as_fraction(self.start))
        if not 1 <= self.rate <= 768_000:
            raise TimelineError("rate", f"sample rate {self.rate} out of range [1, 768000]")
        if self.start < 0:
            raise TimelineError("start", "the grid cannot start before 0 s")

    def time(self, i: int) -> Fraction:
        """Exact time of frame ``i`` in seconds."""
        return self.start + i / self.fps

    def sample(self, i: int) -> int:
        """Sample position of frame ``i`` (the nearest sample; ties round up)."""
        return round_half_up(self.time(i) * self.rate)

    def frame_at(self, seconds: Fraction | int | float) -> int:
        """Index of the frame shown at ``seconds`` (the last one starting at or before it)."""
        return math.floor((as_fraction(seconds) - self.start) * self.fps)

    def count(self, end: Fraction | int | float) -> int:
        """Frames in [start, end): every frame whose time is before ``end``, i.e. ceil((end − start)·fps)."""
        return max(0, math.ceil((as_fraction(end) - self.start) * self.fps))


@dataclass
class Timeline:
    """A frame grid on a tempo map with time signatures."""

    grid: FrameGrid
    tempo: TempoMap = field(default_factory=lambda: TempoMap.constant(120))
    meter: TimeSignatureMap = field(default_factory=TimeSignatureMap)

    def position(self, i: int) -> FramePosition:
        t = self.grid.time(i)
        b = self.tempo.beats_at(t)
        return FramePosition(i, t, self.grid.sample(i), b, self.meter.bar_beat(b))

    def seconds_of_bar(self, bar: int, beat: Fraction | int | float = 1) -> Fraction:
        return self.tempo.seconds_at(self.meter.beats_of(bar, beat))

    def beat_phase(self, beats: Fraction) -> Fraction:
        """Position within the current beat of the time signature, in [0, 1)."""
        unit = Fraction(4, self.meter.at_beats(beats).den)
        x = (beats - self.meter.beats_of(self.meter.bar_beat(beats).bar)) / unit
        return x - math.floor(x)

    def bar_phase(self, beats: Fraction) -> Fraction:
        """Position within the current bar, in [0, 1)."""
        bb = self.meter.bar_beat(beats)
        return (beats - self.meter.beats_of(bb.bar)) / self.meter.at_beats(beats).bar_beats
