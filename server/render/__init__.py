"""Rendering: batched bent denoising, schedulers, contact sheets."""

from .renderer import Denoised, FrameResult, FrameSpec, RenderConfig, Renderer, unet_replica

__all__ = ["Denoised", "FrameResult", "FrameSpec", "RenderConfig", "Renderer", "unet_replica"]
