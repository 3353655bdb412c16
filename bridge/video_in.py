"""Footage in (``bendbridge bounce --init-video``, ``--init-image``): the picture of a video file
shown at any time of the song, read with PyAV (or one still picture for every frame).

The footage plays from the song's start: its first frame is at 0 s. Each footage frame is shown
from its own presentation time to the next one's, in the footage's own time base and frame rate
(exact fractions, so 30000/1001 footage under a 24 fps bounce never drifts); the picture a bounce
frame starts from is the footage frame shown at the bounce frame's time. After the footage's last
frame it stays on screen (the bounce says so). Only presentation times are read to build the
index (no decoding); pictures are decoded in order as the bounce asks for them.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.inversion import picture_digest

__all__ = ["Footage", "FootageError", "Still"]

MAX_SIDE = 4096  # pixels: the protocol carries pictures up to 4K


class FootageError(BendbridgeError):
    """A video the bridge cannot start frames from (missing, unreadable, no video stream)."""


class Footage:
    """A video file's frames by presentation time: ``index_at(seconds)`` and ``picture(index)``."""

    def __init__(self, path: Path, field: str = "--init-video"):
        import av

        self.path, self.field = Path(path), field
        if not self.path.is_file():
            raise FootageError(field, f"no such file: {path}")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise FootageError(field, f"{self.path.name} has no video stream")
                stream = container.streams.video[0]
                self.time_base = Fraction(stream.time_base)
                self.size = (stream.codec_context.width, stream.codec_context.height)
                pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
        except av.error.FFmpegError as e:
            raise FootageError(field, f"{self.path.name} is not a readable video ({e})") from None
        if not pts:
            raise FootageError(field, f"{self.path.name} holds no video frames")
        if max(self.size) > MAX_SIDE:
            raise FootageError(field, f"{self.path.name} is {self.size[0]}×{self.size[1]}; at most {MAX_SIDE} a side")
        self.pts = pts
        self.times = [(p - pts[0]) * self.time_base for p in pts]  # seconds from the first frame
        self._frames: Iterator[Any] | None = None
        self._next = 0  # the index the decoder yields next
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def duration(self) -> Fraction:
        """The last frame's presentation time (s): the footage covers [0, duration] and holds after."""
        return self.times[-1]

    @property
    def fps(self) -> Fraction | None:
        """The footage's own frame rate as the stream states it (None if it does not)."""
        import av

        with av.open(str(self.path)) as container:
            rate = container.streams.video[0].average_rate
        return Fraction(rate) if rate else None

    def index_at(self, seconds: Fraction) -> int:
        """The footage frame on screen at ``seconds`` of the song (exact): the last one whose
        presentation time is not after it; before the first frame, the first."""
        return max(0, bisect.bisect_right(self.times, Fraction(seconds)) - 1)

    def indices(self, times: Sequence[Fraction]) -> list[int]:
        return [self.index_at(t) for t in times]

    def digest(self) -> str:
        """SHA-256 of the file: frames rendered from other footage are not resumed."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def picture(self, index: int) -> np.ndarray:
        """Footage frame ``index`` as uint8 RGB [H, W, 3], decoded in presentation order (asking
        for an earlier frame than the last one decodes again from the start)."""
        if not 0 <= index < len(self.pts):
            raise IndexError(index)
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if self._frames is None or index < self._next:
            self._restart()
        assert self._frames is not None
        for frame in self._frames:
            at = self._next
            self._next += 1
            if at == index:
                self._last = (index, frame.to_ndarray(format="rgb24"))
                return self._last[1]
        raise FootageError(self.field, f"{self.path.name}: frame {index} could not be decoded")

    def _restart(self) -> None:
        import av

        container = av.open(str(self.path))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"

        def frames() -> Iterator[Any]:
            try:
                for frame in container.decode(stream):
                    if frame.pts is not None:
                        yield frame
            finally:
                container.close()

        self._frames, self._next = frames(), 0


class Still:
    """One picture for every frame (``bounce --init-image``): the :class:`Footage` interface with a
    single frame that is always on screen."""

    def __init__(self, path: Path, field: str = "--init-image"):
        from PIL import Image, UnidentifiedImageError

        self.path, self.field = Path(path), field
        if not self.path.is_file():
            raise FootageError(field, f"no such file: {path}")
        try:
            with Image.open(self.path) as img:
                self._pixels = np.asarray(img.convert("RGB"), np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise FootageError(field, f"{self.path.name} is not a readable image ({e})") from None
        if max(self._pixels.shape[:2]) > MAX_SIDE:
            h, w = self._pixels.shape[:2]
            raise FootageError(field, f"{self.path.name} is {w}×{h}; at most {MAX_SIDE} a side")
        self.times = [Fraction(0)]

    def __len__(self) -> int:
        return 1

    @property
    def duration(self) -> Fraction:
        return Fraction(0)

    def index_at(self, seconds: Fraction) -> int:
        return 0

    def indices(self, times: Sequence[Fraction]) -> list[int]:
        return [0] * len(times)

    def digest(self) -> str:
        return picture_digest(self._pixels)

    def picture(self, index: int) -> np.ndarray:
        if index != 0:
            raise IndexError(index)
        return self._pixels
