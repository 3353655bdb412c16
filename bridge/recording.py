"""Recordings of a plugin stream (``.bbs``): every record a plugin sent, exactly as it arrived.

``bendbridge record`` writes what the plugin in the DAW streams while the song plays;
``bendbridge bounce --recorded FILE.bbs`` replays the records into a :class:`PluginStream` and
bounces the session it rebuilds (audio, tempo map, meter, lanes), the same path the live link
takes. Keeping the records, not a summary, means a recording made today bounces with tomorrow's
reconstruction, and nothing in it is ever unpickled: each record is a protocol packet, decoded and
validated like any packet off the wire.

Format: the 8 bytes ``BBREC\\x00\\x01\\n`` (format 1), then for each record its length as a 4-byte
little-endian unsigned integer and its bytes. A recording cut short inside a record (the recorder
was killed) loses only that record, which is named as a problem of the stream.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from bendbridge.protocol.errors import BendbridgeError

from .plugin_link import PluginStream

__all__ = ["MAGIC", "RecordingError", "RecordingWriter", "read_recording"]

MAGIC = b"BBREC\x00\x01\n"
MAX_RECORD = 16 << 20  # bytes: far above any packet the protocol allows
_LENGTH = struct.Struct("<I")


class RecordingError(BendbridgeError):
    """A recording that cannot be read or written."""


class RecordingWriter:
    """Appends records to a new ``.bbs`` file (flushed every :data:`FLUSH_EVERY` records)."""

    FLUSH_EVERY = 256

    def __init__(self, path: Path, overwrite: bool = False):
        self.path = Path(path)
        if self.path.suffix != ".bbs":
            raise RecordingError("--out", f"{self.path.name!r}: a recording is a .bbs file")
        if self.path.exists() and not overwrite:
            raise RecordingError("--out", f"{self.path} exists; give --force to replace it")
        if not self.path.parent.is_dir():
            raise RecordingError("--out", f"no such folder: {self.path.parent}")
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(MAGIC)
        self.records = 0
        self.bytes = len(MAGIC)

    def add(self, data: bytes) -> None:
        self._file.write(_LENGTH.pack(len(data)))
        self._file.write(data)
        self.records += 1
        self.bytes += _LENGTH.size + len(data)
        if self.records % self.FLUSH_EVERY == 0:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_recording(path: str | Path, what: str = "--recorded") -> PluginStream:
    """The stream a recording holds: its records, replayed in order."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(what, f"no such recording: {p}")
    stream = PluginStream()
    with open(p, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise RecordingError(what, f"{p.name} is not a bendbridge recording (made by 'bendbridge record')")
        while head := f.read(_LENGTH.size):
            size = _LENGTH.unpack(head)[0] if len(head) == _LENGTH.size else 0
            if size > MAX_RECORD:
                raise RecordingError(what, f"{p.name}: record {stream.records + 1} claims {size} bytes; corrupt file")
            data = f.read(size)
            if len(head) < _LENGTH.size or len(data) < size:
                stream.problem(f"the recording ends inside record {stream.records + 1} (cut short); it is left out")
                break
            stream.add_bytes(data)
    return stream
