"""Ardour sessions (``.ardour``, the XML of Ardour 7 and 8): sample rate, tempo map, meters and
automation lanes, read as Ardour itself plays them.

- **Time.** Ardour stores positions in superclock units (``<TempoMap superclocks-per-second>``,
  282,240,000 per second) and musical positions in ticks (1920 per quarter note). Each tempo and
  meter point keeps its own anchors (``sclock`` and ``quarters``), which are used as they are, so
  positions do not drift by re-integrating the tempo. A tempo's ``npm`` counts ``note-type`` notes
  per minute (``note-type="8"``: eighths). A ``Tempo::Ramped`` tempo changes linearly in quarter
  notes (exponentially in time) up to the next point.
- **Lanes.** Every automation list with events that the session plays (state Play, Touch or
  Latch) becomes a lane, named like the REAPER ones: ``TRACK/gain``, ``TRACK/trim``,
  ``TRACK/pan``, ``TRACK/mute``, ``TRACK/PLUGIN/PARAM`` (the parameter's LV2 symbol, else its
  number); the bendbridge plugin's macros are also ``macro1`` … ``macro8``, as its stream names
  them. Event times are ``aN`` (N superclocks, AudioTime, whatever the sample rate) or ``bN``
  (N ticks, BeatTime); interpolation styles are Discrete, Linear, Logarithmic and Exponential
  (the gain fader's law). Lists with events that are not played (state Off, Write) are left out
  with a named warning, as is anything this reader does not know — never silently.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .tempo import TempoMap, TempoPoint, TimeSignature, TimeSignatureMap

__all__ = ["ArdourError", "ArdourSession", "read_ardour", "SUPPORTED_VERSIONS"]

SUPERCLOCKS_PER_SECOND = 282_240_000  # Ardour's default; a session states its own
TICKS_PER_QUARTER = 1920
SUPPORTED_VERSIONS = (7000, 8999)  # session format numbers of Ardour 7 and 8
PLAYED_STATES = ("Play", "Touch", "Latch")
PLUGIN_TYPES = ("lv2", "ladspa", "luaproc", "vst", "vst3", "lxvst", "windows-vst", "mac-vst", "audiounit", "clap")
STYLE_SHAPES = {"Discrete": 1, "Linear": 0, "Logarithmic": 6, "Exponential": 7}
BENDBRIDGE_PLUGIN = "urn:bendbridge:link"
KNOWN_PLUGIN_RANGES = {BENDBRIDGE_PLUGIN: (0.0, 1.0)}  # parameter ranges of plugins we know
# (lane suffix, lo, hi) of the route's own controls, by automation id
ROUTE_CONTROLS = {
    "gain": ("gain", 0.0, 2.0),  # a gain coefficient: +6 dB at the top of the fader
    "trim": ("trim", 0.1, 10.0),  # ±20 dB
    "pan-azimuth": ("pan", 0.0, 1.0),
    "pan-width": ("pan-width", -1.0, 1.0),
    "mute": ("mute", 0.0, 1.0),
    "solo": ("solo", 0.0, 1.0),
    "phase": ("phase", 0.0, 1.0),
}


class ArdourError(BendbridgeError):
    """An Ardour session that cannot be read."""


@dataclass
class ArdourSession:
    path: Path
    rate: int  # the session's sample rate, Hz
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_ardour(path: str | Path) -> ArdourSession:
    """Read an Ardour 7 or 8 session file; an older or newer format is a clear error."""
    p = Path(path)
    if not p.is_file():
        raise ArdourError(str(p), "no such Ardour session file")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise ArdourError(str(p), f"not a valid session file (XML: {e})") from None
    if root.tag != "Session":
        raise ArdourError(str(p), f"not an Ardour session (the root element is <{root.tag}>, not <Session>)")
    _check_version(root, p)
    rate = _int_attr(root, "sample-rate", p)
    warnings: list[str] = []
    tempo, meter, sps = _tempo_and_meter(root, p, warnings)
    lanes = _lanes(root, sps, warnings)
    lanes.update(_macro_aliases(root, lanes, warnings))
    return ArdourSession(p, rate, tempo, meter, lanes, warnings)


def _check_version(root: ET.Element, p: Path) -> None:
    version = root.get("version", "")
    if not version.isdigit():
        raise ArdourError(str(p), f"the session has no format version (version={version!r})")
    lo, hi = SUPPORTED_VERSIONS
    if int(version) < lo:
        raise ArdourError(
            str(p), f"session format {version} is from Ardour 6 or older; open and save it in Ardour 7 or 8"
        )
    if int(version) > hi:
        raise ArdourError(str(p), f"session format {version} is newer than Ardour 8, which this reader knows")


def _int_attr(e: ET.Element, name: str, p: Path) -> int:
    try:
        return int(e.get(name, ""))
    except ValueError:
        raise ArdourError(str(p), f"<{e.tag}> {name}={e.get(name)!r}: expected an integer") from None


def _quarters(text: str, p: Path) -> Fraction:
    """Ardour's 'BEATS:TICKS' (1920 ticks per quarter note) as quarter notes."""
    beats, _, ticks = text.partition(":")
    try:
        return int(beats) + Fraction(int(ticks or 0), TICKS_PER_QUARTER)
    except ValueError:
        raise ArdourError(str(p), f"musical position {text!r}: expected BEATS:TICKS") from None


# ---------------------------------------------------------------------------------- tempo map
def _tempo_and_meter(root: ET.Element, p: Path, warnings: list[str]) -> tuple[TempoMap, TimeSignatureMap, int]:
    tm = root.find("TempoMap")
    if tm is None:
        warnings.append("no <TempoMap>: 120 BPM in 4/4 assumed")
        return TempoMap.constant(120), TimeSignatureMap(), SUPERCLOCKS_PER_SECOND
    sps = _int_attr(tm, "superclocks-per-second", p) if tm.get("superclocks-per-second") else SUPERCLOCKS_PER_SECOND
    music_times = tm.find("MusicTimes")
    if music_times is not None and len(music_times):
        warnings.append(f"{len(music_times)} BBT marker(s) (<MusicTimes>) ignored: bar numbers after them may differ")
    return _tempo_map(tm, sps, p), _meter_map(tm, p, warnings), sps


def _tempo_map(tm: ET.Element, sps: int, p: Path) -> TempoMap:
    points = []
    for t in tm.find("Tempos") if tm.find("Tempos") is not None else []:
        if t.get("active", "1") == "0":
            continue
        note_type = Fraction(t.get("note-type", "4"))
        qpm = Fraction(t.get("npm", "120")) * 4 / note_type
        ramped = t.get("type") == "Tempo::Ramped" and t.get("npm") != t.get("enpm")
        points.append(
            TempoPoint(
                Fraction(_int_attr(t, "sclock", p), sps),
                qpm,
                ramped,
                _quarters(t.get("quarters", "0:0"), p),
                curve="beats",
            )
        )
    try:
        return TempoMap(points)
    except BendbridgeError as e:
        raise ArdourError(str(p), f"tempo map: {e.message}") from None


def _meter_map(tm: ET.Element, p: Path, warnings: list[str]) -> TimeSignatureMap:
    sigs = []
    for m in tm.find("Meters") if tm.find("Meters") is not None else []:
        bbt = m.get("bbt", "1|1|0").split("|")
        divisions = float(m.get("divisions-per-bar", "4"))
        if divisions != int(divisions):
            warnings.append(f"meter of {divisions:g} divisions per bar at bar {bbt[0]} read as {int(divisions)}")
        try:
            sigs.append(TimeSignature(int(bbt[0]), int(divisions), int(m.get("note-value", "4"))))
        except (ValueError, BendbridgeError) as e:
            raise ArdourError(str(p), f"meter at bbt {m.get('bbt')!r}: {e}") from None
    meter = TimeSignatureMap(sigs or None)
    for m, sig in zip(tm.find("Meters") if tm.find("Meters") is not None else [], sigs):
        if meter.beats_of(sig.bar) != _quarters(m.get("quarters", "0:0"), p):
            warnings.append(
                f"meter {sig.num}/{sig.den} at bar {sig.bar} is not on that bar line of the meter before it"
            )
    return meter


# ---------------------------------------------------------------------------------- lanes
def _lanes(root: ET.Element, sps: int, warnings: list[str]) -> dict[str, AutomationLane]:
    lanes: dict[str, AutomationLane] = {}
    routes = root.find("Routes")
    for route in routes if routes is not None else []:
        name = route.get("name", "route")
        for lane_name, lst, lo, hi in _route_lists(route, name, warnings):
            lane = _lane(lane_name, lst, lo, hi, sps, warnings)
            if lane is not None:
                unique, n = lane_name, 2
                while unique in lanes:
                    unique, n = f"{lane_name} {n}", n + 1
                lane.name = unique
                lanes[unique] = lane
    return lanes


def _macro_aliases(
    root: ET.Element, lanes: dict[str, AutomationLane], warnings: list[str]
) -> dict[str, AutomationLane]:
    """The bendbridge plugin's macros also as ``macro1`` … ``macro8``, the names its stream gives
    them, so one bend config serves a session file and a recording (one plugin in the session)."""
    prefixes = [
        f"{route.get('name', 'route')}/{proc.get('name', 'lv2')}/"
        for route in root.iterfind("Routes/Route")
        for proc in route.findall("Processor")
        if proc.get("unique-id") == BENDBRIDGE_PLUGIN
    ]
    if len(prefixes) > 1:
        warnings.append(f"{len(prefixes)} bendbridge plugins: their macros go by TRACK/PLUGIN/macroN only")
    if len(prefixes) != 1:
        return {}
    aliases = {}
    for name, lane in lanes.items():
        short = name.removeprefix(prefixes[0])
        if short != name and short.startswith("macro"):
            aliases[short] = AutomationLane(short, lane.points, lane.domain, lane.lo, lane.hi)
    return aliases


def _route_lists(route: ET.Element, track: str, warnings: list[str]):
    """(lane name, <AutomationList>, lo, hi) for every list with events in a route."""
    for owner in [route.find("Automation"), route.find("Pannable/Automation")]:
        for lst in owner if owner is not None else []:
            aid = lst.get("automation-id", "")
            suffix, lo, hi = ROUTE_CONTROLS.get(aid, (aid, 0.0, 1.0))
            yield f"{track}/{suffix}", lst, lo, hi
    for proc in route.findall("Processor"):
        yield from _processor_lists(proc, track, warnings)


def _processor_lists(proc: ET.Element, track: str, warnings: list[str]):
    kind = proc.get("type", "")
    automation = proc.find("Automation")
    for lst in automation if automation is not None else []:
        aid = lst.get("automation-id", "")
        if kind in ("amp", "trim") and aid in ROUTE_CONTROLS:
            suffix, lo, hi = ROUTE_CONTROLS[aid]
            yield f"{track}/{suffix}", lst, lo, hi
        elif kind in PLUGIN_TYPES and aid.startswith("parameter-"):
            number = aid.removeprefix("parameter-")
            control = next((c for c in proc.findall("Controllable") if c.get("parameter") == number), None)
            param = (control.get("symbol") if control is not None else None) or number
            lo, hi = KNOWN_PLUGIN_RANGES.get(proc.get("unique-id", ""), (None, None))
            yield f"{track}/{proc.get('name', kind)}/{param}", lst, lo, hi
        elif _events(lst):
            warnings.append(
                f"{track}: automation {aid!r} of a {kind or 'processor'} processor left out (not a control "
                "this reader knows)"
            )


def _events(lst: ET.Element) -> list[tuple[str, str]]:
    node = lst.find("events")
    text = node.text if node is not None and node.text else ""
    return [tuple(line.split()[:2]) for line in text.strip().splitlines() if len(line.split()) >= 2]


def _lane(
    name: str, lst: ET.Element, lo: float | None, hi: float | None, sps: int, warnings: list[str]
) -> AutomationLane | None:
    events = _events(lst)
    if not events:
        return None
    state = lst.get("state", "Off")
    if state not in PLAYED_STATES:
        warnings.append(f"{name}: {len(events)} automation events in state {state} (not played) left out")
        return None
    style = lst.get("interpolation-style", "Linear")
    shape = STYLE_SHAPES.get(style)
    if shape is None:
        warnings.append(f"{name}: interpolation {style!r} read as linear")
        shape = 0
    points, domain = _points(events, lst.get("time-domain", "AudioTime"), shape, sps, name)
    if lo is None or hi is None:
        values = [pt.value for pt in points]
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        warnings.append(
            f"{name}: the parameter's range is not in the session; normalised over its automation, [{lo:g}, {hi:g}]"
        )
    return AutomationLane(name, points, domain, lo, hi)


def _points(
    events: list[tuple[str, str]], time_domain: str, shape: int, sps: int, name: str
) -> tuple[list[LanePoint], str]:
    """Lane points: ``aN`` superclocks become seconds, ``bN`` ticks become quarter notes."""
    points, domains = [], set()
    for when, value in events:
        try:
            if when[0] == "a" or (when[0].isdigit() and time_domain == "AudioTime"):
                points.append(LanePoint(Fraction(int(when.lstrip("a")), sps), float(value), shape))
                domains.add("seconds")
            elif when[0] == "b" or when[0].isdigit():
                points.append(LanePoint(Fraction(int(when.lstrip("b")), TICKS_PER_QUARTER), float(value), shape))
                domains.add("beats")
            else:
                raise ValueError(when)
        except ValueError:
            raise ArdourError(
                name, f"automation event {when} {value}: expected aSUPERCLOCKS or bTICKS and a number"
            ) from None
    if len(domains) > 1:
        raise ArdourError(name, "automation list mixes AudioTime and BeatTime events")
    return points, domains.pop()
