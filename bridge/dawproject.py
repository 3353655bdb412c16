"""DAWproject files (.dawproject): tempo, time signatures and automation lanes.

DAWproject is the open interchange format of Bitwig Studio, Studio One and Cubase (format 1.0,
schema ``Project.xsd`` published by Bitwig): a zip archive holding ``project.xml``. Read here:

- the tempo: ``Arrangement/TempoAutomation`` points (``RealPoint time value interpolation``, the
  value in BPM), else ``Transport/Tempo``; the time signatures: ``Arrangement/TimeSignatureAutomation``
  (``TimeSignaturePoint time numerator denominator``), else ``Transport/TimeSignature``; each
  signature starts a bar (one off the bar line starts a new bar, with a warning, as in MIDI);
- automation: every ``Points`` element in the arrangement's ``Lanes`` whose ``Target`` names a
  parameter of the ``Structure`` (a channel's Volume, Pan or Mute, a send's Volume, a device's
  parameter) or a MIDI expression, as a lane named like the other readers' lanes:
  ``TRACK/volume``, ``TRACK/pan``, ``TRACK/mute``, ``TRACK/sendN/volume``, ``TRACK/fxN/ID`` (ID the
  plugin's ``parameterID``, else the parameter's name; fxN counts the channel's devices from 1),
  ``TRACK/cc:CH:N`` and ``TRACK/pitchbend:CH`` (MIDI channel CH from 1). The master channel's
  track is ``master``.

As the schema documents: times are in the ``timeUnit`` of the element or its nearest enclosing
timeline, ``beats`` (quarter notes) when none says; a point's ``interpolation`` is ``hold`` unless it
says ``linear``, and a linear segment is linear in that time unit (so a tempo ramp in beats is
linear in beats). A ``Points`` element inside a clip is clip-relative automation, not read yet
(named in the warnings); values are in the ``unit`` of the ``Points`` element, normalised through
the parameter's ``min``/``max`` (0–1 when the points are ``normalized``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignatureMap, as_fraction

__all__ = ["DawProjectSession", "read_dawproject", "DawProjectError"]

_DEVICES = (
    "Device", "Vst2Plugin", "Vst3Plugin", "ClapPlugin", "AuPlugin", "BuiltinDevice",
    "Equalizer", "Compressor", "NoiseGate", "Limiter",
)  # fmt: skip
_PARAMETERS = ("RealParameter", "BoolParameter", "IntegerParameter", "EnumParameter", "TimeSignatureParameter")
_POINTS = ("RealPoint", "BoolPoint", "IntegerPoint", "EnumPoint", "Point")


class DawProjectError(BendbridgeError):
    """A DAWproject file that cannot be read."""


@dataclass
class DawProjectSession:
    path: Path
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    application: str = ""  # the program that wrote the file, e.g. "Bitwig Studio 5.0"


@dataclass
class _Context:
    params: dict[str, _Param]  # parameter id → lane name and range
    tracks: dict[str, str]  # track id → lane prefix (its name, or "master")
    warnings: list[str]
    path: Path


@dataclass(frozen=True)
class _Param:
    lane: str  # lane name
    lo: float
    hi: float
    held: bool  # steps only (bool, integer and enum parameters)


def read_dawproject(path: str | Path) -> DawProjectSession:
    p = Path(path)
    root = _project_xml(p)
    version = root.get("version", "")
    if version.split(".")[0] != "1":
        raise DawProjectError(str(p), f"project.xml: format version {version!r} is not 1.x (DAWproject 1.0)")
    app = root.find("Application")
    warnings: list[str] = []
    tempo = _tempo(root, p)
    meter = _meter(root, tempo, p, warnings)
    ctx = _Context({}, {}, warnings, p)
    _parameters(root.find("Structure"), ctx)
    lanes: dict[str, AutomationLane] = {}
    arrangement = root.find("Arrangement")
    top = arrangement.find("Lanes") if arrangement is not None else None
    if top is not None:
        _walk(top, "beats", None, ctx, lanes)
    named = f"{app.get('name', '')} {app.get('version', '')}".strip() if app is not None else ""
    return DawProjectSession(p, tempo, meter, lanes, warnings, named)


def _project_xml(p: Path) -> ET.Element:
    if not p.is_file():
        raise DawProjectError(str(p), "no such DAWproject file")
    try:
        with zipfile.ZipFile(p) as z:
            data = z.read("project.xml")
    except zipfile.BadZipFile:
        raise DawProjectError(str(p), "not a DAWproject: not a zip archive") from None
    except KeyError:
        raise DawProjectError(str(p), "not a DAWproject: the archive has no project.xml") from None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DawProjectError(str(p), f"project.xml: not well-formed XML ({e})") from None
    if root.tag != "Project":
        raise DawProjectError(str(p), f"project.xml: root element <{root.tag}>, expected <Project>")
    return root


def _number(el: ET.Element, attr: str, p: Path, default: str | None = None) -> Fraction:
    raw = el.get(attr, default)
    try:
        value = as_fraction(raw) if raw is not None else None
    except (ValueError, ZeroDivisionError):
        value = None
    if value is None:
        raise DawProjectError(str(p), f"<{el.tag}> {attr}={raw!r}: expected a number")
    return value


def _unit(el: ET.Element, inherited: str) -> str:
    return el.get("timeUnit") or inherited


# ---------------------------------------------------------------------------- tempo and meter
def _tempo(root: ET.Element, p: Path) -> TempoMap:
    """The tempo automation (beats or seconds), else the transport's tempo."""
    arrangement = root.find("Arrangement")
    auto = arrangement.find("TempoAutomation") if arrangement is not None else None
    points = [(_number(pt, "time", p), _number(pt, "value", p), pt.get("interpolation") == "linear") for pt in
              (auto.findall("RealPoint") if auto is not None else [])]  # fmt: skip
    if not points:
        transport = root.find("Transport/Tempo")
        bpm = _number(transport, "value", p, "120") if transport is not None else Fraction(120)
        return _checked([TempoPoint(Fraction(0), bpm)], p)
    points.sort(key=lambda x: x[0])
    if _unit(auto, "beats") == "seconds":
        return _checked([TempoPoint(t, bpm, ramp) for t, bpm, ramp in points], p)
    return _checked(_beat_tempo_points(points), p)


def _beat_tempo_points(points: list[tuple[Fraction, Fraction, bool]]) -> list[TempoPoint]:
    """Tempo points at beat positions; a linear segment is linear in beats (exponential in time)."""
    if points[0][0] > 0:
        points.insert(0, (Fraction(0), points[0][1], False))
    out, seconds = [], Fraction(0)
    for i, (beat, bpm, ramp) in enumerate(points):
        out.append(TempoPoint(seconds, bpm, ramp, beats=beat, curve="beats"))
        if i + 1 < len(points):
            nb, nbpm, _ = points[i + 1]
            span = nb - beat
            if ramp and nbpm != bpm and span > 0:  # ∫ 60 / bpm(b) db with bpm linear in b
                seconds += Fraction(60 * float(span) * math.log(nbpm / bpm) / float(nbpm - bpm))
            else:
                seconds += 60 * span / bpm
    return out


def _checked(points: list[TempoPoint], p: Path) -> TempoMap:
    try:
        return TempoMap(points)
    except BendbridgeError as e:
        raise DawProjectError(str(p), f"TempoAutomation: {e.message}") from None


def _meter(root: ET.Element, tempo: TempoMap, p: Path, warnings: list[str]) -> TimeSignatureMap:
    transport = root.find("Transport/TimeSignature")
    first = (4, 4)
    if transport is not None:
        first = (int(_number(transport, "numerator", p)), int(_number(transport, "denominator", p)))
    arrangement = root.find("Arrangement")
    auto = arrangement.find("TimeSignatureAutomation") if arrangement is not None else None
    changes: list[tuple[Fraction, int, int]] = []
    in_seconds = auto is not None and _unit(auto, "beats") == "seconds"
    for pt in auto.findall("TimeSignaturePoint") if auto is not None else []:
        t = _number(pt, "time", p)
        beat = tempo.beats_at(t) if in_seconds else t
        changes.append((beat, int(_number(pt, "numerator", p)), int(_number(pt, "denominator", p))))
    if not changes or min(c[0] for c in changes) > 0:
        changes.insert(0, (Fraction(0), *first))
    try:
        return TimeSignatureMap.from_beat_changes(changes, warnings)
    except BendbridgeError as e:
        raise DawProjectError(str(p), f"TimeSignatureAutomation: {e.message}") from None


# ---------------------------------------------------------------------------- parameters
def _parameters(structure: ET.Element | None, ctx: _Context) -> None:
    """Every automatable parameter of the Structure by id, with its lane name and range."""
    for track in structure.iter("Track") if structure is not None else []:
        channel = track.find("Channel")
        master = channel is not None and channel.get("role") == "master"
        name = "master" if master else (track.get("name") or track.get("id", "track"))
        if name in ctx.tracks.values() and not master:
            name = f"{name} [{track.get('id')}]"
            ctx.warnings.append(
                f"two tracks are named {name.split(' [')[0]!r}: the lanes of {track.get('id')} are {name!r}/…"
            )
        ctx.tracks[track.get("id", name)] = name
        if channel is not None:
            _channel_parameters(channel, name, ctx.params)


def _channel_parameters(channel: ET.Element, name: str, params: dict[str, _Param]) -> None:
    for tag, kind in (("Volume", "volume"), ("Pan", "pan"), ("Mute", "mute")):
        _add(channel.find(tag), f"{name}/{kind}", params)
    for n, send in enumerate(channel.findall("Sends/Send"), start=1):
        _add(send.find("Volume"), f"{name}/send{n}/volume", params)
        _add(send.find("Pan"), f"{name}/send{n}/pan", params)
    devices = channel.find("Devices")
    for n, device in enumerate((d for d in devices if d.tag in _DEVICES) if devices is not None else [], start=1):
        for param in device.iter():
            if param is device or param.get("id") is None or param.tag in _DEVICES:
                continue
            label = param.get("parameterID") or param.get("name") or param.tag
            _add(param, f"{name}/fx{n}/{label}", params)


def _add(el: ET.Element | None, lane: str, params: dict[str, _Param]) -> None:
    if el is None or el.get("id") is None:
        return
    if el.tag == "BoolParameter" or el.tag in ("Mute", "Enabled", "Enable"):
        params[el.get("id")] = _Param(lane, 0.0, 1.0, True)
    elif el.tag == "EnumParameter":
        params[el.get("id")] = _Param(lane, 0.0, max(1.0, float(el.get("count", "2")) - 1), True)
    else:
        lo, hi = _float(el.get("min")), _float(el.get("max"))
        held = el.tag == "IntegerParameter"
        if lo is None or hi is None or not hi > lo:
            lo, hi = (0.0, 1.0) if el.get("unit") == "normalized" else (None, None)  # type: ignore[assignment]
        params[el.get("id")] = _Param(
            lane, lo if lo is not None else math.nan, hi if hi is not None else math.nan, held
        )


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------- automation lanes
def _walk(el: ET.Element, unit: str, track: str | None, ctx: _Context, lanes: dict[str, AutomationLane]) -> None:
    """Finds the Points lanes under ``el`` (carrying the inherited time unit and track id)."""
    unit, track = _unit(el, unit), el.get("track") or track
    for child in el:
        if child.tag == "Points":
            lane = _lane(child, _unit(child, unit), child.get("track") or track, ctx)
            if lane is not None:
                lanes[lane.name] = lane
        elif child.tag == "Clips":
            inside = sum(1 for _ in child.iter("Points"))
            if inside:
                ctx.warnings.append(f"{inside} automation lane(s) inside clips are not read (clip-relative automation)")
        elif child.tag in ("Lanes", "Timeline"):
            _walk(child, unit, track, ctx, lanes)


def _lane(points: ET.Element, unit: str, track: str | None, ctx: _Context) -> AutomationLane | None:
    target = points.find("Target")
    if target is None:
        raise DawProjectError(str(ctx.path), f"<Points id={points.get('id')!r}>: expected a <Target>")
    name, param = _target_name(target, ctx.tracks.get(track or "", track or "song"), ctx.params)
    if name is None:
        ctx.warnings.append(f"<Points id={points.get('id')!r}> targets {dict(target.attrib)}, which is not read")
        return None
    pts = []
    for pt in points:
        if pt.tag not in _POINTS:
            continue
        raw = pt.get("value")
        value = 1.0 if raw == "true" else 0.0 if raw == "false" else float(_number(pt, "value", ctx.path))
        held = param.held if param else pt.tag != "RealPoint"
        shape = 0 if pt.get("interpolation") == "linear" and not held else 1
        pts.append(LanePoint(_number(pt, "time", ctx.path), value, shape))
    if not pts:
        return None
    lo, hi = (0.0, 1.0) if points.get("unit") == "normalized" or not param else (param.lo, param.hi)
    if math.isnan(lo) or math.isnan(hi):
        values = [pt.value for pt in pts]
        lo, hi = min(values), max(values)
    domain = "seconds" if unit == "seconds" else "beats"
    return AutomationLane(name, pts, domain, lo, hi if hi > lo else lo + 1.0)


def _target_name(target: ET.Element, owner: str, params: dict[str, _Param]) -> tuple[str | None, _Param | None]:
    """The lane name a Target gives: its parameter's, or a MIDI expression's on the owning track."""
    ref = target.get("parameter")
    if ref is not None:
        param = params.get(ref)
        return (param.lane, param) if param else (None, None)
    expression, channel = target.get("expression"), int(target.get("channel", "0")) + 1
    if expression == "channelController":
        return f"{owner}/cc:{channel}:{target.get('controller', '0')}", None
    if expression == "pitchBend":
        return f"{owner}/pitchbend:{channel}", None
    return (f"{owner}/{expression}:{channel}" if expression else None), None
