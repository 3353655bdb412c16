"""The chunk structure of a Standard MIDI File, checked before any event is read.

An SMF is a header chunk ``MThd`` (length ≥ 6: format, number of tracks, division) followed by
chunks of a 4-byte type and a 32-bit big-endian length. The specification (MIDI 1.0, "Standard
MIDI Files 1.0", chunk section) says a reader must expect *alien* chunks and skip them as if they
were not there; only ``MTrk`` chunks hold events. Here the file is cut into chunks, alien ones
are dropped (with a warning), the header is checked, and each problem is named by its element:
the header, or track K and the byte where it starts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["SmfLayout", "SmfLayoutError", "split_chunks"]


class SmfLayoutError(ValueError):
    """A file whose chunk structure is broken; the message names the element."""


@dataclass
class SmfLayout:
    format: int
    division: int  # ticks per quarter note when > 0; an SMPTE division when the top bit is set
    tracks: list[bytes]  # each MTrk chunk's data, in file order
    warnings: list[str] = field(default_factory=list)

    def rebuilt(self) -> bytes:
        """The file with only its header and track chunks, the header counting the tracks it holds."""
        head = b"MThd" + struct.pack(">IHHH", 6, self.format, len(self.tracks), self.division & 0xFFFF)
        return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in self.tracks)


def split_chunks(data: bytes) -> SmfLayout:
    """Checks the chunk structure of ``data`` and returns its header fields and track chunks.

    Raises :class:`SmfLayoutError` naming the header or the track that is broken."""
    if not data:
        raise SmfLayoutError("the file is empty (0 bytes); expected a header chunk 'MThd'")
    if data[:4] != b"MThd":
        raise SmfLayoutError(f"header: expected 'MThd' at byte 0, found {data[:4]!r}: not a Standard MIDI File")
    if len(data) < 14:
        raise SmfLayoutError(f"header: the file ends after {len(data)} bytes, inside the 14-byte header")
    (length,) = struct.unpack(">I", data[4:8])
    if length < 6 or 8 + length > len(data):
        raise SmfLayoutError(f"header: length {length}, expected at least 6 and within the file's {len(data)} bytes")
    fmt, declared, division = struct.unpack(">HHh", data[8:14])
    if fmt > 2:
        raise SmfLayoutError(f"header: format {fmt} is not 0, 1 or 2")
    if division == 0:
        raise SmfLayoutError("header: division 0 (expected ticks per quarter note from 1 to 32767)")
    layout = SmfLayout(fmt, division, [])
    alien: list[str] = []
    pos = 8 + length
    while pos < len(data):
        if len(data) - pos < 8:
            layout.warnings.append(f"{len(data) - pos} stray bytes at the end of the file are ignored")
            break
        kind, size = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + size > len(data):
            what = f"track {len(layout.tracks) + 1}" if kind == b"MTrk" else f"chunk {kind!r}"
            raise SmfLayoutError(
                f"{what} at byte {pos}: its length {size} runs past the end of the file "
                f"({len(data) - pos - 8} bytes left): the file is truncated"
            )
        if kind == b"MTrk":
            layout.tracks.append(data[pos + 8 : pos + 8 + size])
        else:
            alien.append(kind.decode("latin-1"))
        pos += 8 + size
    if alien:
        kinds = ", ".join(sorted(set(alien)))
        layout.warnings.append(f"skipped {len(alien)} non-MIDI chunk(s) ({kinds}), as the SMF specification says")
    if not layout.tracks:
        raise SmfLayoutError(f"the file holds no track chunk 'MTrk' (its header declares {declared})")
    if len(layout.tracks) != declared:
        held = len(layout.tracks)
        layout.warnings.append(f"the header declares {declared} track(s), the file holds {held}: all are read")
    if fmt == 0 and len(layout.tracks) > 1:
        layout.warnings.append(f"format 0 file with {len(layout.tracks)} tracks: they are read as format 1")
        layout.format = 1
    return layout
