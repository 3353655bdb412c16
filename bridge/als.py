"""Ableton Live sets (.als, gzip-compressed XML, Live 8–12): tempo, time signatures, automation.

Live does not publish its set format; what is read here follows the files Live 8.1 to 12.0 write
and the behaviour measured by dawtool (M. Mossberg, "Reverse Engineering DAWs to Build Custom
Workflow Tools", ADC 2020):

- every automatable parameter holds an ``AutomationTarget Id``; its arrangement automation is a list
  of ``FloatEvent``/``BoolEvent``/``EnumEvent`` (``Time`` in quarter notes, ``Value``) in the owning
  track's ``AutomationEnvelopes`` (``EnvelopeTarget/PointeeId`` = the Id; Live 10–12) or in the
  parameter's own ``ArrangerAutomation`` (Live 8–9). The first event sits at time −63072000 and
  holds the value from the start of the song; a lane with only that event is not automated;
- the tempo is the master (Live 12: main) track's ``Tempo`` (``Manual`` BPM) and its automation,
  straight lines in beats between events — which Live plays one sixteenth note at a time: over
  each sixteenth the tempo is the automation's value at the sixteenth's start (dawtool's measured
  "tempo quantization"), and so does bendbridge;
- time signatures are the ``TimeSignature`` parameter's enum events, value = (numerator − 1) +
  99·log2(denominator); each starts a bar (one off the bar line starts a new bar, with a warning);
- lanes are named like the other readers': ``TRACK/volume``, ``TRACK/pan``, ``TRACK/on`` (track
  activator), ``TRACK/sendN``, ``TRACK/fxN/PARAM`` (fxN counts the track's devices from 1; PARAM
  the parameter's element name, or a plug-in parameter's name; a parameter of a device inside a
  rack is named by the rack's fxN, and a second lane of one name gets ``#ID``); the master track's
  lanes are ``master/…``. Values are
  normalised through the parameter's ``MidiControllerRange`` when it has one. Curved segments
  (Live 11+ ``CurveControl``) are read as straight lines and named in the warnings.
"""

from __future__ import annotations

import gzip
import math
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignatureMap, as_fraction

__all__ = ["AbletonSet", "read_als", "AlsError", "TEMPO_STEP"]

TEMPO_STEP = Fraction(1, 4)  # quarter notes: Live applies automated tempo one sixteenth note at a time
_START = Fraction(-63072000)  # the time of the event that holds a parameter's value from the start
_MIXER = {"Volume": "volume", "Pan": "pan", "Speaker": "on", "CrossFadeState": "crossfade"}


class AlsError(BendbridgeError):
    """An Ableton Live set that cannot be read."""


@dataclass
class AbletonSet:
    path: Path
    version: int  # Live's major version, 8-12
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    creator: str = ""  # e.g. "Ableton Live 11.0"


@dataclass(frozen=True)
class _Target:
    lane: str
    param: ET.Element  # the parameter element (holds MidiControllerRange, ArrangerAutomation)


def read_als(path: str | Path) -> AbletonSet:
    p = Path(path)
    root = _root(p)
    version = _version(root, p)
    live = root.find("LiveSet")
    if live is None:
        raise AlsError(str(p), "<Ableton> has no <LiveSet>")
    warnings: list[str] = []
    if version > 12:
        warnings.append(f"written by {root.get('Creator')}: read as a Live 12 set")
    master = next((t for t in (live.find("MainTrack"), live.find("MasterTrack")) if t is not None), None)
    if master is None:
        raise AlsError(str(p), "the set has no master track (<MasterTrack> or <MainTrack>)")
    tracks = _tracks(live, master)
    targets = _targets(tracks)
    events = _events(tracks, targets)
    chain = _chain(master)
    mixer = chain.find("Mixer") if chain is not None else None
    tempo = _tempo(mixer, events, p, warnings)
    meter = _meter(mixer, events, p, warnings)
    lanes = _lanes(targets, events, p, warnings)
    return AbletonSet(p, version, tempo, meter, lanes, warnings, root.get("Creator", ""))


def _root(p: Path) -> ET.Element:
    if not p.is_file():
        raise AlsError(str(p), "no such Ableton Live set")
    raw = p.read_bytes()
    if not raw:
        raise AlsError(str(p), "the file is empty (0 bytes); expected a gzip-compressed Live set")
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        raise AlsError(str(p), "not an Ableton Live set: not gzip-compressed (or truncated)") from None
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise AlsError(str(p), f"the set's XML is not well-formed ({e})") from None
    if root.tag != "Ableton":
        raise AlsError(str(p), f"root element <{root.tag}>, expected <Ableton>")
    return root


def _version(root: ET.Element, p: Path) -> int:
    minor = root.get("MinorVersion", "")
    try:
        version = int(minor.split(".")[0])
    except ValueError:
        raise AlsError(
            str(p), f"<Ableton MinorVersion={minor!r}>: expected a Live version such as '11.0_433'"
        ) from None
    if version < 8:
        raise AlsError(str(p), f"a Live {version} set ({root.get('Creator')}); Live 8 to 12 sets are read")
    return version


# ---------------------------------------------------------------------------- targets and events
def _tracks(live: ET.Element, master: ET.Element) -> list[tuple[str, ET.Element]]:
    """(lane prefix, track element) for every track and the master."""
    out, seen = [], set()
    for track in live.find("Tracks") if live.find("Tracks") is not None else []:
        name = _name(track) or f"{track.tag} {len(out) + 1}"
        if name in seen:
            name = f"{name} [{len(out) + 1}]"
        seen.add(name)
        out.append((name, track))
    out.append(("master", master))
    return out


def _chain(track: ET.Element) -> ET.Element | None:
    """The track's device chain (Live 8 calls the master's ``MasterChain``)."""
    chain = track.find("DeviceChain")
    return chain if chain is not None else track.find("MasterChain")


def _name(track: ET.Element) -> str:
    """The name a user gave the track, else the one Live shows."""
    for tag in ("Name/UserName", "Name/EffectiveName"):
        el = track.find(tag)
        if el is not None and el.get("Value"):
            return el.get("Value", "")
    return ""


def _targets(tracks: list[tuple[str, ET.Element]]) -> dict[str, _Target]:
    """Every AutomationTarget Id with the lane name of its parameter."""
    targets: dict[str, _Target] = {}
    for name, track in tracks:
        chain = _chain(track)
        if chain is None:
            continue
        mixer = chain.find("Mixer")
        for param in mixer if mixer is not None else []:
            _target(targets, param, f"{name}/{_MIXER.get(param.tag, param.tag.lower())}")
        for k, send in enumerate(mixer.findall("Sends/TrackSendHolder/Send") if mixer is not None else [], start=1):
            _target(targets, send, f"{name}/send{k}")
        devices = chain.find("DeviceChain/Devices")
        for n, device in enumerate(devices if devices is not None else [], start=1):
            _device_targets(targets, device, f"{name}/fx{n}")
    return targets


def _device_targets(targets: dict[str, _Target], device: ET.Element, prefix: str) -> None:
    for param in device.iter():
        at = param.find("AutomationTarget")
        if at is None or at.get("Id") in targets:
            continue
        label = param.tag
        if param.tag in ("PluginFloatParameter", "PluginEnumParameter"):  # a plug-in's own parameter
            named = param.find("ParameterName")
            label = named.get("Value") if named is not None else f"param{param.find('ParameterId').get('Value')}"
            param = param.find("ParameterValue") if param.find("ParameterValue") is not None else param
        targets[at.get("Id")] = _Target(f"{prefix}/{label}", param)


def _target(targets: dict[str, _Target], param: ET.Element, lane: str) -> None:
    at = param.find("AutomationTarget")
    if at is not None and at.get("Id") is not None:
        targets[at.get("Id")] = _Target(lane, param)


Events = dict[str, list[ET.Element]]  # AutomationTarget Id → its arrangement automation events


def _events(tracks: list[tuple[str, ET.Element]], targets: dict[str, _Target]) -> Events:
    """Target Id → its arrangement automation events, from envelopes (Live 10+) or the parameters (8-9)."""
    found: dict[str, list[ET.Element]] = {}
    for _, track in tracks:
        for env in track.findall("AutomationEnvelopes/Envelopes/AutomationEnvelope"):
            pointee = env.find("EnvelopeTarget/PointeeId")
            events = env.find("Automation/Events")
            if pointee is not None and events is not None:
                found[pointee.get("Value")] = list(events)
    for target_id, target in targets.items():
        events = target.param.find("ArrangerAutomation/Events")
        if target_id not in found and events is not None:
            found[target_id] = [e for e in events if e.tag.endswith("Event")]
    return found


def _points(events: list[ET.Element], p: Path) -> list[tuple[Fraction, Fraction, str, bool]]:
    """(beat, value, kind, curved) of each event, the start event moved to beat 0, in file order."""
    out = []
    for e in events:
        if not e.tag.endswith("Event"):
            continue
        raw = e.get("Value", "")
        try:
            t = max(as_fraction(e.get("Time", "")), Fraction(0))
            value = Fraction(1) if raw == "true" else Fraction(0) if raw == "false" else as_fraction(raw)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise AlsError(str(p), f"<{e.tag} Time={e.get('Time')!r} Value={raw!r}>: expected numbers") from None
        out.append((t, value, e.tag, e.get("CurveControl1X") is not None))
    return sorted(out, key=lambda x: x[0])  # stable: events at one time keep file order


# ---------------------------------------------------------------------------- tempo and meter
def _param_events(mixer: ET.Element | None, tag: str, events: Events) -> list[ET.Element]:
    param = mixer.find(tag) if mixer is not None else None
    at = param.find("AutomationTarget") if param is not None else None
    if at is not None and at.get("Id") in events:
        return events[at.get("Id")]
    inline = param.find("ArrangerAutomation/Events") if param is not None else None  # Live 8 has no Id
    return list(inline) if inline is not None else []


def _tempo(mixer: ET.Element | None, events: Events, p: Path, warnings: list[str]) -> TempoMap:
    """Live's tempo: its automation sampled at every sixteenth note and held over it."""
    manual = mixer.find("Tempo/Manual") if mixer is not None else None
    points = _points(_param_events(mixer, "Tempo", events), p)
    if not points:
        bpm = as_fraction(manual.get("Value")) if manual is not None else Fraction(120)
        points = [(Fraction(0), bpm, "FloatEvent", False)]
    if any(curved for *_, curved in points):
        warnings.append("tempo automation has curved segments: read as straight lines")
    steps = _sixteenths([(t, v) for t, v, _, _ in points])
    seconds, tempo_points = Fraction(0), []
    for i, (beat, bpm) in enumerate(steps):
        if not 0 < bpm <= 10_000:
            raise AlsError(str(p), f"tempo automation: {float(bpm):g} BPM at beat {float(beat):g} is out of range")
        tempo_points.append(TempoPoint(seconds, bpm, beats=beat))
        if i + 1 < len(steps):  # bounded denominators: 1e-15 s per step, far below a sample
            seconds = Fraction(round((seconds + 60 * (steps[i + 1][0] - beat) / bpm) * 10**15), 10**15)
    return TempoMap(tempo_points)


def _sixteenths(points: list[tuple[Fraction, Fraction]]) -> list[tuple[Fraction, Fraction]]:
    """(beat, bpm) steps: the straight-line value at each sixteenth note from 0 to the last event,
    kept where it changes. Of several events at one time the last is in force from there."""
    end = points[-1][0]
    steps: list[tuple[Fraction, Fraction]] = []
    i = 0
    k_end = math.ceil(end / TEMPO_STEP)
    for k in range(k_end + 1):
        g = k * TEMPO_STEP
        while i + 1 < len(points) and points[i + 1][0] <= g:
            i += 1
        t0, v0 = points[i]
        if i + 1 < len(points) and points[i + 1][0] > t0:
            t1, v1 = points[i + 1]
            value = v0 + (v1 - v0) * (g - t0) / (t1 - t0)
        else:
            value = v0
        if not steps or steps[-1][1] != value:
            steps.append((g, value))
    return steps


def _meter(
    mixer: ET.Element | None, events: dict[str, list[ET.Element]], p: Path, warnings: list[str]
) -> TimeSignatureMap:
    manual = mixer.find("TimeSignature/Manual") if mixer is not None else None
    codes = [(t, int(v)) for t, v, _, _ in _points(_param_events(mixer, "TimeSignature", events), p)]
    if not codes:
        codes = [(Fraction(0), int(manual.get("Value", "201")) if manual is not None else 201)]
    changes = []
    for beat, code in codes:
        if not 0 <= code < 99 * 7:
            raise AlsError(
                str(p), f"time signature value {code} at beat {float(beat):g}: expected (num - 1) + 99·log2(den)"
            )
        changes.append((beat, code % 99 + 1, 2 ** (code // 99)))
    try:
        return TimeSignatureMap.from_beat_changes(changes, warnings)
    except BendbridgeError as e:
        raise AlsError(str(p), f"time signature: {e.message}") from None


# ---------------------------------------------------------------------------- lanes
def _lanes(
    targets: dict[str, _Target], events: dict[str, list[ET.Element]], p: Path, warnings: list[str]
) -> dict[str, AutomationLane]:
    lanes: dict[str, AutomationLane] = {}
    curved = []
    for target_id, target in targets.items():
        if target.lane.endswith(("/tempo", "/timesignature")):
            continue
        points = _points(events.get(target_id, []), p)
        if len(points) < 2:  # only the value from the start: not automated
            continue
        held = points[0][2] != "FloatEvent"
        pts = [LanePoint(t, float(v), 1 if held else 0) for t, v, _, _ in points]
        lo, hi = _range(target.param, [pt.value for pt in pts])
        name = target.lane if target.lane not in lanes else f"{target.lane}#{target_id}"
        lanes[name] = AutomationLane(name, pts, "beats", lo, hi)
        if any(c for *_, c in points):
            curved.append(name)
    if curved:
        warnings.append(f"curved automation read as straight lines: {', '.join(sorted(curved))}")
    return lanes


def _range(param: ET.Element, values: list[float]) -> tuple[float, float]:
    """The parameter's MIDI controller range, else the range its automation covers."""
    lo_el, hi_el = param.find("MidiControllerRange/Min"), param.find("MidiControllerRange/Max")
    try:
        lo, hi = float(lo_el.get("Value")), float(hi_el.get("Value"))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        lo, hi = min(values), max(values)
        if param.find("Manual") is not None and param.find("Manual").get("Value") in ("true", "false"):
            lo, hi = 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
