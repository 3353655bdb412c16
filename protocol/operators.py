"""The operator catalogue: every network-bending operator's name, family and parameters (no torch).

The bridge validates plans and mappings against this table; the render server implements each
entry (``bendbridge.server.operators``, checked against this table when it is imported, so a
missing or extra implementation fails at once). An operator acts on a batch ``[B, ...]``
(``[B, C, H, W]`` activations and latents, ``[B, T, D]`` text conditioning).

*Per-frame* parameters (kind ``float``, or ``matrix``: a square matrix matching the channel
count) may take a different value for every frame of a batch; *static* ones (``int``, ``ints``,
``choice``, ``file``: the path of a file the render server reads when it binds the plan, ``prompts``:
a prompt set it embeds then) are
fixed by the plan. Every bend also has the per-frame parameter ``mix`` (:data:`MIX`),
the blend of bent and unbent activations. ``identity`` is the value at which an operator returns
its input unchanged, whatever its other parameters, or None where there is none.

Operators and the papers they come from: point-wise and channel-space operators and latent
rotations (Dzwonczyk, Cella, Ban, "Network Bending of Diffusion Models for Audio-Visual
Generation", DAFx 2024); spatial and morphological operators on module activations (Broad,
Leymarie, Grierson, "Network Bending", Entropy 2022); word weighting ``weight`` (x·(1 + δ));
activation steering ``steer`` (Contrastive Activation Addition: Rimsky et al., "Steering Llama 2
via Contrastive Activation Addition", ACL 2024) and ``sae_feature`` (sparse-autoencoder
features: Bricken et al., "Towards Monosemanticity", 2023; top-k autoencoders: Gao et al.,
"Scaling and Evaluating Sparse Autoencoders", 2024); low-rank adapters ``lora`` (Hu et al.,
"LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022); movement through a prompt set's
PCA plane ``pca_move`` (the input→output maps of Stable Diffusion: movement-to-image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import BendbridgeError, PlanError, hint
from .values import bounds_text, finite_number

__all__ = [
    "ParamSpec",
    "OperatorSpec",
    "OperatorError",
    "MIX",
    "CATALOGUE",
    "R6_PLANES",
    "operator_spec",
    "operator_names",
    "WHOLE_MODEL",
    "LOADED_KINDS",
]

R6_PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
PER_FRAME_KINDS = ("float", "matrix")
LOADED_KINDS = ("file", "prompts")  # static parameters the render server turns into a resource when it binds
MIN_PROMPTS, MAX_PROMPTS, MAX_PROMPT_CHARS = 3, 64, 300  # a prompt set (kind "prompts")
WHOLE_MODEL = 0  # the "rank" of operators that act on the whole denoiser (adapters), not on one tensor


class OperatorError(PlanError):
    """An unknown operator, a parameter value it cannot take, or a tensor it cannot act on."""


@dataclass(frozen=True)
class ParamSpec:
    """One operator parameter: ``kind`` float | matrix | int | ints | choice | file, its plan default,
    its allowed range [lo, hi] (matrix entries for ``matrix``), its identity value, choices."""

    kind: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    identity: Any = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    @property
    def per_frame(self) -> bool:
        return self.kind in PER_FRAME_KINDS

    def describe_range(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind in LOADED_KINDS:
            return self.doc or "a file path"
        return bounds_text(self.lo, self.hi) if self.lo is not None or self.hi is not None else self.kind

    def check(self, value: Any, where: str, error: type[BendbridgeError] = OperatorError) -> Any:
        """``value`` validated and normalised (ints, a tuple of ints, rows of floats); else ``error``."""
        if self.kind == "choice":
            if value not in self.choices:
                raise error(where, f"{value!r} is not valid; allowed: {', '.join(self.choices)}", code="range")
            return value
        if self.kind == "ints":
            return self._ints(value, where, error)
        if self.kind == "file":
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                raise error(where, f"expected the path of a file, got {value!r}", code="type")
            return value.strip()
        if self.kind == "prompts":
            return self._prompts(value, where, error)
        if self.kind == "matrix":
            return self._matrix(value, where, error)
        return finite_number(value, where, self.lo, self.hi, integer=self.kind == "int", error=error)

    def _prompts(self, value: Any, where: str, error: type[BendbridgeError]) -> tuple[str, ...] | str:
        """A prompt set: a list of 3–64 prompts, or ``@FILE`` (one prompt a line, read when bound)."""
        if isinstance(value, str) and value.strip().startswith("@") and len(value.strip()) > 1:
            return value.strip()
        items = value.split("|") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
            raise error(where, f"expected a list of prompts or @FILE, got {value!r:.80}", code="type")
        prompts = tuple(p.strip() for p in items if p.strip())
        if not MIN_PROMPTS <= len(prompts) <= MAX_PROMPTS:
            raise error(
                where, f"{len(prompts)} prompts; a PCA plane needs {MIN_PROMPTS} to {MAX_PROMPTS}", code="range"
            )
        long = next((p for p in prompts if len(p) > MAX_PROMPT_CHARS), None)
        if long is not None:
            raise error(where, f"{long[:40]!r}… is longer than {MAX_PROMPT_CHARS} characters", code="range")
        return prompts

    def _ints(self, value: Any, where: str, error: type[BendbridgeError]) -> tuple[int, ...]:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
            try:
                value = [int(v) for v in value]
            except ValueError:
                raise error(where, f"expected a list of integers, got {value!r}", code="type") from None
        if not isinstance(value, (list, tuple)):
            raise error(where, f"expected a list of integers, got {value!r}", code="type")
        if self.default is not None and len(value) != len(self.default):
            raise error(where, f"expected {len(self.default)} integers, got {len(value)}", code="type")
        return tuple(finite_number(v, where, self.lo, self.hi, integer=True, error=error) for v in value)

    def _matrix(self, value: Any, where: str, error: type[BendbridgeError]) -> list[list[float]]:
        rows = value.tolist() if hasattr(value, "tolist") else value
        if (
            not isinstance(rows, (list, tuple))
            or not rows
            or not all(isinstance(r, (list, tuple)) and len(r) == len(rows) for r in rows)
        ):
            raise error(where, f"expected a square matrix (a list of rows), got {value!r:.80}", code="type")
        return [[finite_number(v, where, self.lo, self.hi, error=error) for v in row] for row in rows]


MIX = ParamSpec(
    "float", 1.0, 0.0, 1.0, identity=0.0, doc="blend of bent (1) and unbent (0) activations; every bend has it"
)


@dataclass(frozen=True)
class OperatorSpec:
    """A catalogue entry. ``ranks``: tensor ranks it accepts (4 = [B, C, H, W], 3 = [B, T, D],
    :data:`WHOLE_MODEL` = the denoiser's weights, target ``unet``);
    ``channel_op``: it mixes the channel dimension, so it acts on a bend's channel subset as a whole;
    ``anchored``: on the text target it receives the word's token mask [B, T] (``token_mask``) and
    places its change itself (from the word's first token on), instead of being cut to the word."""

    name: str
    family: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    ranks: tuple[int, ...] = (3, 4)
    channel_op: bool = False
    doc: str = ""
    branch: str = "both"  # the guidance branch a bend acts on unless its plan says otherwise
    anchored: bool = False

    def frame_params(self, floats_only: bool = False) -> list[str]:
        """Names of the parameters that may change every frame, ``mix`` last."""
        kinds = ("float",) if floats_only else PER_FRAME_KINDS
        return [k for k, p in self.params.items() if p.kind in kinds] + ["mix"]

    def frame_param(self, name: str) -> ParamSpec | None:
        """The spec of per-frame parameter ``name`` (``mix`` included), or None if it is not one."""
        if name == "mix":
            return MIX
        p = self.params.get(name)
        return p if p is not None and p.per_frame else None

    def identity_values(self) -> dict[str, Any] | None:
        """Per-frame values that make the operator an identity whatever the rest, or None.

        E.g. ``gaussian`` is an identity when ``value == 0`` for any sigma and centre.
        """
        ident = {k: p.identity for k, p in self.params.items() if p.per_frame and p.identity is not None}
        return ident or None


CATALOGUE: dict[str, OperatorSpec] = {}


def _add(
    name: str,
    family: str,
    doc: str,
    params: dict[str, ParamSpec] | None = None,
    *,
    ranks: tuple[int, ...] = (3, 4),
    channel_op: bool = False,
    branch: str = "both",
    anchored: bool = False,
) -> None:
    CATALOGUE[name] = OperatorSpec(name, family, params or {}, ranks, channel_op, doc, branch, anchored)


def operator_names() -> list[str]:
    return sorted(CATALOGUE)


def operator_spec(name: Any, where: str | None = None) -> OperatorSpec:
    """The catalogue entry of ``name``; else an OperatorError naming ``where`` and the nearest names."""
    spec = CATALOGUE.get(name) if isinstance(name, str) else None
    if spec is None:
        raise OperatorError(where, f"unknown operator {name!r}{hint(name, operator_names(), 'valid operators')}")
    return spec


# ----------------------------------------------------------------------------- point-wise
_F = "float"
_VALUE = ParamSpec(_F, 0.0, -30.0, 30.0, identity=0.0)
_add("add", "pointwise", "x + value", {"value": _VALUE})
_add("subtract", "pointwise", "x − value", {"value": _VALUE})
_add("multiply", "pointwise", "x · factor", {"factor": ParamSpec(_F, 1.0, -10.0, 10.0, identity=1.0)})
_add(
    "weight",
    "pointwise",
    "x · (1 + delta); word weighting on text conditioning",
    {"delta": ParamSpec(_F, 0.0, -5.0, 10.0, identity=0.0)},
)
_add(
    "noise",
    "pointwise",
    "x + std · N(0, 1), one seeded field for all frames",
    {"std": ParamSpec(_F, 0.0, 0.0, 5.0, identity=0.0), "seed": ParamSpec("int", 0, 0, 2**31 - 1)},
)
_add("threshold", "pointwise", "0 where |x| < r", {"r": ParamSpec(_F, 0.0, 0.0, 10.0, identity=0.0)})
_add("soft_threshold", "pointwise", "sign(x)·max(|x| − r, 0)", {"r": ParamSpec(_F, 0.0, 0.0, 10.0, identity=0.0)})
_add("invert", "pointwise", "1/r − x (|r| ≥ 1e-3)", {"r": ParamSpec(_F, 1.0, -10.0, 10.0)})
_add("negate", "pointwise", "−x")
_add("power", "pointwise", "sign(x)·|x|^p", {"p": ParamSpec(_F, 1.0, 0.0, 5.0, identity=1.0)})
_add("log", "pointwise", "log_base(|x| + 1e-6)", {"base": ParamSpec(_F, 2.718281828, 0.01, 10.0)})
_add("absolute", "pointwise", "|x|")
_add(
    "clamp",
    "pointwise",
    "clamp x to [lo, hi]",
    {"lo": ParamSpec(_F, -1.0, -100.0, 100.0), "hi": ParamSpec(_F, 1.0, -100.0, 100.0)},
)
_add(
    "rescale",
    "pointwise",
    "min–max rescale each sample to [lo, hi]",
    {"lo": ParamSpec(_F, -1.0, -100.0, 100.0), "hi": ParamSpec(_F, 1.0, -100.0, 100.0)},
)
_add(
    "gaussian",
    "pointwise",
    "add value · a 2-D Gaussian bump centred at (cx, cy), fractions of width and height",
    {
        "value": _VALUE,
        "sigma": ParamSpec(_F, 0.2, 0.001, 2.0),
        "cx": ParamSpec(_F, 0.5, 0.0, 1.0),
        "cy": ParamSpec(_F, 0.5, 0.0, 1.0),
    },
    ranks=(4,),
)

# ----------------------------------------------------------------------------- channel space
_ANGLE = ParamSpec(_F, 0.0, -8 * math.pi, 8 * math.pi, identity=0.0, doc="radians")
_add(
    "rotate_plane",
    "channel",
    "rotate each pixel's channel vector in one plane",
    {"angle": _ANGLE, "plane": ParamSpec("ints", (0, 1), 0, 4095, doc="two channel indices")},
    ranks=(4,),
    channel_op=True,
)
_add(
    "rotate_r6",
    "channel",
    "compose rotations in all six planes of 4 channels",
    {f"a{i}{j}": _ANGLE for i, j in R6_PLANES},
    ranks=(4,),
    channel_op=True,
)
_add("reflect", "channel", "negate one channel", {"channel": ParamSpec("int", 0, 0, 4095)}, ranks=(4,), channel_op=True)
_add("hadamard", "channel", "normalised Hadamard channel mix", ranks=(4,), channel_op=True)
_add(
    "matrix",
    "channel",
    "multiply channel vectors by a C×C matrix (static or per frame)",
    {"m": ParamSpec("matrix", None, -10.0, 10.0, doc="C×C")},
    ranks=(4,),
    channel_op=True,
)

# ----------------------------------------------------------------------------- spatial
_PADDING = ParamSpec("choice", "zeros", choices=("zeros", "reflection", "border"), doc="how borders are filled")
_add(
    "rotate",
    "spatial",
    "rotate about the centre (degrees, clockwise)",
    {"degrees": ParamSpec(_F, 0.0, -1440.0, 1440.0, identity=0.0), "padding": _PADDING},
    ranks=(4,),
)
_add(
    "scale",
    "spatial",
    "zoom about the centre (> 1 zooms in)",
    {"factor": ParamSpec(_F, 1.0, 0.05, 20.0, identity=1.0), "padding": _PADDING},
    ranks=(4,),
)
_add(
    "translate",
    "spatial",
    "shift by fractions of the width and height",
    {
        "tx": ParamSpec(_F, 0.0, -2.0, 2.0, identity=0.0),
        "ty": ParamSpec(_F, 0.0, -2.0, 2.0, identity=0.0),
        "padding": _PADDING,
    },
    ranks=(4,),
)
_add(
    "flip",
    "spatial",
    "mirror",
    {"axis": ParamSpec("choice", "horizontal", choices=("horizontal", "vertical"))},
    ranks=(4,),
)

# ----------------------------------------------------------------------------- morphological
_SIZE_DOC = "window side in pixels, rounded"
_SHAPE = ParamSpec("choice", "square", choices=("square", "ellipse"))
for _name, _doc in (
    ("dilate", "grey-scale dilation (max over the window)"),
    ("erode", "grey-scale erosion (min over the window)"),
    ("gradient", "dilation − erosion"),
    ("open", "erosion then dilation"),
    ("close", "dilation then erosion"),
):
    # the gradient at size 1 is zero, not the input: it has no identity value
    _size = ParamSpec(_F, 3.0, 1.0, 31.0, identity=None if _name == "gradient" else 1.0, doc=_SIZE_DOC)
    _add(_name, "morphological", _doc, {"size": _size, "shape": _SHAPE}, ranks=(4,))

# ----------------------------------------------------------------------------- steering
_add(
    "steer",
    "steering",
    "x + alpha · m · v: add a steering vector ('bendbridge steer build') at its module, where m is 1 "
    "(gate=none) or a soft mask of the pixels whose activation stands out (gate=salience); on the text "
    "target a token vector [K, D] adds to the K token rows from the word's first token on",
    {
        "vector": ParamSpec("file", None, doc="a steering-vector .safetensors file made for this model and module"),
        "alpha": ParamSpec(_F, 0.0, -20.0, 20.0, identity=0.0, doc="strength; 1 adds the vector once"),
        "gate": ParamSpec(
            "choice",
            "salience",
            choices=("salience", "none"),
            doc="salience: m = (‖x_p − x̄‖ / max_p ‖x_p − x̄‖)², per frame; none: everywhere (modules only)",
        ),
    },
    ranks=(3, 4),
    anchored=True,
)
_add(
    "sae_feature",
    "steering",
    "scale, or clamp, one sparse-autoencoder feature of each pixel; the reconstruction error is kept",
    {
        "sae": ParamSpec("file", None, doc="a sparse autoencoder .safetensors file ('bendbridge sae train')"),
        "feature": ParamSpec("int", 0, 0, 1 << 20, doc="feature index"),
        "scale": ParamSpec(_F, 1.0, -10.0, 20.0, identity=1.0, doc="multiplies the feature's activation"),
        "clamp": ParamSpec(
            _F,
            -1.0,
            -1.0,
            100.0,
            identity=-1.0,
            doc="when ≥ 0: set the activation to clamp × the feature's largest activation seen in training",
        ),
    },
    ranks=(4,),
)

# ----------------------------------------------------------------------------- movement through a prompt set
_add(
    "pca_move",
    "text",
    "the conditioning moved to a point of a prompt set's PCA plane: centre + x·σ₁·e₁ + y·σ₂·e₂ (centre: "
    "the prompts' mean embedding; e₁, e₂: their first two principal components; σ: the prompts' spread "
    "along each); at x = y = 0 it is the equal mix of the prompts",
    {
        "prompts": ParamSpec(
            "prompts", None, doc=f"{MIN_PROMPTS}–{MAX_PROMPTS} related prompts, or @FILE with one prompt a line"
        ),
        "x": ParamSpec(_F, 0.0, -4.0, 4.0, doc="along the first component, in units of its spread"),
        "y": ParamSpec(_F, 0.0, -4.0, 4.0, doc="along the second component, in units of its spread"),
    },
    ranks=(3,),
    branch="cond",
)

# ----------------------------------------------------------------------------- adapters
_add(
    "lora",
    "adapters",
    "W + weight · B·A on every layer of a low-rank adapter ('bendbridge adapt'): a personal concept "
    "faded in and out; weight 0 is the base model",
    {
        "adapter": ParamSpec("file", None, doc="a low-rank adapter .safetensors file made for this model"),
        "weight": ParamSpec(_F, 1.0, -4.0, 4.0, identity=0.0, doc="1 applies the adapter as trained"),
    },
    ranks=(WHOLE_MODEL,),
)
