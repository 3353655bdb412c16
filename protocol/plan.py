"""Bend plans: which operator is applied where, with which parameters, channels, steps and branch.

A plan is a list of :class:`Bend`. It loads from TOML or JSON (``[[bend]]`` tables) or from compact
command-line specs, validates against the operator catalogue with errors that name the field and
list the valid choices, and serialises back. Checks that need a model (does the layer exist, how
many channels does it have) happen when the render server binds the plan to its model.

Compact spec grammar (``bendbridge render --bend SPEC``)::

    SPEC    := OP (":" PARAM "=" VALUE)* "@" TARGET (":" OPTION "=" VALUE)*
    TARGET  := "latent" | "text" | "unet" | dotted.module.name | "#"INDEX
    OPTION  := step | steps | word | at | branch | channels | channel_fraction | element_fraction
             | region | seed | mix | id
    VALUE   := number | list "a,b,c" | range "a-b" | word

    rotate_plane:plane=0,1:angle=1.2@latent:step=0
    dilate:size=3@mid_block:steps=0-2:branch=cond
    weight:delta=1.5@text:word=red
    lora:adapter=logo.safetensors:weight=0.8@unet:steps=1-5
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BendbridgeError, PlanError, hint
from .operators import MIX, WHOLE_MODEL, OperatorSpec, ParamSpec, operator_spec
from .values import finite_number

__all__ = ["Target", "Bend", "BendPlan", "PlanError", "parse_target", "parse_spec", "parse_region", "BRANCHES", "UNET"]

BRANCHES = ("both", "cond", "uncond")
UNET = "unet"  # the target of adapters: the whole denoiser
_BEND_FIELDS = (
    "id",
    "op",
    "target",
    "params",
    "step",
    "steps",
    "word",
    "at",
    "branch",
    "channels",
    "channel_fraction",
    "element_fraction",
    "region",
    "seed",
    "mix",
)


@dataclass(frozen=True)
class Target:
    """Where a bend applies.

    - ``latent``: the latent x_t before denoising step ``step`` (``step`` = number of steps means
      the final latent before VAE decoding) — the DAFx 2024 paper's "layer";
    - ``module``: the output activation of the U-Net module ``module`` (dotted diffusers name, or
      ``#N`` for index N of ``bendbridge layers``) during steps ``steps`` (inclusive, None = all) —
      the "layer" of Broad et al. (2022) and of ComfyUI model bending;
    - ``text``: the text conditioning [B, T, D], optionally only the token positions of ``word``
      (``a|b|…``: of whichever of these words the prompt holds); ``at``: only the context read by
      the cross-attention layers under these module names (all of them when None);
    - ``unet``: the whole denoiser during steps ``steps``: adapters (``lora``) that change the
      weights of many of its layers at once.
    """

    kind: str
    step: int | None = None
    module: str | None = None
    steps: tuple[int, int] | None = None
    word: str | None = None
    at: tuple[str, ...] | None = None

    def in_steps(self, step: int) -> bool:
        """Whether a module target acts during denoising step ``step`` (its ``steps`` range, inclusive)."""
        return self.steps is None or self.steps[0] <= step <= self.steps[1]

    def __str__(self) -> str:
        if self.kind == "latent":
            return f"latent:step={self.step}"
        if self.kind == "text":
            return (
                "text" + (f":word={self.word}" if self.word else "") + (f":at={','.join(self.at)}" if self.at else "")
            )
        if self.kind == "unet":
            return "unet" + (f":steps={self.steps[0]}-{self.steps[1]}" if self.steps else "")
        return f"{self.module}" + (f":steps={self.steps[0]}-{self.steps[1]}" if self.steps else "")


@dataclass(frozen=True)
class Bend:
    """One operator applied at one target. ``params`` holds the base (plan) values; ``mix`` the
    base blend of bent and unbent (the per-frame parameter every bend has)."""

    id: str
    op: str
    target: Target
    params: dict[str, Any] = field(default_factory=dict)
    branch: str = "both"
    channels: tuple[int, ...] | None = None
    channel_fraction: float | None = None
    element_fraction: float | None = None
    region: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 as fractions
    seed: int = 0
    mix: float = 1.0

    @property
    def spec(self) -> OperatorSpec:
        return operator_spec(self.op)

    def base_value(self, name: str) -> Any:
        """The plan's value of per-frame parameter ``name`` (``mix`` included)."""
        return self.mix if name == "mix" else self.params[name]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "op": self.op}
        t = self.target
        d["target"] = t.kind if t.kind != "module" else t.module
        if t.kind == "latent":
            d["step"] = t.step
        if t.steps is not None:
            d["steps"] = f"{t.steps[0]}-{t.steps[1]}"
        if t.word:
            d["word"] = t.word
        if t.at:
            d["at"] = ",".join(t.at)
        if self.params:
            d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        if self.branch != operator_spec(self.op).branch:  # the operator's own default is left out
            d["branch"] = self.branch
        for k in ("channel_fraction", "element_fraction"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.channels is not None:
            d["channels"] = list(self.channels)
        if self.region is not None:
            d["region"] = list(self.region)
        if self.seed:
            d["seed"] = self.seed
        if self.mix != 1.0:
            d["mix"] = self.mix
        return d


def _int(v: Any, where: str, lo: int = 0, hi: int = 1 << 31) -> int:
    """An integer given as a number or as text (compact specs are text)."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise PlanError(where, f"expected an integer in [{lo}, {hi}], got {v!r}", code="type") from None
    return finite_number(v, where, lo, hi, integer=True, error=PlanError)


def _fraction(v: Any, where: str, lo_open: bool = False) -> float:
    """A fraction in [0, 1] ((0, 1] with ``lo_open``), given as a number or as text."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise PlanError(where, f"expected a number in [0, 1], got {v!r}", code="type") from None
    return finite_number(v, where, 0.0, 1.0, lo_open=lo_open, error=PlanError)


def _int_list(v: Any, where: str) -> tuple[int, ...]:
    """'0,1,5-7' or [0, 1] -> (0, 1, 5, 6, 7)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (_int(v, where),)
    if isinstance(v, str):
        out: list[int] = []
        for part in filter(None, v.replace(" ", "").split(",")):
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                a, b = int(m[1]), int(m[2])
                if b < a:
                    raise PlanError(where, f"range {part!r} runs backwards")
                out.extend(range(a, b + 1))
            else:
                out.append(_int(part, where))
        v = out
    if not isinstance(v, (list, tuple)) or not v:
        raise PlanError(where, f"expected a non-empty list of channel indices, got {v!r}")
    vals = tuple(_int(x, where) for x in v)
    if len(set(vals)) != len(vals):
        raise PlanError(where, "channel indices repeat")
    return vals


def _steps(v: Any, where: str) -> tuple[int, int] | None:
    if v is None or v == "all":
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        a, b = _int(v[0], where), _int(v[1], where)
    elif isinstance(v, str) and "-" in v:
        a_s, _, b_s = v.partition("-")
        a, b = _int(a_s, where), _int(b_s, where)
    else:
        a = b = _int(v, where)
    if b < a:
        raise PlanError(where, f"step range {a}-{b} runs backwards")
    return (a, b)


MODULE_NAME = r"[A-Za-z_]\w*(?:\.\w+)*"  # a dotted U-Net module name, e.g. up_blocks.1.attentions.0


def _at(opts: dict[str, Any], where: str) -> tuple[str, ...] | None:
    """The text target's ``at``: module names ("up_blocks.1,mid_block" or a list), or None."""
    v = opts.get("at")
    if v is None:
        return None
    names = [n.strip() for n in v.split(",")] if isinstance(v, str) else v
    if not isinstance(names, (list, tuple)) or not names:
        raise PlanError(f"{where}.at", f"expected module names, e.g. up_blocks.1, got {v!r}")
    for n in names:
        if not isinstance(n, str) or not re.fullmatch(MODULE_NAME, n):
            raise PlanError(f"{where}.at", f"{n!r} is not a dotted module name (e.g. up_blocks.1)")
    return tuple(names)


def _no_at(opts: dict[str, Any], where: str) -> None:
    if opts.get("at") is not None:
        raise PlanError(f"{where}.at", "'at' is for the text target (the cross-attentions that read it)")


def parse_target(value: Any, opts: dict[str, Any], where: str) -> Target:
    """Build a Target from ``value`` ('latent', 'text', a module name or '#N') and its options."""
    if not isinstance(value, str) or not value:
        raise PlanError(f"{where}.target", f"expected 'latent', 'text', a module name or '#index', got {value!r}")
    if value == "latent":
        if opts.get("steps") is not None or opts.get("word") is not None:
            raise PlanError(f"{where}.target", "a latent target takes 'step' (one step), not 'steps' or 'word'")
        _no_at(opts, where)
        return Target("latent", step=_int(opts.get("step", 0), f"{where}.step", 0, 100_000))
    if value == "text":
        if opts.get("step") is not None or opts.get("steps") is not None:
            raise PlanError(f"{where}.target", "the text target is not per step: it conditions every step")
        word = opts.get("word")
        if word is not None and (not isinstance(word, str) or not all(w.strip() for w in word.split("|"))):
            raise PlanError(f"{where}.word", f"expected a word from the prompt (or words a|b|…), got {word!r}")
        return Target("text", word="|".join(w.strip() for w in word.split("|")) if word else None, at=_at(opts, where))
    if opts.get("step") is not None:
        raise PlanError(f"{where}.step", "'step' is for latent targets; module targets take 'steps' (e.g. 0-3)")
    if opts.get("word") is not None:
        raise PlanError(f"{where}.word", "'word' is for the text target")
    _no_at(opts, where)
    if value == UNET:
        return Target(UNET, steps=_steps(opts.get("steps"), f"{where}.steps"))
    if not re.fullmatch(rf"#?\d+|{MODULE_NAME}", value):
        raise PlanError(f"{where}.target", f"{value!r} is not a dotted module name or '#index'")
    return Target("module", module=value, steps=_steps(opts.get("steps"), f"{where}.steps"))


def _operator(d: dict[str, Any], target: Target, where: str) -> OperatorSpec:
    if "op" not in d:
        raise PlanError(f"{where}.op", "missing; every bend names an operator")
    spec = operator_spec(d["op"], f"{where}.op")
    rank = {"text": 3, UNET: WHOLE_MODEL}.get(target.kind, 4)
    if rank not in spec.ranks:
        if WHOLE_MODEL in spec.ranks:
            advice = "it acts on the whole denoiser: target 'unet'"
        elif rank == WHOLE_MODEL:
            advice = "the unet target takes adapters (lora)"
        else:
            advice = "on text use point-wise operators"
        raise PlanError(
            f"{where}.op", f"{spec.name!r} ({spec.family}) does not apply to the {target.kind} target; {advice}"
        )
    return spec


def _params(spec: OperatorSpec, raw: Any, where: str) -> dict[str, Any]:
    """The operator's parameters from a plan's ``params`` table (``mix`` is read by the caller)."""
    if not isinstance(raw, dict):
        raise PlanError(f"{where}.params", "expected a table of parameter values")
    params: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "mix":
            continue
        if k not in spec.params:
            raise PlanError(
                f"{where}.params.{k}", f"operator {spec.name!r} has no parameter {k!r}{hint(k, spec.params)}"
            )
        params[k] = spec.params[k].check(v, f"{where}.params.{k}", PlanError)
    for k, p in spec.params.items():
        if k not in params:
            if p.default is None:
                raise PlanError(f"{where}.params.{k}", f"operator {spec.name!r} needs {k!r} ({p.describe_range()})")
            params[k] = p.default
    return params


def _bend_id(d: dict[str, Any], spec: OperatorSpec, seen: set[str], where: str) -> str:
    bid = d.get("id", spec.name)
    if not isinstance(bid, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", bid):
        raise PlanError(f"{where}.id", f"expected an identifier (letters, digits, _ and -), got {bid!r}")
    if "id" not in d:
        n = 2
        while bid in seen:
            bid, n = f"{spec.name}_{n}", n + 1
    elif bid in seen:
        raise PlanError(f"{where}.id", f"id {bid!r} is used by another bend; ids must be unique")
    seen.add(bid)
    return bid


def parse_region(r: Any, where: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` or four numbers → a region as fractions of the width and height."""
    if isinstance(r, str):
        r = r.split(",")
    if not isinstance(r, (list, tuple)) or len(r) != 4:
        raise PlanError(where, "expected four fractions x0,y0,x1,y1 in [0, 1]")
    x0, y0, x1, y1 = (_fraction(v, where) for v in r)
    if x1 <= x0 or y1 <= y0:
        raise PlanError(where, "x1 must exceed x0 and y1 must exceed y0")
    return (x0, y0, x1, y1)


def _subsets(d: dict[str, Any], target: Target, where: str) -> dict[str, Any]:
    """Channel, element and region subsets of a bend."""
    channels = _int_list(d["channels"], f"{where}.channels") if d.get("channels") is not None else None
    cf = (
        _fraction(d["channel_fraction"], f"{where}.channel_fraction", lo_open=True)
        if d.get("channel_fraction") is not None
        else None
    )
    ef = (
        _fraction(d["element_fraction"], f"{where}.element_fraction", lo_open=True)
        if d.get("element_fraction") is not None
        else None
    )
    if channels is not None and cf is not None:
        raise PlanError(f"{where}.channels", "give either 'channels' or 'channel_fraction', not both")
    if target.kind == "text" and (channels or cf or d.get("region") is not None):
        raise PlanError(
            f"{where}.target", "channel and region subsets apply to latent and module targets; text takes 'word'"
        )
    if target.kind == UNET and (channels or cf or ef or d.get("region") is not None):
        raise PlanError(
            f"{where}.target", "the unet target changes weights: it takes no channel, element or region subset"
        )
    region = parse_region(d["region"], f"{where}.region") if d.get("region") is not None else None
    return {"channels": channels, "channel_fraction": cf, "element_fraction": ef, "region": region}


def _bend_from_dict(d: Any, i: int, seen: set[str]) -> Bend:
    where = f"bend[{i}]"
    if not isinstance(d, dict):
        raise PlanError(where, f"expected a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_BEND_FIELDS))
    if unknown:
        raise PlanError(f"{where}.{unknown[0]}", f"unknown field{hint(unknown[0], _BEND_FIELDS, 'valid fields')}")
    target = parse_target(d.get("target"), d, where)
    spec = _operator(d, target, where)
    raw = d.get("params", {}) or {}
    params = _params(spec, raw, where)
    bid = _bend_id(d, spec, seen, where)
    branch = d.get("branch", spec.branch)
    if branch not in BRANCHES:
        raise PlanError(f"{where}.branch", f"{branch!r} is not valid; allowed: {', '.join(BRANCHES)}")
    seed = _int(d.get("seed", 0), f"{where}.seed", 0, 2**31 - 1)
    mix = MIX.check(raw.get("mix", d.get("mix", 1.0)), f"{where}.mix", PlanError)
    return Bend(bid, spec.name, target, params, branch, seed=seed, mix=mix, **_subsets(d, target, where))


@dataclass(frozen=True)
class BendPlan:
    """An ordered list of bends; bends on the same target apply in plan order."""

    bends: tuple[Bend, ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> BendPlan:
        if not isinstance(d, dict):
            raise PlanError("plan", "expected a table with a 'bend' list")
        extra = sorted(set(d) - {"bend"})
        if extra:
            raise PlanError(extra[0], f"unknown top-level field{hint(extra[0], ['bend'])}")
        items = d.get("bend", [])
        if not isinstance(items, list):
            raise PlanError("bend", "expected a list of bend tables ([[bend]] in TOML)")
        seen: set[str] = set()
        return cls(tuple(_bend_from_dict(b, i, seen) for i, b in enumerate(items)))

    def to_dict(self) -> dict[str, Any]:
        return {"bend": [b.to_dict() for b in self.bends]}

    @classmethod
    def load(cls, path: str | Path) -> BendPlan:
        """Read a plan from a .toml or .json file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise PlanError(str(p), "no such plan file") from None
        return cls.loads(text, "json" if p.suffix.lower() == ".json" else "toml", str(p))

    @classmethod
    def loads(cls, text: str, fmt: str = "toml", name: str = "plan") -> BendPlan:
        try:
            data = json.loads(text) if fmt == "json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise PlanError(name, f"not valid {fmt.upper()}: {e}") from None
        if isinstance(data, dict) and "bend" not in data and isinstance(data.get("plan"), dict):
            data = data["plan"]
        return cls.from_dict(data)

    def dumps(self, fmt: str = "toml") -> str:
        import tomli_w

        return json.dumps(self.to_dict(), indent=2) if fmt == "json" else tomli_w.dumps(self.to_dict())

    @classmethod
    def from_specs(cls, specs: list[str]) -> BendPlan:
        seen: set[str] = set()
        return cls(tuple(_bend_from_dict(parse_spec(s, i), i, seen) for i, s in enumerate(specs)))

    def then(self, other: BendPlan) -> BendPlan:
        """This plan's bends followed by ``other``'s (ids made unique again as in one file)."""
        return BendPlan.from_dict({"bend": [b.to_dict() for b in self.bends + other.bends]})

    def ids(self) -> list[str]:
        return [b.id for b in self.bends]

    def frame_param(
        self,
        bend_id: Any,
        name: Any,
        *,
        bend_field: str,
        name_field: str,
        floats_only: bool = True,
        error: type[BendbridgeError] = PlanError,
    ) -> tuple[Bend, ParamSpec]:
        """The bend ``bend_id`` and the spec of its per-frame parameter ``name`` (``mix`` included),
        or ``error`` naming ``bend_field`` / ``name_field`` with the valid choices."""
        bend = next((b for b in self.bends if b.id == bend_id), None)
        if bend is None:
            raise error(bend_field, f"no bend with id {bend_id!r}{hint(bend_id, self.ids(), 'bends')}")
        spec = bend.spec
        param = spec.frame_param(name) if isinstance(name, str) else None
        if param is None or (floats_only and param.kind != "float"):
            per = spec.frame_params(floats_only)
            raise error(
                name_field,
                f"{name!r} is not a per-frame parameter of {spec.name!r}{hint(name, per, 'per-frame parameters')}",
            )
        return bend, param

    def __len__(self) -> int:
        return len(self.bends)


def _value(s: str) -> Any:
    try:
        f = float(s)
        return int(f) if re.fullmatch(r"-?\d+", s) else f
    except ValueError:
        return s


def parse_spec(spec: str, i: int = 0) -> dict[str, Any]:
    """Compact spec -> the dict form of one bend (see the module docstring for the grammar)."""
    where = f"bend[{i}]"
    if spec.count("@") != 1:
        raise PlanError(
            where, f"{spec!r}: expected OP[:param=value…]@TARGET[:option=value…], e.g. 'multiply:factor=2@mid_block'"
        )
    left, right = spec.split("@")
    op, *pparts = left.split(":")
    tgt, *tparts = right.split(":")
    d: dict[str, Any] = {"op": op.strip(), "target": tgt.strip(), "params": {}}
    for part in pparts:
        k, eq, v = part.partition("=")
        if not eq:
            raise PlanError(f"{where}.params", f"{part!r} is not param=value")
        d["params"][k.strip()] = _value(v.strip())
    for part in tparts:
        k, eq, v = part.partition("=")
        if not eq:
            raise PlanError(where, f"{part!r} is not option=value")
        k = k.strip()
        d[k] = v.strip() if k in ("steps", "channels", "region", "word", "at", "branch", "id") else _value(v.strip())
    return d
