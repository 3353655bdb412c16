"""Rendering: batched bent denoising, schedulers, contact sheets."""

from .renderer import Denoised, FrameResult, FrameSpec, RenderConfig, Renderer

__all__ = ["Denoised", "FrameResult", "FrameSpec", "RenderConfig", "Renderer"]
