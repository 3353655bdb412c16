"""REAPER project files (.rpp): tempo map, time signatures and automation envelopes.

An .rpp is text made of nested ``<BLOCK …>`` chunks closed by ``>``. Read here, field by field as
REAPER writes them (and as the SWS extension, REAPER's documented SDK companion, reads them):

- ``TEMPO bpm num den`` in the project chunk: the tempo and time signature before any marker;
- ``<TEMPOENVEX>`` points ``PT seconds bpm shape sig selected flags tension``: shape 1 (square)
  holds the tempo, shape 0 ramps it linearly *in time* to the next point (REAPER's gradual tempo
  change); ``sig`` = 65536·den + num (when > 0) starts a new time signature at that marker.
  A marker belongs on a bar line: one within :data:`BAR_TOLERANCE` quarter notes of a bar line is
  placed on it (REAPER writes positions rounded to about 12 digits); one whose ``flags`` carry
  bit 2 ("allow a partial measure before this marker") starts a new bar where it is, cutting the
  bar before it short; one off the bar line without that flag is read the same way and named in
  :attr:`RppProject.warnings`;
- track envelopes (``<VOLENV2>`` volume, ``<VOLENV>`` volume pre-FX, ``<VOLENV3>`` trim,
  ``<PANENV2>``/``<PANENV>`` pan, ``<WIDTHENV2>``/``<WIDTHENV>`` width, ``<MUTEENV>`` mute), the
  master track's (``<MASTERVOLENV2>`` …) and FX parameter envelopes (``<PARMENV idx min max
  default "name">``) with ``PT seconds value shape … tension`` lines, as lanes named
  ``TRACK/volume``, ``TRACK/pan``, ``master/volume``, ``TRACK/fxN/IDX`` (TRACK is the track's
  NAME, or ``track N``; fxN counts the track's FX from 1). Point shapes 0–5 are evaluated as REAPER
  does (:mod:`bridge.shapes`).
- An envelope REAPER shows as bypassed (``ACT 0``) drives nothing: it is not read, and named in
  the warnings. So are automation items (``POOLEDENVINST``), which are not read yet, and volume
  envelopes in fader scaling (``VOLTYPE 1``), whose points are exact but which REAPER moves along
  its fader curve between points, a curve it does not publish (bendbridge interpolates amplitude).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap, as_fraction

__all__ = ["RppProject", "read_rpp", "RppError", "BAR_TOLERANCE"]

BAR_TOLERANCE = Fraction(1, 1000)  # quarter notes: a meter marker this close to a bar line is on it
_PARTIAL_MEASURE = 4  # bit 2 of a tempo marker's flags: a partial measure may come before it
_TRACK_ENVELOPES = {
    "VOLENV2": ("volume", 0.0, 2.0),
    "VOLENV": ("volume (pre-FX)", 0.0, 2.0),
    "VOLENV3": ("trim", 0.0, 2.0),
    "PANENV2": ("pan", -1.0, 1.0),
    "PANENV": ("pan (pre-FX)", -1.0, 1.0),
    "WIDTHENV2": ("width", -1.0, 1.0),
    "WIDTHENV": ("width (pre-FX)", -1.0, 1.0),
    "MUTEENV": ("mute", 0.0, 1.0),
}
_MASTER_ENVELOPES = {"MASTER" + k: v for k, v in _TRACK_ENVELOPES.items()}
_FX_BLOCKS = ("VST", "AU", "JS", "DX", "CLAP", "LV2", "VIDEO_EFFECT")


class RppError(BendbridgeError):
    """A REAPER project that cannot be read."""


@dataclass
class RppProject:
    path: Path
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what was read differently from the file's letter


@dataclass
class _Chunk:
    name: str
    args: list[str]
    line: int
    lines: list[tuple[int, list[str]]] = field(default_factory=list)
    children: list[_Chunk] = field(default_factory=list)


def _tokens(text: str, where: str) -> list[str]:
    try:
        return shlex.split(text, posix=True)
    except ValueError:
        return text.split()


def _parse(text: str, path: Path) -> _Chunk:
    root = _Chunk("", [], 0)
    stack = [root]
    for n, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        if s.startswith("<"):
            toks = _tokens(s[1:], f"{path}:{n}")
            ch = _Chunk(toks[0] if toks else "", toks[1:], n)
            stack[-1].children.append(ch)
            stack.append(ch)
        elif s == ">":
            if len(stack) == 1:
                raise RppError(str(path), f"line {n}: '>' closes no open chunk")
            stack.pop()
        else:
            stack[-1].lines.append((n, _tokens(s, f"{path}:{n}")))
    if len(stack) != 1:
        raise RppError(str(path), f"chunk <{stack[-1].name}> opened on line {stack[-1].line} is never closed")
    return root


def _num(tok: list[str], i: int, path: Path, n: int, what: str, default: Fraction | None = None) -> Fraction:
    """Token ``i`` of line ``n`` as an exact number; ``default`` (when given) if the line is shorter."""
    if i >= len(tok) and default is not None:
        return default
    try:
        return as_fraction(tok[i])
    except (IndexError, ValueError, ZeroDivisionError):
        raise RppError(str(path), f"line {n}: expected {what} in {' '.join(tok)!r}") from None


def _points(ch: _Chunk, path: Path) -> list[LanePoint]:
    """An envelope's ``PT seconds value shape sig selected flags tension`` lines."""
    pts = []
    for n, tok in ch.lines:
        if tok and tok[0] == "PT":
            shape = int(_num(tok, 3, path, n, "a shape", Fraction(0)))
            if not 0 <= shape <= 5:
                raise RppError(str(path), f"line {n}: envelope point shape {shape} is not one of REAPER's 0-5")
            tension = float(_num(tok, 7, path, n, "a Bézier tension", Fraction(0)))
            value = float(_num(tok, 2, path, n, "a value"))
            pts.append(LanePoint(_num(tok, 1, path, n, "a time"), value, shape, max(-1.0, min(1.0, tension))))
    return pts


def _active(ch: _Chunk) -> bool:
    """False for an envelope REAPER shows as bypassed (``ACT 0``)."""
    act = next((t for _, t in ch.lines if t and t[0] == "ACT"), None)
    return act is None or len(act) < 2 or act[1] != "0"


def read_rpp(path: str | Path) -> RppProject:
    p = Path(path)
    if not p.is_file():
        raise RppError(str(p), "no such REAPER project")
    root = _parse(p.read_text(encoding="utf-8", errors="replace"), p)
    proj = next((c for c in root.children if c.name == "REAPER_PROJECT"), None)
    if proj is None:
        raise RppError(str(p), "line 1: not a REAPER project (no <REAPER_PROJECT> chunk)")
    warnings: list[str] = []
    tempo, meter = _tempo_and_meter(proj, p, warnings)
    lanes = _envelope_lanes(proj, "master", _MASTER_ENVELOPES, p, warnings)
    first_with: dict[str, int] = {}  # track name → the first track that has it
    for ti, track in enumerate((c for c in proj.children if c.name == "TRACK"), start=1):
        name = _track_name(track, ti)
        if name in first_with:
            unique = f"{name} [track {ti}]"
            warnings.append(
                f"line {track.line}: tracks {first_with[name]} and {ti} are both named {name!r}: "
                f"the lanes of track {ti} are named {unique!r}/…"
            )
            name = unique
        first_with.setdefault(name, ti)
        lanes.update(_track_lanes(track, name, p, warnings))
    return RppProject(p, tempo, meter, lanes, warnings)


def _tempo_and_meter(proj: _Chunk, p: Path, warnings: list[str]) -> tuple[TempoMap, TimeSignatureMap]:
    """The project's ``TEMPO`` line and ``<TEMPOENVEX>`` markers (with their time signatures)."""
    tempo_line = next(((n, t) for n, t in proj.lines if t and t[0] == "TEMPO"), None)
    if tempo_line is None:
        raise RppError(str(p), "the project has no TEMPO line (expected 'TEMPO bpm num den' in <REAPER_PROJECT>)")
    n, tok = tempo_line
    bpm = _num(tok, 1, p, n, "a tempo")
    num, den = (
        int(_num(tok, 2, p, n, "a numerator", Fraction(4))),
        int(_num(tok, 3, p, n, "a denominator", Fraction(4))),
    )
    env = next((c for c in proj.children if c.name == "TEMPOENVEX"), None)
    markers, sig_at = [], []
    for n, tok in env.lines if env is not None else []:
        if tok and tok[0] == "PT":
            t, b = _num(tok, 1, p, n, "a time"), _num(tok, 2, p, n, "a tempo")
            shape = int(_num(tok, 3, p, n, "a shape", Fraction(1)))
            markers.append(TempoPoint(t, b, shape != 1))
            sig = int(_num(tok, 4, p, n, "a time signature", Fraction(0)))
            if sig > 0:
                flags = int(_num(tok, 6, p, n, "marker flags", Fraction(0)))
                sig_at.append((t, sig & 0xFFFF, sig >> 16, bool(flags & _PARTIAL_MEASURE), n))
    if markers and markers[0].seconds > 0:
        markers.insert(0, TempoPoint(Fraction(0), bpm))
    try:
        tempo = TempoMap(markers or [TempoPoint(Fraction(0), bpm)])
        return tempo, _meter(tempo, TimeSignature(1, num, den), sig_at, p, warnings)
    except BendbridgeError as e:
        raise RppError(str(p), e.message) from None


def _meter(
    tempo: TempoMap,
    first: TimeSignature,
    sig_at: list[tuple[Fraction, int, int, bool, int]],
    p: Path,
    warnings: list[str],
) -> TimeSignatureMap:
    """Time signatures from meter markers, each on its bar line or starting a bar of its own."""
    sigs = [first]
    for t, snum, sden, partial, line in sig_at:
        beats = tempo.beats_at(t)
        if beats == 0:
            sigs = [TimeSignature(1, snum, sden)]
            continue
        ref = TimeSignatureMap(sigs)
        bar = ref.bar_beat(beats).bar
        start, end = ref.beats_of(bar), ref.beats_of(bar + 1)
        if beats - start <= BAR_TOLERANCE:
            new = TimeSignature(bar, snum, sden)
        elif end - beats <= BAR_TOLERANCE:
            bar, new = bar + 1, TimeSignature(bar + 1, snum, sden)
        else:  # a bar cut short before the marker
            bar, new = bar + 1, TimeSignature(bar + 1, snum, sden, beats)
            if not partial:
                warnings.append(
                    f"line {line}: meter marker {snum}/{sden} at {float(t):g} s lies {float(beats - start):g} quarter "
                    f"notes into bar {bar - 1} without 'allow a partial measure': it starts bar {bar} there"
                )
        sigs = [s for s in sigs if s.bar < bar] + [new]
    return TimeSignatureMap(sigs)


def _envelope_lanes(
    owner: _Chunk, name: str, kinds: dict[str, tuple[str, float, float]], p: Path, warnings: list[str]
) -> dict[str, AutomationLane]:
    """The envelopes of a track (or the master) whose chunk names are in ``kinds``."""
    lanes: dict[str, AutomationLane] = {}
    for c in owner.children:
        if c.name in kinds:
            kind, lo, hi = kinds[c.name]
            lane = _lane(c, f"{name}/{kind}", lo, hi, p, warnings)
            if lane is not None:
                lanes[lane.name] = lane
    return lanes


def _lane(c: _Chunk, name: str, lo: float, hi: float, p: Path, warnings: list[str]) -> AutomationLane | None:
    """One envelope chunk as a lane in seconds, or None (with a warning) when it drives nothing."""
    points = _points(c, p)
    if not points:
        return None  # REAPER keeps empty envelopes for every armed or shown parameter
    if not _active(c):
        warnings.append(f"line {c.line}: envelope {name!r} is bypassed in REAPER (ACT 0): it drives nothing")
        return None
    if any(t and t[0] == "POOLEDENVINST" for _, t in c.lines):
        warnings.append(f"line {c.line}: envelope {name!r} has automation items, which are not read: its points are")
    if c.name.startswith(("VOLENV", "MASTERVOLENV")) and any(t[:2] == ["VOLTYPE", "1"] for _, t in c.lines):
        warnings.append(
            f"line {c.line}: envelope {name!r} uses fader scaling (VOLTYPE 1): values at its points are exact, "
            "between them bendbridge moves linearly in amplitude where REAPER follows its fader curve"
        )
    return AutomationLane(name, points, "seconds", lo, hi if hi > lo else lo + 1.0)


def _track_name(track: _Chunk, index: int) -> str:
    """The track's NAME, or ``track N`` when it has none."""
    named = (" ".join(t[1:]) for _, t in track.lines if t and t[0] == "NAME" and len(t) > 1)
    return next(named, "") or f"track {index}"


def _track_lanes(track: _Chunk, tname: str, p: Path, warnings: list[str]) -> dict[str, AutomationLane]:
    """A track's own envelopes and its FX parameter envelopes, named TRACK/…"""
    lanes = _envelope_lanes(track, tname, _TRACK_ENVELOPES, p, warnings)
    for chain in (c for c in track.children if c.name == "FXCHAIN"):
        fx_index = 0
        for c in chain.children:
            if c.name in _FX_BLOCKS:
                fx_index += 1
            elif c.name == "PARMENV" and fx_index:
                a = c.args
                idx = a[0].split(":")[0] if a else "0"
                lo = float(_num(a, 1, p, c.line, "a minimum")) if len(a) > 1 else 0.0
                hi = float(_num(a, 2, p, c.line, "a maximum")) if len(a) > 2 else 1.0
                lane = _lane(c, f"{tname}/fx{fx_index}/{idx}", lo, hi, p, warnings)
                if lane is not None:
                    lanes[lane.name] = lane
    return lanes
