"""Render settings: what decides a frame's image besides its per-frame parameters.

One definition for the ``[render]`` table of a config, the command line's overrides, the wire's
``session_setup`` (which carries these fields as they are) and the renderer. ``None`` means the
model's own default (its native size, its default step count and guidance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import PlanError, hint
from .fields import Field, validate_value

__all__ = [
    "DECODER_HELP",
    "DECODERS",
    "MODEL_HELP",
    "PRECISION_HELP",
    "PRECISIONS",
    "RENDER_FIELDS",
    "SCHEDULERS",
    "RenderSettings",
    "check_scheduler",
    "render_identity",
]

# "default": the model folder's own scheduler; euler-a (ancestral) and lcm add noise as they step
SCHEDULERS = ("default", "ddim", "euler", "euler-a", "dpm", "pndm", "lcm")
# the number format a model computes in: auto = fp16 on CUDA, bf16 on a CPU with native bf16
# (AVX512-BF16 or AMX), else fp32; fp16 runs only on a GPU
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = (
    "number format of the model: auto (fp16 on CUDA; bf16 on a CPU with native bf16, else fp32), fp32, "
    "bf16, fp16 (GPU only); default fp16 on CUDA, else fp32"
)
MODEL_HELP = (
    "a diffusers folder (SD 1.x, 2.x, SD-Turbo, SDXL, SDXL-Turbo), a single-file checkpoint (.safetensors, .ckpt), "
    "or embedded / fast (default: embedded)"
)
DECODERS = ("full", "tiny")  # --decoder: the model's VAE, its tiny decoder; or an AutoencoderTiny folder
DECODER_HELP = (
    "what draws the image from the latent: full (the model's VAE, default), tiny (its distilled tiny decoder; "
    "the embedded and fast models ship one) or a folder holding a diffusers AutoencoderTiny (TAESD-style)"
)

RENDER_FIELDS: dict[str, Field] = {
    "prompts": Field("list_str", max_len=64),
    "negative_prompt": Field("str", max_len=4096),
    "seed": Field("int", lo=0, hi=2**63 - 1),
    "width": Field("int", lo=16, hi=4096),
    "height": Field("int", lo=16, hi=4096),
    "steps": Field("int", lo=1, hi=1000),
    "guidance": Field("float", lo=0, hi=50),
}
_ALIASES = ("prompt", "size")  # prompt = "…" for prompts = ["…"]; size = N for width = height = N
_NO_PROMPT = 'at least one prompt is needed, e.g. prompts = ["a red circle on a blue background"]'


@dataclass(frozen=True)
class RenderSettings:
    """Prompts (several are interpolated by per-frame weights), negative prompt, seed, size in
    pixels, denoising steps and classifier-free guidance scale."""

    prompts: tuple[str, ...]
    negative_prompt: str = ""
    seed: int = 0
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, validate_value(value, RENDER_FIELDS[f.name], f"render.{f.name}"))
        if not self.prompts:
            raise PlanError("render.prompts", _NO_PROMPT)

    @classmethod
    def from_table(cls, table: Any, where: str = "render", other_keys: tuple[str, ...] = ()) -> RenderSettings:
        """Settings from a config's ``[render]`` table, which may also hold ``other_keys`` (read
        elsewhere); errors name ``where.KEY``."""
        values = cls.table_values(table, where, other_keys)
        if not values.get("prompts"):
            raise PlanError(f"{where}.prompts" if where else "prompts", _NO_PROMPT)
        return cls(**values)

    @staticmethod
    def table_values(table: Any, where: str = "render", other_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """The render settings a ``[render]`` table gives, checked (``prompt`` and ``size`` become
        ``prompts`` and ``width``/``height``); prompts may be missing."""
        if not isinstance(table, dict):
            raise PlanError(where or "render", "expected a table")
        known = (*RENDER_FIELDS, *_ALIASES, *other_keys)
        prefix = f"{where}." if where else ""
        for key in table:
            if key not in known:
                raise PlanError(f"{prefix}{key}", f"unknown field{hint(key, known, 'valid fields')}")
        values = {k: table[k] for k in RENDER_FIELDS if k in table}
        if "prompt" in table:
            values.setdefault("prompts", [table["prompt"]])
        if "size" in table:
            values.setdefault("width", table["size"])
            values.setdefault("height", table["size"])
        return {key: validate_value(value, RENDER_FIELDS[key], f"{prefix}{key}") for key, value in values.items()}

    def override(self, where: dict[str, str], **values: Any) -> RenderSettings:
        """These settings with ``values`` that are not None; errors name ``where[key]`` (e.g. ``--seed``)."""
        given = {k: v for k, v in values.items() if v is not None}
        for k, v in given.items():
            validate_value(v, RENDER_FIELDS[k], where.get(k, k))
        return replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), as fingerprints and the wire want it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def render_identity(model: str, settings: RenderSettings, plan: Any) -> dict[str, Any]:
    """What decides the frames of a session besides each frame's own parameters: the model's name,
    the settings and the plan (a :class:`~bendbridge.protocol.plan.BendPlan`), as plain data."""
    return {"model": model, **settings.as_dict(), "plan": plan.to_dict()}


def check_scheduler(name: str, where: str = "scheduler") -> str:
    if name not in SCHEDULERS:
        raise PlanError(where, f"{name!r} is not valid; allowed: {', '.join(SCHEDULERS)}")
    return name
