"""One check for "a finite number in a range", used by the wire, plans, mappings and the command line."""

from __future__ import annotations

import math
from typing import Any

from .errors import BendbridgeError

__all__ = ["bounds_text", "finite_number"]


def _show(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def bounds_text(lo: float | None, hi: float | None, *, lo_open: bool = False) -> str:
    """``"[-10, 10]"``, ``"(0, 1]"``, ``"≥ 0"``, ``"≤ 5"`` or ``"any"`` (ints exact, floats to 6 digits)."""
    if lo is not None and hi is not None:
        return f"{'(' if lo_open else '['}{_show(lo)}, {_show(hi)}]"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {_show(lo)}"
    return f"≤ {_show(hi)}" if hi is not None else "any"


def finite_number(
    value: Any,
    where: str | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    lo_open: bool = False,
    error: type[BendbridgeError] = BendbridgeError,
) -> Any:
    """``value`` as a finite float (an int when ``integer``) in [lo, hi] ((lo, hi] with ``lo_open``).

    Booleans and strings are not numbers. An integral float is accepted where an int is expected
    (TOML and msgpack may write 3 as 3.0) and returned as an int. Anything else raises ``error``
    naming ``where`` and the allowed range, with code ``type`` or ``range``.
    """
    # messages are built only for a value that fails: this runs for every number of every packet
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(where, f"expected {_allowed(lo, hi, integer, lo_open)}, got {value!r:.60}", code="type")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(where, f"{value} is not finite; allowed {_allowed(lo, hi, integer, lo_open)}", code="range")
    if integer and value != int(value):
        raise error(where, f"expected {_allowed(lo, hi, integer, lo_open)}, got {value!r}", code="type")
    number = int(value) if integer else float(value)
    if (lo is not None and (number < lo or (lo_open and number == lo))) or (hi is not None and number > hi):
        raise error(where, f"{value!r} is out of range; allowed {bounds_text(lo, hi, lo_open=lo_open)}", code="range")
    return number


def _allowed(lo: float | None, hi: float | None, integer: bool, lo_open: bool) -> str:
    """``"an integer in [0, 10]"``, ``"a number ≥ 0"`` or ``"a number"``, for error messages."""
    kind = "an integer" if integer else "a number"
    bounds = bounds_text(lo, hi, lo_open=lo_open)
    if lo is not None and hi is not None:
        return f"{kind} in {bounds}"
    return kind if bounds == "any" else f"{kind} {bounds}"
