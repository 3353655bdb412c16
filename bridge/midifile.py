"""Standard MIDI Files (via mido): tempo map, time signatures and CC automation lanes.

Ticks become beats exactly (tick / PPQ). Tempo events (``FF 51``, µs per quarter note) make a
stepped :class:`~bridge.tempo.TempoMap`; as the SMF specification has it, the tempo is 120 BPM
(500,000 µs per quarter) until the first Set Tempo wherever it is, and of several Set Tempo events
at one tick the last in the file is in force (events at one tick are taken in file order: track
by track, then within each track). Time signatures (``FF 58``) make a
:class:`~bridge.tempo.TimeSignatureMap`; one that does not fall on a bar line of the meter before
it (a pickup, a cadenza, a notation export) starts a new bar there, cutting the bar in progress
short, and is named once in :attr:`MidiSession.warnings`. Of a format 2 file (independent
sequences) the first sequence is read, with a warning. SMPTE-division files are refused.

CC lanes are held values (MIDI controllers step), in beats, normalised to [0, 1]; before a lane's
first event it has no value (a mapped parameter keeps its base there):

- ``cc:CH:N``       7-bit controller N on channel CH (1-16), value / 127;
- ``cc14:CH:N``     14-bit pair, MSB on N (0-31) and LSB on N+32, value / 16383;
- ``nrpn:CH:P``     NRPN parameter P (MSB·128 + LSB from CC 99/98), data from CC 6/38,
                    increment/decrement from CC 96/97;
- ``pitchbend:CH``  pitch bend, centre 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from bendbridge.protocol.errors import BendbridgeError

from .lanes import AutomationLane, LanePoint
from .smf_chunks import SmfLayout, SmfLayoutError, split_chunks
from .tempo import TempoMap, TimeSignatureMap

if TYPE_CHECKING:
    import mido

__all__ = ["MidiSession", "read_midi", "MidiFileError"]


class MidiFileError(BendbridgeError):
    """A MIDI file that cannot be read."""


@dataclass
class MidiSession:
    """What a MIDI file tells the bridge."""

    path: Path
    ppq: int | None
    tempo: TempoMap
    meter: TimeSignatureMap
    lanes: dict[str, AutomationLane] = field(default_factory=dict)
    length_beats: Fraction = Fraction(0)
    warnings: list[str] = field(default_factory=list)  # what was read differently from the file's letter


def read_midi(path: str | Path) -> MidiSession:
    p = Path(path)
    if not p.is_file():
        raise MidiFileError(str(p), "no such MIDI file")
    mid, warnings = _open_smf(p)
    tracks = mid.tracks
    if mid.type == 2 and len(tracks) > 1:  # independent sequences, each with its own timeline
        warnings.append(f"format 2 file of {len(tracks)} independent sequences: only the first one is read")
        tracks = tracks[:1]
    events: list[tuple[int, int, object]] = []  # (absolute tick, order, message)
    order = 0
    for track in tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            events.append((tick, order, msg))
            order += 1
    events.sort(key=lambda e: (e[0], e[1]))
    ppq = mid.ticks_per_beat
    tempos: list[tuple[Fraction, Fraction]] = []
    sigs: list[tuple[Fraction, int, int]] = []
    cc = _CcDecoder()
    last = 0
    for tick, _, msg in events:
        beat = Fraction(tick, ppq)
        last = max(last, tick)
        if msg.type == "set_tempo":
            tempos.append((beat, Fraction(60_000_000, msg.tempo)))
        elif msg.type == "time_signature":
            sigs.append((beat, msg.numerator, msg.denominator))
        elif msg.type == "control_change":
            cc.feed(beat, msg.channel + 1, msg.control, msg.value)
        elif msg.type == "pitchwheel":
            cc.add(f"pitchbend:{msg.channel + 1}", beat, (msg.pitch + 8192) / 16383)
    tempo = TempoMap.from_beat_changes(tempos)  # file order; 120 BPM before the first Set Tempo
    meter = TimeSignatureMap.from_beat_changes(sigs or [(0, 4, 4)], warnings)
    lanes = {name: AutomationLane(name, pts, "beats") for name, pts in cc.lanes.items()}
    return MidiSession(p, ppq, tempo, meter, lanes, Fraction(last, ppq), warnings)


def _open_smf(p: Path) -> tuple[mido.MidiFile, list[str]]:
    """The file's tracks through mido, after its chunk structure is checked and alien chunks dropped."""
    import io

    import mido

    try:
        layout = split_chunks(p.read_bytes())
    except SmfLayoutError as e:
        raise MidiFileError(str(p), str(e)) from None
    if layout.division < 0:
        raise MidiFileError(str(p), "header: SMPTE time division is not supported (ticks per quarter note only)")
    try:
        return mido.MidiFile(file=io.BytesIO(layout.rebuilt()), clip=True), layout.warnings
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        reason = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__}: the events run past the chunk's end"
    for k, track in enumerate(layout.tracks, start=1):  # name the track that cannot be read
        one = SmfLayout(layout.format, layout.division, [track]).rebuilt()
        try:
            mido.MidiFile(file=io.BytesIO(one), clip=True)
        except (OSError, EOFError, ValueError, KeyError, IndexError):
            where = f"track {k} of {len(layout.tracks)}"
            raise MidiFileError(str(p), f"{where}: its events cannot be read ({reason})") from None
    raise MidiFileError(str(p), f"not a readable Standard MIDI File ({reason})")


class _CcDecoder:
    """Turns CC messages into lanes: plain 7-bit, 14-bit pairs and NRPN."""

    def __init__(self) -> None:
        self.lanes: dict[str, list[LanePoint]] = {}
        self.msb: dict[tuple[int, int], int] = {}
        self.nrpn_sel: dict[int, list[int | None]] = {}
        self.nrpn_val: dict[tuple[int, int], int] = {}

    def add(self, name: str, beat: Fraction, value: float) -> None:
        pts = self.lanes.setdefault(name, [])
        if pts and pts[-1].time == beat:
            pts[-1] = LanePoint(beat, value, 1)
        else:
            pts.append(LanePoint(beat, value, 1))  # held until the next event

    def feed(self, beat: Fraction, ch: int, num: int, val: int) -> None:
        self.add(f"cc:{ch}:{num}", beat, val / 127)
        sel = self.nrpn_sel.setdefault(ch, [None, None])
        if num == 99:
            sel[0] = val
        elif num == 98:
            sel[1] = val
        elif num in (101, 100):  # RPN selection deselects NRPN
            sel[0] = sel[1] = None
        elif num in (6, 38, 96, 97) and None not in sel:
            param = sel[0] * 128 + sel[1]  # type: ignore[operator]
            cur = self.nrpn_val.get((ch, param), 0)
            if num == 6:
                cur = val * 128 + (cur % 128)
            elif num == 38:
                cur = (cur // 128) * 128 + val
            else:
                cur = min(16383, cur + 1) if num == 96 else max(0, cur - 1)
            self.nrpn_val[(ch, param)] = cur
            self.add(f"nrpn:{ch}:{param}", beat, cur / 16383)
        if num < 32:
            self.msb[(ch, num)] = val
            self.add(f"cc14:{ch}:{num}", beat, val * 128 / 16383)
        elif 32 <= num < 64 and (ch, num - 32) in self.msb:
            self.add(f"cc14:{ch}:{num - 32}", beat, (self.msb[(ch, num - 32)] * 128 + val) / 16383)
