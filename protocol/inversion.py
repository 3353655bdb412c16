"""How a picture is inverted to a starting latent (``render --init-image``, ``invert``, a bounce's
``--init-video``): one definition for the command line, the wire and the server's inversion
(``bendbridge.server.render.inversion``)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BendbridgeError

__all__ = ["InversionSettings", "MAX_ITERATIONS", "MAX_PICTURE_SIDE", "OPTIONS", "check_picture", "picture_digest"]

MAX_ITERATIONS = 50
ITERATIONS_WITHOUT_GUIDANCE = 4  # refinement brings a picture back to within about a level of the VAE's own loss
ITERATIONS_WITH_GUIDANCE = 1  # with guidance > 1 refinement makes reconstructions worse (README's table)
MAX_PICTURE_SIDE = 4096  # pixels: a frame request carries a picture of at most 4K a side
OPTIONS = {"to_step": "--invert-to", "iterations": "--invert-iterations", "guidance": "--invert-guidance"}


@dataclass(frozen=True)
class InversionSettings:
    """To which denoising step (0 = all the way to the start noise, ``steps`` = the clean latent
    itself), with how many fixed-point iterations per step (1 = plain DDIM inversion; None: 4
    without guidance, 1 with it, as measured best on the embedded model), and with which guidance
    (None: the render's own, so that denoising retraces the inversion)."""

    to_step: int = 0
    iterations: int | None = None
    guidance: float | None = None

    def iterations_for(self, guidance: float) -> int:
        """The fixed-point iterations a step at ``guidance``: as given, else the measured best."""
        if self.iterations is not None:
            return self.iterations
        return ITERATIONS_WITHOUT_GUIDANCE if guidance <= 1.0 else ITERATIONS_WITH_GUIDANCE

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, field: str) -> InversionSettings:
        """Settings from plain data (a wire field, a config table), checked field by field."""
        if not isinstance(data, dict):
            raise BendbridgeError(field, "expected a table: to_step, iterations, guidance")
        unknown = [k for k in data if k not in ("to_step", "iterations", "guidance")]
        if unknown:
            raise BendbridgeError(f"{field}.{unknown[0]}", "unknown setting; valid: to_step, iterations, guidance")
        for name in ("to_step", "iterations"):
            if data.get(name) is not None and (not isinstance(data[name], int) or isinstance(data[name], bool)):
                raise BendbridgeError(f"{field}.{name}", f"expected a whole number, got {data[name]!r:.20}")
        guidance = data.get("guidance")
        if guidance is not None and (not isinstance(guidance, (int, float)) or isinstance(guidance, bool)):
            raise BendbridgeError(f"{field}.guidance", f"expected a number, got {guidance!r:.20}")
        return cls(**data).check(None, field)

    def check_options(self, steps: int | None, error: type[BendbridgeError] = BendbridgeError) -> InversionSettings:
        """:meth:`check`, its errors naming the command-line options (``--invert-to`` …) as ``error``."""
        try:
            return self.check(steps)
        except BendbridgeError as e:
            raise error(OPTIONS[(e.field or "").rsplit(".", 1)[-1]], e.message) from None

    def check(self, steps: int | None, field: str = "invert") -> InversionSettings:
        """Itself, or the error naming the field out of range (``steps``: the render's, if known)."""
        top = steps if steps is not None else 10_000
        if not 0 <= self.to_step <= top:
            where = f"0…{steps}" if steps is not None else "0 … the render's steps"
            raise BendbridgeError(f"{field}.to_step", f"{self.to_step} is not a step of this render: {where}")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise BendbridgeError(f"{field}.iterations", f"{self.iterations} is outside 1…{MAX_ITERATIONS}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and 1.0 <= self.guidance <= 30.0):
            raise BendbridgeError(f"{field}.guidance", f"{self.guidance} is outside 1…30")
        return self


def check_picture(picture: Any, field: str) -> Any:
    """A picture as frames carry it: uint8 RGB [H, W, 3], 1…4096 pixels a side."""
    shape = getattr(picture, "shape", None)
    if getattr(picture, "dtype", None) is None or picture.dtype.name != "uint8" or shape is None or len(shape) != 3:
        raise BendbridgeError(
            field, f"expected uint8 RGB pixels [H, W, 3], got {getattr(picture, 'dtype', '?')} {shape}"
        )
    if shape[2] != 3 or not (1 <= shape[0] <= MAX_PICTURE_SIDE and 1 <= shape[1] <= MAX_PICTURE_SIDE):
        raise BendbridgeError(field, f"expected [H, W, 3] with 1…{MAX_PICTURE_SIDE} pixels a side, got {tuple(shape)}")
    return picture


def picture_digest(pixels: Any) -> str:
    """SHA-256 of a picture's shape and pixels: what fingerprints a frame started from it."""
    return hashlib.sha256(repr(tuple(pixels.shape)).encode() + pixels.tobytes()).hexdigest()
