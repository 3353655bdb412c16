"""Frame files and manifests, written only under an output root (the render server's, or a bounce's work folder).

Frames are written atomically (a temporary file in the same folder, fsync, then rename), named
by timeline frame index; the manifest is JSON lines, one per finished frame, appended after the
frame file is in place. A frame is therefore either absent, or complete and in the manifest: a
crash can lose at most the frame being written, never corrupt one. Restarting reads the manifest
and skips frames already done with the same request fingerprint, and removes the temporary files a
crashed writer left behind (those named after a process that no longer runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BendbridgeError

__all__ = ["OutputStore", "ManifestEntry", "OutsideRootError", "frame_name", "png_bytes"]


class OutsideRootError(BendbridgeError):
    """A path that would leave the output root."""


def frame_name(index: int) -> str:
    return f"frame_{index:08d}.png"


@dataclass(frozen=True)
class ManifestEntry:
    """One finished frame: its position (the wire's position fields), parameters, seed and hashes."""

    frame: int
    sample: int
    seconds: float
    beats: float
    bar: int
    beat: float
    params: dict[str, Any]
    seed: int
    hash: str  # sha256 of the PNG file
    fingerprint: str  # sha256 of what determines the frame (setup + request)
    status: str = "ok"
    time: str = ""  # exact seconds as a fraction "p/q" (offline bounces)
    bar_beat: str = ""  # "bar:beat:tick"
    picture: int | None = None  # the footage frame it started from (bounce --init-video)

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "picture" or v is not None}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


class OutputStore:
    """One session's folder ``root/name``: frames and ``manifest.jsonl``."""

    def __init__(self, root: Path, name: str):
        self.root = Path(root).resolve()
        folder = (self.root / name).resolve()
        if folder.parent != self.root or name in ("", ".", ".."):
            raise OutsideRootError("output", f"{name!r} is not a plain folder name under the output root")
        self.dir = folder
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutsideRootError("output", f"cannot create the folder {folder}: {e.strerror}") from None
        self.manifest_path = self.dir / "manifest.jsonl"
        self.done: dict[int, ManifestEntry] = {}
        self._load()

    def _load(self) -> None:
        _remove_stale_temporaries(self.dir)
        if not self.manifest_path.exists():
            return
        with open(self.manifest_path, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    e = ManifestEntry(**d)
                except (json.JSONDecodeError, TypeError):
                    continue  # a line cut short by a crash: that frame is simply rendered again
                p = self.dir / frame_name(e.frame)
                if p.exists() and _sha256(p.read_bytes()) == e.hash:
                    self.done[e.frame] = e

    def finished(self, frame: int, fingerprint: str) -> ManifestEntry | None:
        e = self.done.get(frame)
        return e if e is not None and e.fingerprint == fingerprint else None

    def path(self, frame: int) -> Path:
        return self.dir / frame_name(frame)

    def write_frame(self, image: np.ndarray, entry_fields: dict[str, Any]) -> ManifestEntry:
        """Write ``image`` [H, W, 3] uint8 as PNG atomically, then append its manifest line."""
        return self.write_png(png_bytes(image), entry_fields)

    def write_png(self, data: bytes, entry_fields: dict[str, Any], durable: bool = True) -> ManifestEntry:
        """Write an already encoded PNG atomically, then append its manifest line; ``durable``
        syncs both to disk first (a bounce's resume relies on it; a live session's record need not).

        The bytes must be a PNG (checked by signature): they may come from a remote server."""
        if not data.startswith(_PNG_SIGNATURE):
            raise BendbridgeError(f"frame {entry_fields.get('frame')}", "the data is not a PNG image")
        entry = ManifestEntry(hash=_sha256(data), **entry_fields)
        final = self.path(entry.frame)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        with open(self.manifest_path, "a", encoding="utf-8") as f:
            f.write(entry.to_json() + "\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        self.done[entry.frame] = entry
        return entry


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.frame_*.png.<pid>.tmp`` files whose writing process is gone (a crash mid-write)."""
    for tmp in folder.glob(".frame_*.png.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _process_alive(int(pid)):  # this process, too, is alive
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def png_bytes(image: np.ndarray, fast: bool = False) -> bytes:
    """[H, W, 3] uint8 → PNG file bytes; ``fast`` compresses at level 1 (live frames: about a third
    less time, a few per cent more bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1 if fast else 6)
    return buf.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
