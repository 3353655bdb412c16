"""Rendering a bounce's frames in this process: the frame source behind ``bendbridge bounce`` without ``--server``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bendbridge.protocol.frames import FrameParams, LocalRendering, PictureOf, RenderedFrame
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.output import png_bytes
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.position import FramePosition
from bendbridge.protocol.render import RenderSettings, render_identity
from bendbridge.server.model import LoadedModel, check_model_options, load_model

from .inversion import start_from
from .renderer import FrameSpec, RenderConfig, Renderer

__all__ = ["LocalFrames", "local_rendering"]


class LocalFrames:
    """Render with the bending engine in batched denoising passes of ``batch`` frames."""

    def __init__(
        self,
        model: LoadedModel,
        settings: RenderSettings,
        plan: BendPlan,
        batch: int,
        inversion: InversionSettings | None = None,
    ):
        self.renderer = Renderer(model, RenderConfig(settings, plan, max_batch=batch))
        self.batch = batch
        self.inversion = (inversion or InversionSettings()).check(self.renderer.steps, "--invert-to")
        self.identity = render_identity(model.name, self.renderer.settings, plan)

    def render(
        self,
        todo: Sequence[int],
        positions: Sequence[FramePosition],
        params: Sequence[FrameParams],
        pictures: PictureOf | None = None,
    ) -> Iterator[RenderedFrame]:
        r = self.renderer
        for s in range(0, len(todo), self.batch):
            chunk = todo[s : s + self.batch]
            frames = [FrameSpec(params=params[i]) for i in chunk]
            if pictures is not None:
                frames = start_from(r, [pictures(i) for i in chunk], frames, self.inversion)
            for i, res in zip(chunk, r.render(frames)):
                yield RenderedFrame(i, png_bytes(res.image), res.status, tuple(str(f) for f in res.faults))

    def close(self) -> None:
        pass


def local_rendering(
    model: LoadedModel | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    decoder: str | None = None,
) -> LocalRendering:
    """A :data:`~bendbridge.protocol.frames.LocalRendering` on ``model`` (a loaded model, a diffusers
    folder, or None for the embedded model), in ``precision`` with ``decoder`` (see ``load_model``).
    A folder is loaded when the first source is opened, so everything a bounce checks first is
    checked before the model loads; the folder, precision and decoder are checked now."""
    loaded: list[LoadedModel] = [model] if isinstance(model, LoadedModel) else []
    if not loaded:
        check_model_options(model, device, precision, decoder)

    def open_source(settings: Any, plan: Any, batch: int, inversion: InversionSettings | None = None) -> LocalFrames:
        if not loaded:
            loaded.append(load_model(model, device, precision=precision, decoder=decoder))
        return LocalFrames(loaded[0], settings, plan, batch, inversion)

    return open_source
