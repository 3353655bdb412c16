"""Procedural captioned scenes: the training data of the embedded model and the test grammar.

Every scene is a :class:`Scene` (a structured description), rendered to a 128×128 RGB image by
:func:`render_scene` and described in words by :func:`caption`. The grammar lives only here, so
the training script, the prompt-adherence test and the colour classifier agree on every word.

A fixed share of scene *combinations* (colour, shape, background colour, background style) is
held out of training (:func:`is_held_out`), so tests can measure generalisation to prompts the
model never saw verbatim.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "COLOURS",
    "SHAPES",
    "STYLES",
    "SIZES",
    "POSITIONS",
    "IMAGE_SIZE",
    "Scene",
    "caption",
    "render_scene",
    "random_scene",
    "is_held_out",
    "held_out_scenes",
    "classify_colours",
    "nearest_colour",
]

IMAGE_SIZE = 128

#: name -> sRGB (0–255). Chosen to be far apart so a nearest-colour classifier is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (250, 135, 20),
    "yellow": (245, 225, 40),
    "green": (35, 165, 55),
    "cyan": (40, 210, 215),
    "blue": (35, 65, 215),
    "purple": (125, 45, 180),
    "pink": (250, 140, 200),
    "white": (245, 245, 245),
    "black": (18, 18, 18),
    "brown": (120, 70, 30),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "diamond", "cross", "stripes")
#: Concepts the embedded model never saw (personal-adapter experiments): a colour name, a shape
#: and a background pattern. ``random_scene`` never draws them; ``render_scene`` draws them.
NOVEL_COLOURS: dict[str, tuple[int, int, int]] = {"navy": (20, 30, 110)}  # one the VAE can draw
NOVEL_SHAPES = ("heart",)
NOVEL_STYLES = ("dotted",)
NOVEL_COLOURS_LIST = tuple(NOVEL_COLOURS)
#: background styles; "sea" is a sun (circle) over a sea, "night" a starry sky (no colour named)
STYLES = ("flat", "gradient", "checkered", "sea", "night")
SIZES = {"small": 0.13, "medium": 0.2, "large": 0.29}  # radius as a fraction of the image
POSITIONS = {
    "center": (0.5, 0.5),
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
}
_NIGHT = (14, 16, 42)
_SKY_TOP, _SKY_BOTTOM = (200, 200, 205), (235, 235, 235)


@dataclass(frozen=True)
class Scene:
    """A structured scene. ``bg`` is None only for the "night" style."""

    fg: str
    shape: str
    bg: str | None
    style: str = "flat"
    size: str = "medium"
    position: str = "center"
    say_size: bool = False
    say_position: bool = False
    variant: int = 0  # seeds small details (star field, stripe phase)

    def combo(self) -> tuple[str, str, str | None, str]:
        return (self.fg, self.shape, self.bg, self.style)


def colour_rgb(name: str) -> tuple[int, int, int]:
    """sRGB of a named colour, novel ones included."""
    return COLOURS[name] if name in COLOURS else NOVEL_COLOURS[name]


def _article(word: str | None) -> str:
    return "an" if word and word[0] in "aeiou" else "a"


def caption(s: Scene) -> str:
    """English caption of a scene, e.g. ``"a red star on a blue gradient background"``."""
    if s.style == "sea":
        where = " in the sky" if not s.say_position else f" in the {s.position} of the sky"
        size = f"{s.size} " if s.say_size else ""
        return f"{_article(size or s.fg)} {size}{s.fg} sun{where} over {_article(s.bg)} {s.bg} sea"
    size = f"{s.size} " if s.say_size else ""
    if s.shape == "stripes":
        subject = f"{size}{s.fg} stripes"
    else:
        subject = f"{_article(size or s.fg)} {size}{s.fg} {s.shape}"
    where = f" in the {s.position}" if s.say_position else ""
    if s.style == "night":
        return f"{subject}{where} in a starry night sky"
    style = {"flat": "", "gradient": " gradient", "checkered": " checkered", "dotted": " dotted"}[s.style]
    return f"{subject}{where} on {_article(s.bg)} {s.bg}{style} background"


def _combo_hash(combo: tuple) -> int:
    return int.from_bytes(hashlib.sha256(repr(combo).encode()).digest()[:4], "big")


def is_held_out(s: Scene) -> bool:
    """True for the ~8 % of (fg, shape, bg, style) combinations never used in training."""
    return _combo_hash(s.combo()) % 12 == 0


def _valid(fg: str, bg: str | None, style: str) -> bool:
    if style in ("night", "sea") and fg in ("black", "gray", "white"):
        return False  # too close to the night sky or the pale sky
    return fg != bg


def random_scene(rng: np.random.Generator, *, held_out: bool = False) -> Scene:
    """Draw a scene; training draws (held_out=False) never return a held-out combination."""
    names = list(COLOURS)
    while True:
        style = STYLES[rng.choice(len(STYLES), p=[0.36, 0.2, 0.16, 0.16, 0.12])]
        fg = names[rng.integers(len(names))]
        bg = None if style == "night" else names[rng.integers(len(names))]
        shape = "circle" if style == "sea" else SHAPES[rng.integers(len(SHAPES))]
        if not _valid(fg, bg, style):
            continue
        say_size, say_position = bool(rng.random() < 0.35), bool(rng.random() < 0.35)
        size = list(SIZES)[rng.integers(len(SIZES))] if say_size or rng.random() < 0.5 else "medium"
        position = list(POSITIONS)[rng.integers(len(POSITIONS))] if say_position or rng.random() < 0.5 else "center"
        if style == "sea":  # the sun stays in the sky
            position = position.replace("bottom", "top") if "bottom" in position else position
            if position in ("center", "left", "right"):
                position = {"center": "top", "left": "top left", "right": "top right"}[position]
        s = Scene(fg, shape, bg, style, size, position, say_size, say_position, int(rng.integers(1 << 30)))
        if is_held_out(s) == held_out:
            return s


def held_out_scenes(n: int, seed: int = 0) -> list[Scene]:
    """``n`` distinct held-out scenes (distinct captions), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out: dict[str, Scene] = {}
    while len(out) < n:
        s = random_scene(rng, held_out=True)
        out.setdefault(caption(s), s)
    return list(out.values())


def contrast_pairs(
    attribute: str, value: str, n: int, seed: int = 0, source: str | None = None
) -> list[tuple[Scene, Scene]]:
    """``n`` training scenes whose ``attribute`` ("fg", "bg" or "shape") is not ``value`` (is
    ``source``, when given), each paired with the same scene with ``value`` instead: (with value,
    without), distinct captions, neither side a held-out combination; deterministic for ``seed``.
    The prompt sets of a steering vector toward ``value`` from every other value, or from
    ``source`` (Contrastive Activation Addition)."""
    if attribute not in ("fg", "bg", "shape"):
        raise ValueError(f"attribute must be fg, bg or shape, not {attribute!r}")
    if source == value:
        raise ValueError(f"the source {source!r} is the value steered toward")
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[Scene, Scene]] = {}
    for _ in range(200 * n):
        s = random_scene(rng)
        if source is not None and getattr(s, attribute) != source:
            continue
        if getattr(s, attribute) == value or s.style in ("night", "sea") and attribute != "fg":
            continue
        t = replace(s, **{attribute: value})
        if not _valid(t.fg, t.bg, t.style) or is_held_out(t):
            continue
        out.setdefault(caption(t), (t, s))
        if len(out) == n:
            return list(out.values())
    raise ValueError(f"only {len(out)} distinct pairs toward {attribute}={value}; asked for {n}")


# ----------------------------------------------------------------------------- rendering
def _grid(n: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n * ss) + 0.5) / (n * ss)
    return np.meshgrid(c, c, indexing="xy")  # x, y in [0, 1]


def _polygon_mask(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> np.ndarray:
    inside = np.zeros(x.shape, dtype=bool)
    j = len(pts) - 1
    for i in range(len(pts)):
        xi, yi = pts[i]
        xj, yj = pts[j]
        cond = (yi > y) != (yj > y)
        xcross = (xj - xi) * (y - yi) / (yj - yi + 1e-12) + xi
        inside ^= cond & (x < xcross)
        j = i
    return inside


def _shape_mask(shape: str, cx: float, cy: float, r: float, variant: int, ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of ``shape``, shape [H, W]."""
    x, y = _grid(IMAGE_SIZE, ss)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        m = dx**2 + dy**2 <= r**2
    elif shape == "ring":
        d = np.sqrt(dx**2 + dy**2)
        m = (d <= r) & (d >= 0.55 * r)
    elif shape == "square":
        m = (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    elif shape == "diamond":
        m = np.abs(dx) + np.abs(dy) <= 1.15 * r
    elif shape == "cross":
        w = 0.33 * r
        m = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    elif shape == "stripes":
        inside = (np.abs(dx) <= 1.1 * r) & (np.abs(dy) <= 1.1 * r)
        period = 2.2 * r / 5
        m = inside & (np.mod(dy + 1.1 * r, period) < period / 2)
    elif shape == "heart":  # (u² + v² − 1)³ ≤ u² v³, v pointing up
        u, v = dx / (0.95 * r), -(dy + 0.1 * r) / (0.95 * r)
        m = (u**2 + v**2 - 1) ** 3 <= u**2 * v**3
    elif shape in ("triangle", "star"):
        if shape == "triangle":
            ang = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
            rad = np.full(3, 1.15 * r)
            cy = cy + 0.2 * r
        else:
            ang = -np.pi / 2 + np.arange(10) * np.pi / 5
            rad = np.where(np.arange(10) % 2 == 0, 1.15 * r, 0.48 * r)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        m = _polygon_mask(x, y, pts)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    m = m.astype(np.float32).reshape(IMAGE_SIZE, ss, IMAGE_SIZE, ss)
    return m.mean(axis=(1, 3))


def _background(s: Scene) -> np.ndarray:
    h = IMAGE_SIZE
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)
    if s.style == "night":
        img = np.broadcast_to(np.array(_NIGHT, np.float32), (h, h, 3)).copy()
        rng = np.random.default_rng(s.variant)
        n = rng.integers(25, 45)
        ys, xs = rng.integers(0, h, n), rng.integers(0, h, n)
        img[ys, xs] = 235.0
        return img
    c = np.array(colour_rgb(s.bg), np.float32)  # type: ignore[arg-type]
    if s.style == "flat":
        return np.broadcast_to(c, (h, h, 3)).copy()
    if s.style == "gradient":
        vertical = s.variant % 2 == 0
        shade = 1.0 - 0.2 * t  # full colour to 80 % brightness
        img = c[None, None, :] * (shade[:, None, None] if vertical else shade[None, :, None])
        return np.broadcast_to(img, (h, h, 3)).copy()
    if s.style == "checkered":
        cell = 16
        yy, xx = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
        odd = ((yy // cell + xx // cell) % 2).astype(np.float32)[..., None]
        dark = c * 0.8 if c.mean() > 60 else c + 30.0
        return c * (1 - odd) + dark * odd
    if s.style == "dotted":
        cell, radius = 16, 3.5
        yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(h) + 0.5, indexing="ij")
        dot = ((yy % cell - cell / 2) ** 2 + (xx % cell - cell / 2) ** 2 <= radius**2).astype(np.float32)[..., None]
        shade = c * 0.55 if c.mean() > 60 else c + 70.0
        return c * (1 - dot) + shade * dot
    if s.style == "sea":
        img = np.empty((h, h, 3), np.float32)
        horizon = int(h * 0.62)
        sky_t = t[:horizon, None, None]
        img[:horizon] = (1 - sky_t) * np.array(_SKY_TOP) + sky_t * np.array(_SKY_BOTTOM)
        waves = 1.0 - 0.12 * (np.sin(np.arange(h) / 3.0 + s.variant % 7)[None, :] > 0.6)
        sea_shade = (0.8 + 0.2 * t[: h - horizon])[:, None]
        img[horizon:] = c[None, None, :] * (sea_shade * waves)[..., None]
        return img
    raise ValueError(f"unknown style {s.style!r}; valid: {', '.join(STYLES)}")


def render_scene(s: Scene) -> np.ndarray:
    """Render a scene as uint8 RGB, shape [H, W, 3] with H = W = :data:`IMAGE_SIZE`."""
    img = _background(s)
    cx, cy = POSITIONS[s.position]
    r = SIZES[s.size]
    if s.style == "sea":
        r = min(r, 0.2)
    m = _shape_mask(s.shape, cx, cy, r, s.variant)[..., None]
    img = img * (1 - m) + np.array(colour_rgb(s.fg), np.float32) * m
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- classifier
_PALETTE = np.array(list(COLOURS.values()), np.float32)
_NAMES = list(COLOURS)
# weights approximating perceptual distance (redmean-style), good enough for well-separated colours
_W = np.array([2.0, 4.0, 3.0], np.float32)


_NOVEL_PALETTE = np.concatenate([_PALETTE, np.array(list(NOVEL_COLOURS.values()), np.float32)])
_NOVEL_NAMES = _NAMES + list(NOVEL_COLOURS)


def nearest_colour(rgb: np.ndarray, novel: bool = False) -> np.ndarray:
    """Index into :data:`COLOURS` (then :data:`NOVEL_COLOURS` with ``novel``) of the nearest named
    colour for each pixel. [..., 3] -> [...]."""
    x = rgb.astype(np.float32)[..., None, :]
    d = (((x - (_NOVEL_PALETTE if novel else _PALETTE)) ** 2) * _W).sum(-1)
    return d.argmin(-1)


def classify_colours(img: np.ndarray, style: str, novel: bool = False) -> tuple[str, str | None]:
    """Guess (foreground colour, background colour) of a scene image [H, W, 3] uint8.

    The background colour is the most common named colour in its region (the border for flat,
    gradient and checkered backgrounds; the bottom fifth for a sea). The foreground colour is the
    most common named colour among the remaining pixels that differ from the background colour
    (and from the sky and night colours, which are not named in captions; a sky tinted by the
    model is recognised by its border). ``novel`` also names :data:`NOVEL_COLOURS`.
    """
    h = img.shape[0]
    lab = nearest_colour(img, novel)
    names = _NOVEL_NAMES if novel else _NAMES
    counts = lambda a: np.bincount(a.ravel(), minlength=len(names))  # noqa: E731
    excluded: list[int] = []
    if style == "night":
        bg = None
        excluded = [_NAMES.index("black")]
        region = lab
    else:
        if style == "sea":
            bg_region = lab[int(h * 0.82) :]
            region = lab[: int(h * 0.62)]
            excluded = [_NAMES.index("white"), _NAMES.index("gray")]
            # the sky is pale, but a model may tint it: whatever covers a third of the sky's
            # border (top rows, and the sides of the sky) is sky, not sun
            b = max(2, h // 16)
            sky_border = np.concatenate([region[:b].ravel(), region[:, :b].ravel(), region[:, -b:].ravel()])
            sc = counts(sky_border)
            excluded.extend(int(i) for i in np.flatnonzero(sc >= sky_border.size / 3))
        else:
            b = max(2, h // 16)
            bg_region = np.concatenate([lab[:b].ravel(), lab[-b:].ravel(), lab[:, :b].ravel(), lab[:, -b:].ravel()])
            region = lab
        bc = counts(bg_region)
        bg_idx = int(bc.argmax())
        bg = names[bg_idx]
        # the background's shades (checker cells, gradient ends) may fall into a neighbouring
        # colour: any colour covering a fifth of the background region belongs to it
        excluded.extend(int(i) for i in np.flatnonzero(bc >= 0.2 * bc.sum()))
    c = counts(region).astype(np.int64)
    c[excluded] = -1
    return names[int(c.argmax())], bg
