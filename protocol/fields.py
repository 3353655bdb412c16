"""Field specifications and validation shared by every message (no torch, no I/O).

Each message field has a :class:`Field`: its kind, whether it may be absent or null, and its
allowed range or size. Validation runs when a message is built and again when it is decoded, and
every error names the field and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BendbridgeError
from .values import bounds_text, finite_number

__all__ = [
    "Field",
    "ProtocolError",
    "VersionError",
    "validate_value",
    "MAX_PARAM_BENDS",
    "MAX_PARAMS_PER_BEND",
    "ARRAY_DTYPES",
]

MAX_PARAM_BENDS = 256
MAX_PARAMS_PER_BEND = 64
MAX_MATRIX = 64
ARRAY_DTYPES = ("uint8", "int16", "int32", "int64", "float16", "float32", "float64")
_INT64 = (-(2**63), 2**63 - 1)


class ProtocolError(BendbridgeError):
    """A message that breaks the protocol. ``code`` is machine-readable, ``field`` the path."""


class VersionError(ProtocolError):
    """The peer speaks an incompatible major protocol version."""

    code = "version"


@dataclass(frozen=True)
class Field:
    """``kind``: int, float, bool, str, bytes, array, list_str, list_int, list_float, params,
    features, dict_float, json. ``lo``/``hi`` bound numbers; ``max_len`` strings, bytes, lists."""

    kind: str
    required: bool = True
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    max_len: int = 4096
    default: Any = None

    def describe(self) -> str:
        if self.kind in ("int", "float") and self.lo is not None and self.hi is not None:
            return f"{self.kind} in {bounds_text(self.lo, self.hi)}"
        if self.kind in ("str", "bytes") or self.kind.startswith("list"):
            return f"{self.kind} of at most {self.max_len}"
        return self.kind


def _number(v: Any, f: Field, where: str, integer: bool) -> int | float:
    lo, hi = (f.lo, f.hi) if f.lo is not None else (_INT64 if integer else (None, None))
    if integer:
        if type(v) is int and (lo is None or lo <= v) and (hi is None or v <= hi):  # the common case, inline
            return v
        if isinstance(v, bool) or not isinstance(v, int):  # the wire is typed: 3.0 is not an int
            raise ProtocolError(where, f"expected {f.describe()}, got {type(v).__name__} {v!r:.60}", code="type")
    elif type(v) is float and math.isfinite(v) and (lo is None or lo <= v) and (hi is None or v <= hi):
        return v
    return finite_number(v, where, lo, hi, integer=integer, error=ProtocolError)


def _finite_float(v: Any, where: str) -> float:
    if type(v) is float and math.isfinite(v):  # the common case, checked inline
        return v
    return finite_number(v, where, error=ProtocolError)


def _params(v: Any, where: str) -> dict[str, dict[str, Any]]:
    """{bend id: {param: number | square matrix}}, all finite."""
    if not isinstance(v, dict):
        raise ProtocolError(where, "expected a map of bend id -> {param: value}", code="type")
    if len(v) > MAX_PARAM_BENDS:
        raise ProtocolError(where, f"{len(v)} bends; at most {MAX_PARAM_BENDS}", code="size")
    out: dict[str, dict[str, Any]] = {}
    for bid, vals in v.items():
        w = f"{where}.{bid}"
        if not isinstance(bid, str) or not 0 < len(bid) <= 64:
            raise ProtocolError(where, "bend ids are strings of 1-64 characters", code="type")
        if not isinstance(vals, dict) or len(vals) > MAX_PARAMS_PER_BEND:
            raise ProtocolError(w, f"expected a map of at most {MAX_PARAMS_PER_BEND} param -> value", code="type")
        inner: dict[str, Any] = {}
        for k, x in vals.items():
            if not isinstance(k, str) or not 0 < len(k) <= 64:
                raise ProtocolError(w, "parameter names are strings of 1-64 characters", code="type")
            if isinstance(x, list):
                if not 0 < len(x) <= MAX_MATRIX or not all(isinstance(r, list) and len(r) == len(x) for r in x):
                    raise ProtocolError(
                        f"{w}.{k}", f"a matrix value must be a square list of rows (at most {MAX_MATRIX})", code="type"
                    )
                inner[k] = [[_finite_float(e, f"{w}.{k}") for e in r] for r in x]
            else:
                inner[k] = _finite_float(x, f"{w}.{k}")
        out[bid] = inner
    return out


def _array(v: Any, f: Field, where: str) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        raise ProtocolError(where, "expected an array", code="type")
    if v.dtype.name not in ARRAY_DTYPES:
        raise ProtocolError(where, f"dtype {v.dtype.name} not allowed; allowed: {', '.join(ARRAY_DTYPES)}", code="type")
    if v.size > f.max_len:
        raise ProtocolError(where, f"{v.size} elements; at most {f.max_len}", code="size")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise ProtocolError(where, "array holds NaN or inf", code="range")
    return v


_ITEMS: dict[Field, Field] = {}  # list field -> the spec of its items (built once)


def validate_value(v: Any, f: Field, where: str) -> Any:
    """Check (and normalise) one field value; raises ProtocolError naming ``where``."""
    if v is None:
        if f.nullable or not f.required:
            return None
        raise ProtocolError(where, f"missing; expected {f.describe()}", code="missing")
    k = f.kind
    if k == "int":
        return _number(v, f, where, True)
    if k == "float":
        return _number(v, f, where, False)
    if k == "bool":
        if not isinstance(v, bool):
            raise ProtocolError(where, f"expected bool, got {type(v).__name__}", code="type")
        return v
    if k in ("str", "bytes"):
        if not isinstance(v, str if k == "str" else (bytes, bytearray)):
            raise ProtocolError(where, f"expected {k}, got {type(v).__name__}", code="type")
        if len(v) > f.max_len:
            raise ProtocolError(where, f"{len(v)} long; at most {f.max_len}", code="size")
        return bytes(v) if k == "bytes" else v
    if k.startswith("list_"):
        if not isinstance(v, (list, tuple)):
            raise ProtocolError(where, f"expected a list, got {type(v).__name__}", code="type")
        if len(v) > f.max_len:
            raise ProtocolError(where, f"{len(v)} items; at most {f.max_len}", code="size")
        item = _ITEMS.get(f)
        if item is None:
            item = _ITEMS[f] = Field(k[5:], lo=f.lo, hi=f.hi, max_len=4096)
        return tuple(validate_value(x, item, f"{where}[{i}]") for i, x in enumerate(v))
    if k == "params":
        return _params(v, where)
    if k in ("features", "dict_float"):
        if not isinstance(v, dict) or len(v) > f.max_len:
            raise ProtocolError(where, f"expected a map of at most {f.max_len} name -> number", code="type")
        out = {}
        for name, x in v.items():
            if not isinstance(name, str) or not 0 < len(name) <= 64:
                raise ProtocolError(where, "names are strings of 1-64 characters", code="type")
            out[name] = _finite_float(x, f"{where}.{name}")
        return out
    if k == "array":
        return _array(v, f, where)
    if k == "json":  # plain nested data: maps with string keys, lists, numbers, strings, bools
        _check_json(v, where, 0)
        return v
    raise AssertionError(f"unknown field kind {k}")


def _check_json(v: Any, where: str, depth: int) -> None:
    if depth > 16:
        raise ProtocolError(where, "nested deeper than 16 levels", code="size")
    if isinstance(v, dict):
        for key, x in v.items():
            if not isinstance(key, str):
                raise ProtocolError(where, "map keys must be strings", code="type")
            _check_json(x, f"{where}.{key}", depth + 1)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_json(x, f"{where}[{i}]", depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ProtocolError(where, f"{v} is not finite", code="range")
    elif v is not None and not isinstance(v, (str, int, float, bool)):
        raise ProtocolError(where, f"unsupported value of type {type(v).__name__}", code="type")
