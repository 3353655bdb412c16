"""REAPER project files (.rpp): tempo map, time signatures and automation envelopes.

An .rpp is text made of nested ``<BLOCK …>`` chunks closed by ``>``. Read here:

- ``TEMPO bpm num den`` in the project chunk: the base tempo and time signature;
- ``<TEMPOENVEX>`` points ``PT seconds bpm shape [timesig]``: shape 1 (square) steps, every other
  shape ramps linearly in time to the next point; ``timesig`` = 65536·den + num starts a new
  signature at that point (which must fall on a bar line);
- track envelopes ``<VOLENV2>``, ``<PANENV2>``, ``<PARMENV idx min max default "name">`` with
  ``PT seconds value shape`` lines, as lanes named ``TRACK/volume``, ``TRACK/pan`` and
  ``TRACK/fxN/IDX`` (TRACK is the track's NAME, or ``track N``; fxN counts the track's FX from 1).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap, as_fraction

__all__ = ["RppProject", "read_rpp", "RppError"]


class RppError(BendbridgeError):
    """A REAPER project that cannot be read."""


@dataclass
class RppProject:
    path: Path
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)


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


def _num(tok: list[str], i: int, path: Path, n: int, what: str) -> Fraction:
    try:
        return as_fraction(tok[i])
    except (IndexError, ValueError, ZeroDivisionError):
        raise RppError(str(path), f"line {n}: expected {what} in {' '.join(tok)!r}") from None


def _points(ch: _Chunk, path: Path) -> list[LanePoint]:
    pts = []
    for n, tok in ch.lines:
        if tok and tok[0] == "PT":
            shape = int(_num(tok, 3, path, n, "a shape")) if len(tok) > 3 else 0
            pts.append(
                LanePoint(
                    _num(tok, 1, path, n, "a time"),
                    float(_num(tok, 2, path, n, "a value")),
                    shape if 0 <= shape <= 5 else 0,
                )
            )
    return pts


def read_rpp(path: str | Path) -> RppProject:
    p = Path(path)
    if not p.is_file():
        raise RppError(str(p), "no such REAPER project")
    root = _parse(p.read_text(encoding="utf-8", errors="replace"), p)
    proj = next((c for c in root.children if c.name == "REAPER_PROJECT"), None)
    if proj is None:
        raise RppError(str(p), "line 1: not a REAPER project (no <REAPER_PROJECT> chunk)")
    tempo, meter = _tempo_and_meter(proj, p)
    lanes: dict[str, AutomationLane] = {}
    for ti, track in enumerate((c for c in proj.children if c.name == "TRACK"), start=1):
        lanes.update(_track_lanes(track, ti, p))
    return RppProject(p, tempo, meter, lanes)


def _tempo_and_meter(proj: _Chunk, p: Path) -> tuple[TempoMap, TimeSignatureMap]:
    """The project's ``TEMPO`` line and ``<TEMPOENVEX>`` points (with their time signatures)."""
    tempo_line = next(((n, t) for n, t in proj.lines if t and t[0] == "TEMPO"), None)
    if tempo_line is None:
        raise RppError(str(p), "the project has no TEMPO line (expected 'TEMPO bpm num den' in <REAPER_PROJECT>)")
    n, tok = tempo_line
    bpm = _num(tok, 1, p, n, "a tempo")
    num = int(_num(tok, 2, p, n, "a numerator")) if len(tok) > 2 else 4
    den = int(_num(tok, 3, p, n, "a denominator")) if len(tok) > 3 else 4
    env = next((c for c in proj.children if c.name == "TEMPOENVEX"), None)
    points = [TempoPoint(Fraction(0), bpm)]
    sig_at: list[tuple[Fraction, int, int]] = []
    envelope_points = []
    for n, tok in env.lines if env is not None else []:
        if tok and tok[0] == "PT":
            t, b = _num(tok, 1, p, n, "a time"), _num(tok, 2, p, n, "a tempo")
            shape = int(_num(tok, 3, p, n, "a shape")) if len(tok) > 3 else 1
            envelope_points.append(TempoPoint(t, b, shape != 1))
            if len(tok) > 4 and tok[4].lstrip("-").isdigit() and int(tok[4]) > 0:
                ts = int(tok[4])
                sig_at.append((t, ts % 65536, ts // 65536))
    try:
        tempo = TempoMap(envelope_points or points)
    except BendbridgeError as e:
        raise RppError(str(p), e.message) from None
    sigs = [TimeSignature(1, num, den)]
    for t, snum, sden in sig_at:
        beats = tempo.beats_at(t)
        ref = TimeSignatureMap(sigs)
        bb = ref.bar_beat(beats)
        if ref.beats_of(bb.bar) != beats:
            raise RppError(str(p), f"time signature {snum}/{sden} at {float(t):g} s does not fall on a bar line")
        sigs = [s for s in sigs if s.bar < bb.bar] + [TimeSignature(bb.bar, snum, sden)]
    return tempo, TimeSignatureMap(sigs)


def _track_lanes(track: _Chunk, index: int, p: Path) -> dict[str, AutomationLane]:
    """A track's volume and pan envelopes and its FX parameter envelopes, named TRACK/…"""
    tname = (
        next((" ".join(t[1:]) for _, t in track.lines if t and t[0] == "NAME" and len(t) > 1), "") or f"track {index}"
    )
    lanes: dict[str, AutomationLane] = {}
    for c in track.children:
        if c.name in ("VOLENV2", "VOLENV", "PANENV2", "PANENV") and _points(c, p):
            kind = "volume" if c.name.startswith("VOL") else "pan"
            lo, hi = (0.0, 2.0) if kind == "volume" else (-1.0, 1.0)
            lanes[f"{tname}/{kind}"] = AutomationLane(f"{tname}/{kind}", _points(c, p), "seconds", lo, hi)
    for chain in (c for c in track.children if c.name == "FXCHAIN"):
        fx_index = 0
        for c in chain.children:
            if c.name in ("VST", "AU", "JS", "DX", "CLAP", "LV2"):
                fx_index += 1
            elif c.name == "PARMENV" and fx_index and _points(c, p):
                a = c.args
                idx = a[0].split(":")[0] if a else "0"
                lo = float(_num(a, 1, p, c.line, "a minimum")) if len(a) > 1 else 0.0
                hi = float(_num(a, 2, p, c.line, "a maximum")) if len(a) > 2 else 1.0
                name = f"{tname}/fx{fx_index}/{idx}"
                lanes[name] = AutomationLane(name, _points(c, p), "seconds", lo, hi if hi > lo else lo + 1.0)
    return lanes
