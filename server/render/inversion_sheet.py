"""What an inversion keeps: the picture, the VAE's round trip, the reconstruction from the inverted
latent (no bend), and the error per pixel, as one figure with its numbers (matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bendbridge.bridge.report import pyplot
from bendbridge.protocol.plan import BendPlan

from .inversion import InversionSettings, ReconstructionError

__all__ = ["InversionReport", "inversion_report", "inversion_sheet"]


@dataclass(frozen=True)
class InversionReport:
    """One picture's inversion: the pictures [H, W, 3] uint8 and their errors against the picture."""

    picture: np.ndarray
    vae_only: np.ndarray  # encoded and decoded: the part of the error the VAE alone makes
    reconstruction: np.ndarray  # inverted to the start step and denoised again, unbent
    vae_error: ReconstructionError
    error: ReconstructionError
    settings: InversionSettings
    steps: int
    guidance: float
    prompt: str

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "steps": self.steps,
            "guidance": self.guidance,
            "invert_to": self.settings.to_step,
            "iterations": self.settings.iterations_for(self.guidance),
            "reconstruction": self.error.to_dict(),
            "vae_only": self.vae_error.to_dict(),
        }


def inversion_sheet(report: InversionReport, png: Path) -> None:
    """Picture, VAE round trip, reconstruction and the per-pixel error (mean over channels, 0–255
    levels, with a colour bar) side by side, titled with the numbers."""
    plt = pyplot("--out")
    fig, axes = plt.subplots(1, 4, figsize=(12.4, 3.6))
    panels = [
        ("picture", report.picture),
        (f"VAE round trip\n{report.vae_error.mean_abs:.1f} levels, {report.vae_error.psnr:.1f} dB", report.vae_only),
        (f"reconstruction\n{report.error.mean_abs:.1f} levels, {report.error.psnr:.1f} dB", report.reconstruction),
    ]
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    err = np.abs(report.picture.astype(np.float32) - report.reconstruction.astype(np.float32)).mean(-1)
    im = axes[3].imshow(err, cmap="magma", vmin=0, vmax=max(32.0, float(err.max())))
    axes[3].set_title("|picture − reconstruction|", fontsize=9)
    axes[3].set_xlabel("x (pixels)")
    fig.colorbar(im, ax=axes[3], label="error (0–255 levels, mean of R, G, B)", fraction=0.046)
    s = report.settings
    iterations = s.iterations_for(report.guidance)
    fig.suptitle(
        f"DDIM inversion to step {s.to_step} of {report.steps}, {iterations} fixed-point iteration(s), "
        f"guidance {report.guidance:g}; prompt '{report.prompt}'",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def inversion_report(renderer, picture: np.ndarray, settings: InversionSettings) -> InversionReport:
    """Invert ``picture`` [H, W, 3] uint8 (fitted to the render's size) with the renderer's first
    prompt and render it back unbent: the report of what was kept."""
    from .inversion import encode_images, reconstruction_error, start_from
    from .renderer import FrameSpec, Renderer

    assert isinstance(renderer, Renderer)
    frame = FrameSpec.of_prompt(0, len(renderer.prompts))
    unbent = Renderer(renderer.model, replace(renderer.config, plan=BendPlan()), unet=renderer.unet)
    pictures = picture[None]
    vae_only = unbent.decode(encode_images(unbent, pictures))[0][0]
    reconstruction = unbent.render(start_from(unbent, pictures, [frame], settings))[0].image
    return InversionReport(
        picture, vae_only, reconstruction, reconstruction_error(picture, vae_only),
        reconstruction_error(picture, reconstruction), settings, unbent.steps,
        unbent.guidance if settings.guidance is None else settings.guidance, renderer.prompts[0],
    )  # fmt: skip
