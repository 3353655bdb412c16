"""Where a bounce's frames come from: the interface the bridge renders through.

A frame source renders the frames still missing (timeline index, position, resolved per-frame
parameters) and yields each finished one as PNG bytes with its status. Two implementations
exist: on a running render server over the protocol (``bendbridge.bridge.remote_frames``), and in
this process (``bendbridge.server.render.local_frames``, which needs the render side installed).
The bounce writes what a source yields into its own work folder and manifest, so a bounce
resumes the same way whichever source rendered its frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import BendbridgeError
from .position import FramePosition

__all__ = [
    "FrameParams",
    "FrameSource",
    "FrameSourceError",
    "LocalRendering",
    "PictureOf",
    "RenderedFrame",
    "FRAME_STATUSES",
]

FrameParams = Mapping[str, Mapping[str, Any]]  # bend id -> {per-frame parameter: value}
FRAME_STATUSES = ("ok", "nan", "black", "resumed", "dropped")


class FrameSourceError(BendbridgeError):
    """A frame source failed: no server answers, it refused the session or a frame, or went away."""


@dataclass(frozen=True)
class RenderedFrame:
    """A finished frame: its timeline index, PNG bytes, status (``ok``, ``nan``, ``black``) and the
    bends that produced NaN/inf in it, if any."""

    frame: int
    png: bytes
    status: str
    faults: tuple[str, ...] = ()


PictureOf = Callable[[int], Any]
"""Frame index → the picture the frame starts from (uint8 RGB [H, W, 3], any size: the renderer
fits it), inverted with the source's inversion settings (see ``protocol.inversion``)."""


class FrameSource(Protocol):
    identity: dict[str, Any]
    """What decides the frames besides each frame's parameters (model, render settings, plan),
    as plain data: the bounce fingerprints every frame with it."""

    def render(
        self,
        todo: Sequence[int],
        positions: Sequence[FramePosition],
        params: Sequence[FrameParams],
        pictures: PictureOf | None = None,
    ) -> Iterator[RenderedFrame]:
        """Render the frames ``todo`` (indices into ``positions`` and ``params``; each from its
        picture when ``pictures`` is given), yielding each as it is done."""
        ...

    def close(self) -> None: ...


LocalRendering = Callable[..., FrameSource]
"""``(render settings, bend plan, frames per batch, inversion=None) -> FrameSource`` rendering in
this process (``inversion``: an ``InversionSettings`` for frames that start from pictures)."""
