"""Rendering: batched bent denoising, schedulers, contact sheets."""

from .renderer import FrameResult, FrameSpec, RenderConfig, Renderer

__all__ = ["FrameResult", "FrameSpec", "RenderConfig", "Renderer"]
