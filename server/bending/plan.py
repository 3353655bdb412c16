"""Bend plans: which operator is applied where, with which parameters, channels, steps and branch.

A plan is a list of :class:`Bend`. It loads from TOML or JSON (``[[bend]]`` tables), from compact
command-line specs, validates with errors that name the field and list the valid choices, and
serialises back. Checks that need a model (does the layer exist, how many channels does it have)
happen when the plan is bound to a model (:mod:`server.bending.binding`).

Compact spec grammar (``bendbridge render --bend SPEC``)::

    SPEC    := OP (":" PARAM "=" VALUE)* "@" TARGET (":" OPTION "=" VALUE)*
    TARGET  := "latent" | "text" | dotted.module.name | "#"INDEX
    OPTION  := step | steps | word | branch | channels | channel_fraction | element_fraction
             | region | seed | mix | id
    VALUE   := number | list "a,b,c" | range "a-b" | word

    rotate_plane:plane=0,1:angle=1.2@latent:step=0
    dilate:size=3@mid_block:steps=0-2:branch=cond
    weight:delta=1.5@text:word=red
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from bendbridge.server.operators import OperatorError, get_operator, suggest

__all__ = ["Target", "Bend", "BendPlan", "PlanError", "parse_target", "parse_spec", "BRANCHES", "MIX_RANGE"]

BRANCHES = ("both", "cond", "uncond")
MIX_RANGE = (0.0, 1.0)
_TARGET_KINDS = ("latent", "module", "text")
_BEND_FIELDS = ("id", "op", "target", "params", "step", "steps", "word", "branch", "channels",
                "channel_fraction", "element_fraction", "region", "seed", "mix")


class PlanError(ValueError):
    """A plan field is wrong. ``field`` is its path, e.g. ``bend[1].params.angle``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where a bend applies.

    - ``latent``: the latent x_t before denoising step ``step`` (``step`` = number of steps means
      the final latent before VAE decoding) — the DAFx/JAES papers' "layer";
    - ``module``: the output activation of the U-Net module ``module`` (dotted diffusers name, or
      ``#N`` for index N of ``bendbridge layers``) during steps ``steps`` (inclusive, None = all) —
      Broad's and ComfyUI's "layer";
    - ``text``: the text conditioning [B, T, D], optionally only the token positions of ``word``.
    """

    kind: str
    step: int | None = None
    module: str | None = None
    steps: tuple[int, int] | None = None
    word: str | None = None

    def in_steps(self, step: int) -> bool:
        """Whether a module target acts during denoising step ``step`` (its ``steps`` range, inclusive)."""
        return self.steps is None or self.steps[0] <= step <= self.steps[1]

    def __str__(self) -> str:
        if self.kind == "latent":
            return f"latent:step={self.step}"
        if self.kind == "text":
            return "text" + (f":word={self.word}" if self.word else "")
        return f"{self.module}" + (f":steps={self.steps[0]}-{self.steps[1]}" if self.steps else "")


@dataclass(frozen=True)
class Bend:
    """One operator applied at one target. ``params`` holds the base (plan) values."""

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
        if self.params:
            d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}
        if self.branch != "both":
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
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise PlanError(where, f"expected an integer in [{lo}, {hi}], got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise PlanError(where, f"expected an integer in [{lo}, {hi}], got {v!r}") from None
    if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
        raise PlanError(where, f"expected an integer in [{lo}, {hi}], got {v!r}")
    return int(f)


def _float(v: Any, where: str, lo: float, hi: float, open_lo: bool = False) -> float:
    if isinstance(v, bool):
        raise PlanError(where, f"expected a number in [{lo}, {hi}], got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise PlanError(where, f"expected a number in [{lo}, {hi}], got {v!r}") from None
    if not math.isfinite(f) or f < lo or f > hi or (open_lo and f == lo):
        rng = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        raise PlanError(where, f"{v!r} is out of range; allowed {rng}")
    return f


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


def parse_target(value: Any, opts: dict[str, Any], where: str) -> Target:
    """Build a Target from ``value`` ('latent', 'text', a module name or '#N') and its options."""
    if not isinstance(value, str) or not value:
        raise PlanError(f"{where}.target", f"expected 'latent', 'text', a module name or '#index', got {value!r}")
    if value == "latent":
        if opts.get("steps") is not None or opts.get("word") is not None:
            raise PlanError(f"{where}.target", "a latent target takes 'step' (one step), not 'steps' or 'word'")
        return Target("latent", step=_int(opts.get("step", 0), f"{where}.step", 0, 100_000))
    if value == "text":
        if opts.get("step") is not None or opts.get("steps") is not None:
            raise PlanError(f"{where}.target", "the text target is not per step: it conditions every step")
        word = opts.get("word")
        if word is not None and (not isinstance(word, str) or not word.strip()):
            raise PlanError(f"{where}.word", f"expected a word from the prompt, got {word!r}")
        return Target("text", word=word.strip() if word else None)
    if opts.get("step") is not None:
        raise PlanError(f"{where}.step", "'step' is for latent targets; module targets take 'steps' (e.g. 0-3)")
    if opts.get("word") is not None:
        raise PlanError(f"{where}.word", "'word' is for the text target")
    if not re.fullmatch(r"#?\d+|[A-Za-z_][\w]*(\.[\w]+)*", value):
        raise PlanError(f"{where}.target", f"{value!r} is not a dotted module name or '#index'")
    return Target("module", module=value, steps=_steps(opts.get("steps"), f"{where}.steps"))


def _bend_from_dict(d: Any, i: int, seen: set[str]) -> Bend:
    where = f"bend[{i}]"
    if not isinstance(d, dict):
        raise PlanError(where, f"expected a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_BEND_FIELDS))
    if unknown:
        raise PlanError(f"{where}.{unknown[0]}", f"unknown field{suggest(unknown[0], list(_BEND_FIELDS))} valid fields: {', '.join(_BEND_FIELDS)}")
    if "op" not in d:
        raise PlanError(f"{where}.op", "missing; every bend names an operator")
    try:
        spec = get_operator(d["op"]) if isinstance(d["op"], str) else get_operator(repr(d["op"]))
    except OperatorError as e:
        raise PlanError(f"{where}.op", str(e)) from None
    target = parse_target(d.get("target"), d, where)
    raw = d.get("params", {}) or {}
    if not isinstance(raw, dict):
        raise PlanError(f"{where}.params", "expected a table of parameter values")
    params: dict[str, Any] = {}
    for k, v in raw.items():
        if k == "mix":
            continue
        if k not in spec.params:
            valid = ", ".join(spec.params) or "none"
            raise PlanError(f"{where}.params.{k}", f"operator {spec.name!r} has no parameter {k!r}{suggest(k, list(spec.params))} valid: {valid}")
        try:
            params[k] = spec.params[k].check(v, f"{where}.params.{k}")
        except OperatorError as e:
            raise PlanError(f"{where}.params.{k}", str(e).split(": ", 1)[-1]) from None
    for k, p in spec.params.items():
        if k not in params:
            if p.default is None:
                raise PlanError(f"{where}.params.{k}", f"operator {spec.name!r} needs {k!r} ({p.describe_range()})")
            params[k] = p.default
    rank = 3 if target.kind == "text" else 4
    if rank not in spec.ranks:
        raise PlanError(f"{where}.op", f"{spec.name!r} ({spec.family}) does not apply to the {target.kind} target; on text use point-wise operators")
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
    branch = d.get("branch", "both")
    if branch not in BRANCHES:
        raise PlanError(f"{where}.branch", f"{branch!r} is not valid; allowed: {', '.join(BRANCHES)}")
    channels = _int_list(d["channels"], f"{where}.channels") if d.get("channels") is not None else None
    cf = _float(d["channel_fraction"], f"{where}.channel_fraction", 0.0, 1.0, True) if d.get("channel_fraction") is not None else None
    ef = _float(d["element_fraction"], f"{where}.element_fraction", 0.0, 1.0, True) if d.get("element_fraction") is not None else None
    if channels is not None and cf is not None:
        raise PlanError(f"{where}.channels", "give either 'channels' or 'channel_fraction', not both")
    if target.kind == "text" and (channels or cf or d.get("region") is not None):
        raise PlanError(f"{where}.target", "channel and region subsets apply to latent and module targets; text takes 'word'")
    region = None
    if d.get("region") is not None:
        r = d["region"]
        if isinstance(r, str):
            r = r.split(",")
        if not isinstance(r, (list, tuple)) or len(r) != 4:
            raise PlanError(f"{where}.region", "expected four fractions x0,y0,x1,y1 in [0, 1]")
        region = tuple(_float(v, f"{where}.region", 0.0, 1.0) for v in r)
        if region[2] <= region[0] or region[3] <= region[1]:
            raise PlanError(f"{where}.region", "x1 must exceed x0 and y1 must exceed y0")
    seed = _int(d.get("seed", 0), f"{where}.seed", 0, 2**31 - 1)
    mix = _float(raw.get("mix", d.get("mix", 1.0)), f"{where}.mix", *MIX_RANGE)
    return Bend(bid, spec.name, target, params, branch, channels, cf, ef, region, seed, mix)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BendPlan:
    """An ordered list of bends; bends on the same target apply in plan order."""

    bends: tuple[Bend, ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> "BendPlan":
        if not isinstance(d, dict):
            raise PlanError("plan", "expected a table with a 'bend' list")
        extra = sorted(set(d) - {"bend"})
        if extra:
            raise PlanError(extra[0], f"unknown top-level field{suggest(extra[0], ['bend'])} valid: bend")
        items = d.get("bend", [])
        if not isinstance(items, list):
            raise PlanError("bend", "expected a list of bend tables ([[bend]] in TOML)")
        seen: set[str] = set()
        return cls(tuple(_bend_from_dict(b, i, seen) for i, b in enumerate(items)))

    def to_dict(self) -> dict[str, Any]:
        return {"bend": [b.to_dict() for b in self.bends]}

    @classmethod
    def load(cls, path: str | Path) -> "BendPlan":
        """Read a plan from a .toml or .json file."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PlanError(str(p), "no such plan file") from None
        return cls.loads(text, "json" if p.suffix.lower() == ".json" else "toml", str(p))

    @classmethod
    def loads(cls, text: str, fmt: str = "toml", name: str = "plan") -> "BendPlan":
        try:
            data = json.loads(text) if fmt == "json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise PlanError(name, f"not valid {fmt.upper()}: {e}") from None
        if "bend" not in data and isinstance(data.get("plan"), dict):
            data = data["plan"]
        return cls.from_dict(data)

    def dumps(self, fmt: str = "toml") -> str:
        return json.dumps(self.to_dict(), indent=2) if fmt == "json" else tomli_w.dumps(self.to_dict())

    @classmethod
    def from_specs(cls, specs: list[str]) -> "BendPlan":
        seen: set[str] = set()
        return cls(tuple(_bend_from_dict(parse_spec(s, i), i, seen) for i, s in enumerate(specs)))

    def ids(self) -> list[str]:
        return [b.id for b in self.bends]

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
        raise PlanError(where, f"{spec!r}: expected OP[:param=value…]@TARGET[:option=value…], e.g. 'multiply:factor=2@mid_block'")
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
        if k in ("steps", "channels", "region", "word", "branch", "id"):
            d[k] = v.strip()
        else:
            d[k] = _value(v.strip())
    return d
