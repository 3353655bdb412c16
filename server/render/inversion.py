"""DDIM inversion: a picture → the latent that DDIM denoising passes through at step K, so the
renderer can start from the user's own picture (and bend it) instead of from noise.

A deterministic DDIM step (η = 0) is linear in the sample and the model's output:
``x_next = c_x(t)·x + c_m(t)·m(x, t)`` (``m`` the guided prediction: ε, v or x₀). Inversion solves
it backwards from the clean latent, one step at a time, for the latent ``x`` at step ``i`` given
the latent ``x_next`` after it: ``x = (x_next − c_m·m(x, t)) / c_x``. The model output at the
unknown ``x`` is first taken at ``x_next`` (plain DDIM inversion: Song et al. 2021, *Denoising
Diffusion Implicit Models*, §4.3) and then refined by fixed-point iteration (Pan et al. 2023,
*Effective Real Image Editing with Accelerated Iterative Diffusion Inversion*; Garibi et al. 2024,
*ReNoise*). The coefficients are read off the scheduler's own ``step`` (probing it with unit
inputs), so inversion and denoising agree exactly, whatever the timestep spacing.

The inversion is inexact: the VAE loses detail, a few large steps break the "model output
barely changes within a step" assumption, and classifier-free guidance > 1 makes the fixed point
harder to reach (Mokady et al. 2023, *Null-text Inversion*). :func:`reconstruction_error` measures
what is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.inversion import InversionSettings

from .pictures import fit_array

if TYPE_CHECKING:
    from .renderer import FrameSpec, Renderer

__all__ = ["InversionSettings", "ddim_scheduler", "step_coefficients", "encode_images", "invert", "fixed_point",
           "start_from", "ReconstructionError", "reconstruction_error"]  # fmt: skip


def ddim_scheduler(base: Any, steps: int, device: torch.device) -> Any:
    """A deterministic DDIM scheduler (no clipping or thresholding: both would make a step
    nonlinear) from ``base``'s config, set to ``steps`` steps."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(base.config, clip_sample=False, thresholding=False)
    sched.set_timesteps(steps, device=device)
    return sched


def step_coefficients(sched: Any, t: Any) -> tuple[float, float]:
    """``(c_x, c_m)`` of the DDIM step at timestep ``t``: ``x_next = c_x·x + c_m·m``, read off
    ``sched.step`` with unit inputs (exact: the step is linear)."""
    one, zero = torch.ones(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    c_x = sched.step(zero, t, one).prev_sample.item()
    c_m = sched.step(one, t, zero).prev_sample.item()
    return c_x, c_m


@torch.no_grad()
def encode_images(renderer: Renderer, images: np.ndarray) -> torch.Tensor:
    """uint8 pictures [B, H, W, 3] at the render's size → latents [B, C, h, w] (the VAE encoder's
    mean, scaled as the denoiser expects)."""
    vae = renderer.model.pipe.vae
    if images.ndim != 4 or images.shape[1:] != (renderer.height, renderer.width, 3):
        raise BendbridgeError(
            "image", f"expected pictures of {renderer.width}×{renderer.height} RGB, got shape {tuple(images.shape)}"
        )
    x = torch.from_numpy(np.array(images, np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0
    z = vae.encode(x.to(renderer.device, vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((z - shift) * vae.config.scaling_factor).to(renderer.dtype)


@torch.no_grad()
def invert(
    renderer: Renderer, latents: torch.Tensor, frames: Sequence[FrameSpec], settings: InversionSettings
) -> torch.Tensor:
    """Clean latents [B, C, h, w] → the latents at step ``settings.to_step`` [B, C, h, w], with
    each frame's prompt mix (``frames``, one per row; their bends are not applied)."""
    settings.check(renderer.steps)
    sched = ddim_scheduler(renderer.scheduler, renderer.steps, renderer.device)
    guidance = renderer.guidance if settings.guidance is None else settings.guidance
    guided = guidance > 1.0
    text = renderer.text_rows(frames, bend=False, guided=guided)
    x_next = latents.to(renderer.dtype)
    for i in reversed(range(settings.to_step, renderer.steps)):
        t = sched.timesteps[i]
        c_x, c_m = step_coefficients(sched, t)

        def solve(x: torch.Tensor, t: Any = t, c_x: float = c_x, c_m: float = c_m, x_next: torch.Tensor = x_next):
            """One fixed-point update: the latent whose DDIM step from the model output at ``x`` lands on ``x_next``."""
            inp = torch.cat([x, x]) if guided else x
            m = renderer.unet_forward(sched.scale_model_input(inp, t), t, text)
            if guided:
                mu, mc = m.chunk(2)
                m = mu + guidance * (mc - mu)
            return (x_next - c_m * m) / c_x

        x_next = fixed_point(solve, x_next, settings.iterations_for(guidance))
    return x_next


def fixed_point(update: Any, start: torch.Tensor, iterations: int) -> torch.Tensor:
    """``x_{k+1} = update(x_k)`` from ``x_0 = start``, ``iterations`` times; the last iterate.
    (Keeping each row's iterate with the smallest residual instead was measured to reconstruct
    worse, most of all with guidance: a small residual at one step does not mean a good start.)"""
    x = start
    for _ in range(iterations):
        x = update(x)
    return x


def start_from(
    renderer: Renderer, images: Sequence[np.ndarray], frames: Sequence[FrameSpec], settings: InversionSettings
) -> list[FrameSpec]:
    """``frames`` (one per picture of ``images``, uint8 [H, W, 3] each, fitted to the render size
    as :func:`~.pictures.fit_array` does) set to start from the pictures, inverted to step
    ``settings.to_step``; their bends then act on the remaining steps."""
    settings.check(renderer.steps)
    if len(frames) != len(images):
        raise BendbridgeError("frames", f"{len(frames)} frames for {len(images)} pictures")
    _check_bends_act(renderer, settings.to_step)
    images = np.stack([fit_array(p, (renderer.width, renderer.height)) for p in images])
    out: list[FrameSpec] = []
    batch = renderer.config.max_batch
    for s in range(0, len(frames), batch):
        part = frames[s : s + batch]
        starts = invert(renderer, encode_images(renderer, images[s : s + batch]), part, settings)
        out.extend(replace(f, start_latent=x, start_step=settings.to_step) for f, x in zip(part, starts))
    return out


def _check_bends_act(renderer: Renderer, start: int) -> None:
    """A bend that acts only on steps before ``start`` would never touch a picture's frames."""
    for bb in renderer.bound:
        t = bb.bend.target
        last = t.step if t.kind == "latent" else t.steps[1] if t.steps and t.kind != "text" else None
        if last is not None and last < start:
            raise BendbridgeError(
                f"bend[{bb.index}].{'step' if t.kind == 'latent' else 'steps'}",
                f"acts only before step {start}, where denoising from the picture starts (--invert-to {start})",
            )


@dataclass(frozen=True)
class ReconstructionError:
    """How far a reconstruction is from the picture: mean absolute error per pixel and channel
    (0–255 levels) and PSNR (dB, peak 255)."""

    mean_abs: float
    psnr: float

    def to_dict(self) -> dict[str, float]:
        return {"mean_abs": round(self.mean_abs, 3), "psnr": round(self.psnr, 2)}


def reconstruction_error(image: np.ndarray, reconstruction: np.ndarray) -> ReconstructionError:
    """Two uint8 pictures of one shape → their :class:`ReconstructionError`."""
    diff = image.astype(np.float64) - reconstruction.astype(np.float64)
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return ReconstructionError(float(np.mean(np.abs(diff))), psnr)
