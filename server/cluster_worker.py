"""The render worker of a bounce on a Ray cluster (``bendbridge.bridge.cluster_frames``): one Ray
actor per worker, the model loaded once, batches of frames rendered in the worker's process. The
module imports nothing heavy, so a torch-free bridge can hand the class to Ray; the renderer is
imported when a worker is built, on the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bendbridge.protocol.frames import RenderedFrame
from bendbridge.protocol.position import FramePosition

__all__ = ["RenderWorker"]


class RenderWorker:
    """One render worker (a Ray actor): the model loaded once, batches rendered in this process."""

    def __init__(self, model: str | None, settings: Any, plan: Any, batch: int, inversion: Any, device: str | None):
        from bendbridge.server.render.local_frames import local_rendering

        self.source = local_rendering(Path(model) if model else None, device)(settings, plan, batch, inversion)

    def identity(self) -> dict[str, Any]:
        return self.source.identity

    def render(
        self, frames: list[int], positions: dict[int, FramePosition], params: dict[int, Any], pictures: dict | None
    ) -> list[RenderedFrame]:
        """Frames ``frames`` (timeline indices) → their rendered frames, the batch at once."""
        pos = [positions[i] for i in frames]
        pp = [params[i] for i in frames]
        picture = (lambda k: pictures[frames[k]]) if pictures else None  # noqa: E731
        rendered = self.source.render(list(range(len(frames))), pos, pp, picture)
        return [RenderedFrame(frames[r.frame], r.png, r.status, r.faults) for r in rendered]
