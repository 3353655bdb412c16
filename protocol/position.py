"""A frame's place on the DAW timeline: one definition for the bridge, the wire and manifests.

Seconds and beats are exact :class:`~fractions.Fraction` values on the bridge; on the wire and in
manifests a position travels as the fields of :data:`POSITION_FIELDS` (``frame``, ``sample``,
``seconds``, ``beats``, ``bar``, ``beat``), with the exact time kept as a sample position.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["BarBeat", "FramePosition", "POSITION_FIELDS"]

POSITION_FIELDS = ("frame", "sample", "seconds", "beats", "bar", "beat")


@dataclass(frozen=True)
class BarBeat:
    """bar (1-based), beat in the bar (1-based, in the signature's beat unit), tick in the beat."""

    bar: int
    beat: int
    tick: int
    ppq: int = 960

    def __str__(self) -> str:
        return f"{self.bar}:{self.beat}:{self.tick:03d}"


@dataclass(frozen=True)
class FramePosition:
    """Frame ``frame`` of a frame grid: its exact time (seconds), its sample at the session's rate,
    its position in quarter-note beats and its bar:beat:tick."""

    frame: int
    seconds: Fraction
    sample: int
    beats: Fraction
    bar_beat: BarBeat

    def wire(self) -> dict[str, int | float]:
        """The :data:`POSITION_FIELDS` of this frame, as frame requests and manifests carry them."""
        return {
            "frame": self.frame,
            "sample": self.sample,
            "seconds": float(self.seconds),
            "beats": float(self.beats),
            "bar": self.bar_beat.bar,
            "beat": float(self.bar_beat.beat),
        }
