"""Operator specifications and the name → operator registry.

An operator is a pure function ``fn(x, **params) -> y`` on a batch ``x`` of shape ``[B, ...]``
(``[B, C, H, W]`` for activations and latents, ``[B, T, D]`` for text conditioning). Every
*per-sample* parameter arrives as a float tensor of shape ``[B]`` (or ``[B, *shape]`` for
matrix-valued parameters), so a batch of B frames may carry B different values. *Static*
parameters (a channel plane, a padding mode, a seed) are plain Python values fixed by the plan.
Operators never see the module they bend.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "ParamSpec",
    "OperatorSpec",
    "OPERATORS",
    "register",
    "get_operator",
    "operator_names",
    "suggest",
    "OperatorError",
]


class OperatorError(ValueError):
    """An unknown operator, or a parameter that is missing, unknown, non-finite or out of range."""


@dataclass(frozen=True)
class ParamSpec:
    """One operator parameter.

    ``kind`` is ``"float"`` (per sample, may change every frame), ``"matrix"`` (per sample, a
    square matrix matching the channel count), ``"int"``, ``"ints"``, ``"choice"`` (static, fixed
    in the plan). ``identity`` is the value at which the operator returns its input unchanged, or
    None where no such value exists.
    """

    kind: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    identity: Any = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    @property
    def per_sample(self) -> bool:
        return self.kind in ("float", "matrix")

    def describe_range(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"[{self.lo:g}, {self.hi:g}]"
        return self.kind

    def check(self, value: Any, where: str) -> Any:
        """Validate and normalise a value given in a plan; raise OperatorError naming ``where``."""
        if self.kind == "choice":
            if value not in self.choices:
                raise OperatorError(f"{where}: {value!r} is not valid; allowed: {', '.join(self.choices)}")
            return value
        if self.kind == "ints":
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            try:
                vals = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                raise OperatorError(f"{where}: expected a list of integers, got {value!r}") from None
            if self.default is not None and len(vals) != len(self.default):
                raise OperatorError(f"{where}: expected {len(self.default)} integers, got {len(vals)}")
            for v in vals:
                self._check_range(v, where)
            return vals
        if self.kind == "matrix":
            try:
                t = torch.as_tensor(value, dtype=torch.float64)
            except (TypeError, ValueError):
                raise OperatorError(f"{where}: expected a square matrix (list of rows), got {value!r}") from None
            if t.ndim != 2 or t.shape[0] != t.shape[1]:
                raise OperatorError(f"{where}: expected a square matrix, got shape {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise OperatorError(f"{where}: matrix entries must be finite")
            if self.lo is not None and (t.min() < self.lo or t.max() > self.hi):
                raise OperatorError(f"{where}: matrix entries must lie in {self.describe_range()}")
            return [[float(v) for v in row] for row in t.tolist()]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OperatorError(f"{where}: expected a number in {self.describe_range()}, got {value!r}")
        if self.kind == "int":
            if float(value) != int(value):
                raise OperatorError(f"{where}: expected an integer in {self.describe_range()}, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        self._check_range(value, where)
        return value

    def _check_range(self, v: float, where: str) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise OperatorError(f"{where}: {v} is not finite; allowed range {self.describe_range()}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise OperatorError(f"{where}: {v:g} is out of range; allowed range {self.describe_range()}")


@dataclass(frozen=True)
class OperatorSpec:
    """A registered operator.

    ``ranks`` lists the tensor ranks it accepts (4 = ``[B, C, H, W]``, 3 = ``[B, T, D]``);
    ``channel_op`` marks operators that mix the channel dimension, which act on the bend's
    channel subset as a whole rather than through an element mask.
    """

    name: str
    family: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, ParamSpec] = field(default_factory=dict)
    ranks: tuple[int, ...] = (3, 4)
    channel_op: bool = False
    doc: str = ""

    def frame_params(self, with_mix: bool = True, floats_only: bool = False) -> list[str]:
        """Names of the parameters that may change every frame (plus the universal ``mix``)."""
        names = [k for k, p in self.params.items() if p.per_sample and (p.kind == "float" or not floats_only)]
        return names + ["mix"] if with_mix else names

    def identity_values(self) -> dict[str, Any] | None:
        """Values that make the operator an identity whatever its other parameters, or None.

        E.g. ``gaussian`` is an identity when ``value == 0`` for any sigma and centre.
        """
        ident = {k: p.identity for k, p in self.params.items() if p.per_sample and p.identity is not None}
        return ident or None


OPERATORS: dict[str, OperatorSpec] = {}


def register(spec: OperatorSpec) -> OperatorSpec:
    if spec.name in OPERATORS:
        raise ValueError(f"operator {spec.name!r} registered twice")
    OPERATORS[spec.name] = spec
    return spec


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """'; did you mean a, b?' for the nearest names, or ''."""
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else ""


def operator_names() -> list[str]:
    return sorted(OPERATORS)


def get_operator(name: str) -> OperatorSpec:
    try:
        return OPERATORS[name]
    except KeyError:
        raise OperatorError(
            f"unknown operator {name!r}{suggest(name, operator_names())} valid operators: {', '.join(operator_names())}"
        ) from None
