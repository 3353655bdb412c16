"""Every project file bendbridge reads, behind one call: :func:`read_project`.

The format is told by the file's suffix (and, for a MIDI file without one, by its header). Each
reader returns the same :class:`ProjectFile`: the tempo map, the meters, the automation lanes by
name, and the warnings that say where the file was read differently from its letter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane
from .tempo import TempoMap, TimeSignatureMap

__all__ = ["ProjectFile", "read_project", "FORMATS", "ProjectFormatError"]


class ProjectFormatError(BendbridgeError):
    """A file whose format bendbridge does not read."""


@dataclass
class ProjectFile:
    path: Path
    kind: str  # "Standard MIDI File", "REAPER project", …
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    length_beats: Fraction | None = None  # where the file says it ends, when it says so

    def end_seconds(self) -> Fraction:
        """The file's end, or its last tempo change or lane point, in seconds (0 for an empty file)."""
        ends = [p.seconds for p in self.tempo.points]
        if self.length_beats is not None:
            ends.append(self.tempo.seconds_at(self.length_beats))
        for lane in self.lanes.values():
            t = lane.points[-1].time
            ends.append(self.tempo.seconds_at(t) if lane.domain == "beats" else t)
        return max(ends, default=Fraction(0))


_READERS = {  # format: (what it is, module, reader) — each reader returns tempo, meter, lanes, warnings
    "midi": ("Standard MIDI File", "midifile", "read_midi"),
    "rpp": ("REAPER project", "rpp", "read_rpp"),
    "ardour": ("Ardour session", "ardour", "read_ardour"),
    "dawproject": ("DAWproject", "dawproject", "read_dawproject"),
    "als": ("Ableton Live set", "als", "read_als"),
}


def _reader(fmt: str) -> Callable[[Path], ProjectFile]:
    kind, module, function = _READERS[fmt]

    def read(path: Path) -> ProjectFile:
        s = getattr(importlib.import_module(f"{__package__}.{module}"), function)(path)
        length = getattr(s, "length_beats", None)
        return ProjectFile(path, kind, s.tempo, s.meter, s.lanes, list(s.warnings), length)

    return read


FORMATS: dict[str, Callable[[Path], ProjectFile]] = {
    ".mid": _reader("midi"),
    ".midi": _reader("midi"),
    ".smf": _reader("midi"),
    ".kar": _reader("midi"),
    ".rpp": _reader("rpp"),
    ".ardour": _reader("ardour"),
    ".dawproject": _reader("dawproject"),
    ".als": _reader("als"),
}


def read_project(path: str | Path, as_format: str | None = None) -> ProjectFile:
    """Read any supported project file, by its suffix or as ``as_format`` (a key of :data:`FORMATS`);
    an unknown suffix is named with the ones that are read."""
    p = Path(path)
    if not p.is_file():
        raise ProjectFormatError(str(p), "no such file")
    reader = FORMATS.get(as_format or p.suffix.lower())
    if reader is None and p.read_bytes()[:4] == b"MThd":
        reader = FORMATS[".mid"]
    if reader is None:
        allowed = ", ".join(sorted(FORMATS))
        raise ProjectFormatError(
            str(p), f"suffix {p.suffix or '(none)'!r} is not a format bendbridge reads; allowed: {allowed}"
        )
    return reader(p)
