"""Users' pictures in: read a file and fit it to the render's size (scale to cover, centre-crop),
as adapters train on them and inversion starts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["IMAGE_SUFFIXES", "fit_array", "fit_picture", "read_picture"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def fit_picture(img: Any, size: tuple[int, int]) -> np.ndarray:
    """A PIL image → uint8 [H, W, 3] of ``size`` (W, H): scaled (Lanczos) to cover it, centre-cropped."""
    from PIL import Image

    w, h = size
    img = img.convert("RGB")
    scale = max(w / img.width, h / img.height)
    img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.LANCZOS)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return np.asarray(img.crop((left, top, left + w, top + h)), np.uint8)


def fit_array(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [H, W, 3] of any size → fitted to ``size`` (W, H) as :func:`fit_picture` does
    (returned as it is when it is that size already)."""
    from PIL import Image

    if pixels.shape[1::-1] == tuple(size):
        return pixels
    return fit_picture(Image.fromarray(pixels), size)


def read_picture(path: Path, size: tuple[int, int], field: str) -> np.ndarray:
    """The picture at ``path`` fitted to ``size`` (W, H); a missing or unreadable file is an error of ``field``."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BendbridgeError(field, f"no such file {str(path)!r}")
    try:
        with Image.open(path) as img:
            return fit_picture(img, size)
    except (UnidentifiedImageError, OSError) as e:
        raise BendbridgeError(field, f"{path.name} is not a readable image ({e})") from None
