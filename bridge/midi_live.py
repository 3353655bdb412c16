"""Live MIDI: CC → parameter mapping (modes, soft takeover, learn) and MIDI clock following.

A :class:`CcMapping` binds a controller — 7-bit ``cc``, 14-bit pair ``cc14`` (MSB on N, LSB on
N+32) or ``nrpn`` — to a bend parameter, in one of three modes:

- ``absolute``: value/max → [lo, hi];
- ``relative``: two's-complement increments (1…63 up, 65…127 down) of ``step`` × (hi − lo);
- ``centred``: 64 (8192 for 14-bit) is the parameter's ``base``; the extremes reach lo and hi.

With ``takeover`` on, an absolute control does not move the parameter until the physical control
comes within 2 % of the parameter's current value (soft takeover / pickup), so switching presets
or automation never makes the parameter jump.

:class:`ClockFollower` follows MIDI clock (24 per quarter note), Song Position Pointer (16ths),
Start / Continue / Stop, and estimates the tempo from clock intervals.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.values import finite_number

__all__ = [
    "CcMapping",
    "CcRouter",
    "ClockFollower",
    "parse_cc_source",
    "MODES",
    "learn_from",
    "load_cc_mappings",
    "open_midi_input",
]

MODES = ("absolute", "relative", "centred")


def parse_cc_source(text: str, where: str = "source") -> tuple[str, int, int]:
    """'cc:1:74' | 'cc14:1:1' | 'nrpn:1:130' → (kind, channel 1-16, number), with range checks."""
    parts = str(text).split(":")
    if len(parts) != 3 or parts[0] not in ("cc", "cc14", "nrpn"):
        raise PlanError(where, f"{text!r}: expected cc:CHANNEL:NUMBER, cc14:CHANNEL:MSB or nrpn:CHANNEL:PARAM")
    kind = parts[0]
    try:
        ch, num = int(parts[1]), int(parts[2])
    except ValueError:
        raise PlanError(where, f"{text!r}: channel and number must be integers") from None
    if not 1 <= ch <= 16:
        raise PlanError(where, f"{text!r}: channel {ch} is out of range; allowed 1-16")
    hi = {"cc": 127, "cc14": 31, "nrpn": 16383}[kind]
    if not 0 <= num <= hi:
        raise PlanError(
            where, f"{text!r}: {'CC' if kind != 'nrpn' else 'NRPN parameter'} {num} is out of range; allowed 0-{hi}"
        )
    return kind, ch, num


@dataclass
class CcMapping:
    source: str  # cc:CH:N | cc14:CH:N | nrpn:CH:P
    bend: str
    param: str
    lo: float
    hi: float
    mode: str = "absolute"
    base: float | None = None  # centred mode's centre (default: the middle of lo..hi)
    step: float = 1 / 128  # relative mode: fraction of the range per tick
    takeover: bool = True
    kind: str = field(init=False)
    channel: int = field(init=False)
    number: int = field(init=False)

    def __post_init__(self) -> None:
        self.kind, self.channel, self.number = parse_cc_source(self.source)
        if self.mode not in MODES:
            raise PlanError("mode", f"{self.mode!r} is not valid; allowed: {', '.join(MODES)}")
        self.lo = finite_number(self.lo, "min")
        self.hi = finite_number(self.hi, "max")
        self.step = finite_number(self.step, "step", 0.0, 1.0, lo_open=True)
        if self.hi <= self.lo:
            raise PlanError("max", f"{self.source}: range [{self.lo:g}, {self.hi:g}] is empty")
        if self.base is not None:
            self.base = finite_number(self.base, "base", self.lo, self.hi)

    @property
    def full(self) -> int:
        return 127 if self.kind == "cc" else 16383


class CcRouter:
    """Feeds mido messages through the mappings; keeps the current value of every parameter."""

    def __init__(self, mappings: list[CcMapping], initial: dict[tuple[str, str], float] | None = None):
        self.mappings = mappings
        self.values: dict[tuple[str, str], float] = dict(initial or {})
        self._msb: dict[tuple[int, int], int] = {}
        self._nrpn_sel: dict[int, list[int | None]] = {}
        self._nrpn: dict[tuple[int, int], int] = {}
        self._picked: set[int] = set()

    def by_bend(self) -> dict[str, dict[str, float]]:
        """The current value of every mapped parameter: {bend id: {param: value}}."""
        out: dict[str, dict[str, float]] = {}
        for (bend, param), v in self.values.items():
            out.setdefault(bend, {})[param] = v
        return out

    def set_value(self, bend: str, param: str, value: float) -> None:
        """The parameter moved elsewhere (automation, preset): controls must pick it up again."""
        self.values[(bend, param)] = value
        for i, m in enumerate(self.mappings):
            if (m.bend, m.param) == (bend, param):
                self._picked.discard(i)

    def _raw(self, msg: Any) -> list[tuple[str, int, int, int]]:
        """(kind, channel, number, raw value) events a message produces."""
        if msg.type != "control_change":
            return []
        ch, n, v = msg.channel + 1, msg.control, msg.value
        out = [("cc", ch, n, v)]
        if n < 32:
            self._msb[(ch, n)] = v
            out.append(("cc14", ch, n, v * 128))
        elif 32 <= n < 64 and (ch, n - 32) in self._msb:
            out.append(("cc14", ch, n - 32, self._msb[(ch, n - 32)] * 128 + v))
        sel = self._nrpn_sel.setdefault(ch, [None, None])
        if n == 99:
            sel[0] = v
        elif n == 98:
            sel[1] = v
        elif n in (6, 38) and None not in sel:
            p = sel[0] * 128 + sel[1]  # type: ignore[operator]
            cur = self._nrpn.get((ch, p), 0)
            cur = v * 128 + cur % 128 if n == 6 else cur - cur % 128 + v
            self._nrpn[(ch, p)] = cur
            out.append(("nrpn", ch, p, cur))
        return out

    def feed(self, msg: Any) -> dict[str, dict[str, float]]:
        """Parameter changes caused by ``msg``: {bend: {param: value}}."""
        changes: dict[str, dict[str, float]] = {}
        for kind, ch, num, raw in self._raw(msg):
            for i, m in enumerate(self.mappings):
                if (m.kind, m.channel, m.number) != (kind, ch, num):
                    continue
                key = (m.bend, m.param)
                span = m.hi - m.lo
                cur = self.values.get(key, m.base if m.base is not None else (m.lo + m.hi) / 2)
                if m.mode == "relative":
                    delta = raw if raw < 64 else raw - 128  # two's complement in 7 bits
                    new = cur + delta * m.step * span
                elif m.mode == "centred":
                    centre = m.base if m.base is not None else (m.lo + m.hi) / 2
                    half = (m.full + 1) // 2
                    x = (raw - half) / (half - 1 if raw >= half else half)
                    new = centre + x * ((m.hi - centre) if x >= 0 else (centre - m.lo))
                else:
                    new = m.lo + raw / m.full * span
                    if m.takeover and i not in self._picked:
                        if key in self.values and abs(new - cur) > 0.02 * span:
                            continue  # not picked up yet
                        self._picked.add(i)
                new = min(m.hi, max(m.lo, new))
                self.values[key] = new
                changes.setdefault(m.bend, {})[m.param] = new
        return changes


def learn_from(messages: Any, timeout_messages: int = 10_000) -> str | None:
    """The source spec (cc:/cc14:/nrpn:) of the first control moved in ``messages``.

    A 14-bit pair is recognised when an LSB (N+32) follows its MSB (N); NRPN when CC 99/98 select
    a parameter and data follows."""
    last_msb: tuple[int, int] | None = None
    sel: dict[int, list[int | None]] = {}
    pending: str | None = None
    for i, msg in enumerate(messages):
        if i >= timeout_messages:
            break
        if msg.type != "control_change":
            continue
        ch, n = msg.channel + 1, msg.control
        s = sel.setdefault(ch, [None, None])
        if n in (99, 98):
            s[0 if n == 99 else 1] = msg.value
            continue
        if n in (6, 38) and None not in s:
            return f"nrpn:{ch}:{s[0] * 128 + s[1]}"  # type: ignore[operator]
        if last_msb is not None and (ch, n - 32) == last_msb:
            return f"cc14:{ch}:{n - 32}"
        if pending is not None:
            return pending
        if n < 32:
            last_msb, pending = (ch, n), f"cc:{ch}:{n}"  # wait one message for a possible LSB
            continue
        return f"cc:{ch}:{n}"
    return pending


class ClockFollower:
    """Follows MIDI clock / SPP / start / continue / stop. Positions in quarter-note beats."""

    def __init__(self, smoothing: int = 24):
        self.ticks = 0  # clocks since beat 0 (24 per quarter note)
        self.playing = False
        self._times: deque[float] = deque(maxlen=smoothing + 1)

    @property
    def beats(self) -> Fraction:
        return Fraction(self.ticks, 24)

    @property
    def tempo(self) -> float | None:
        """BPM estimated from the last clock intervals (None before two clocks)."""
        if len(self._times) < 2:
            return None
        span = self._times[-1] - self._times[0]
        return 60.0 / (span / (len(self._times) - 1) * 24) if span > 0 else None

    def feed(self, msg: Any, t: float) -> None:
        """``msg`` a mido message, ``t`` its arrival time in seconds."""
        if msg.type == "clock":
            self._times.append(t)
            if self.playing:
                self.ticks += 1
        elif msg.type == "start":
            self.ticks, self.playing = 0, True
            self._times.clear()
        elif msg.type == "continue":
            self.playing = True
        elif msg.type == "stop":
            self.playing = False
        elif msg.type == "songpos":
            self.ticks = msg.pos * 6  # sixteenths → clocks


def load_cc_mappings(config: dict[str, Any], plan: BendPlan) -> list[CcMapping]:
    """The ``[[midi]]`` tables of a config (source, bend, param, mode, min/max, step, takeover),
    checked against the plan; the range defaults to the operator parameter's range."""
    out = []
    for i, t in enumerate(config.get("midi", [])):
        where = f"midi[{i}]"
        bend, param = plan.frame_param(
            t.get("bend"), t.get("param"), bend_field=f"{where}.bend", name_field=f"{where}.param"
        )
        try:
            out.append(
                CcMapping(
                    str(t.get("source")),
                    bend.id,
                    t["param"],
                    t.get("min", param.lo),
                    t.get("max", param.hi),
                    mode=t.get("mode", "absolute"),
                    base=t.get("base"),
                    step=t.get("step", 1 / 128),
                    takeover=bool(t.get("takeover", True)),
                )
            )
        except BendbridgeError as e:
            raise PlanError(f"{where}.{e.field}", e.message) from None
    return out


def open_midi_input(name: str | None, virtual: str | None, backend: str | None = None) -> Any:
    """A mido input port by name (or a new virtual port), via python-rtmidi.

    Without an ALSA sequencer, run a JACK server (``jackd -d dummy``) and use
    ``backend='mido.backends.rtmidi/UNIX_JACK'``."""
    import mido

    be = mido.Backend(backend) if backend else mido
    try:
        if virtual:
            return be.open_input(virtual, virtual=True)
        names = be.get_input_names()
        if name not in names:
            raise BendbridgeError(
                "--midi-in", f"MIDI input {name!r} not found; available: {', '.join(names) or 'none'}"
            )
        return be.open_input(name)
    except (ImportError, OSError, SystemError) as e:
        raise BendbridgeError(
            "--midi-in",
            f"cannot open MIDI input ({type(e).__name__}: {e}); without an ALSA sequencer start "
            f"'jackd -d dummy' and pass --midi-backend mido.backends.rtmidi/UNIX_JACK",
        ) from None
