"""The one error for everything a user (or a peer) can get wrong, with its field path as data.

Every mistake — a config field, a command-line option, a file, a packet from the wire — raises a
:class:`BendbridgeError` (or a subclass that says which part of bendbridge found it). It carries
``field`` (where: ``bend[1].params.angle``, ``--end``, ``render.prompts``, a file name) and
``message`` (what is wrong and what is allowed) as separate data; ``str(error)`` joins them as
``"field: message"``. The command line prints that one line and exits with status 2; the render
server answers it as an ``error`` message and goes on serving.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["BendbridgeError", "PlanError", "hint"]


class BendbridgeError(ValueError):
    """A user's or a peer's mistake. ``code`` is machine-readable (``range``, ``type``, ``missing``, …)."""

    code = "invalid"

    def __init__(self, field: str | None, message: str, *, code: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        if code is not None:
            self.code = code


class PlanError(BendbridgeError):
    """A plan, mapping or render setting is wrong; ``field`` is its path, e.g. ``bend[1].params.angle``."""

    code = "plan"


def hint(name: object, valid: Iterable[str], label: str | None = "valid") -> str:
    """``"; did you mean a? valid: a, b, c"``: the nearest names to ``name``, then every valid one.

    Reads properly when nothing is near (``"; valid: a, b"``) and when nothing is valid
    (``"; valid: none"``). Append it to a message such as ``f"unknown operator {name!r}"``.
    With ``label`` None only the nearest names are given (``"; did you mean a?"`` or ``""``), for
    lists too long to print.
    """
    names = [str(v) for v in valid]
    near = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    said = f"; did you mean {', '.join(near)}?" if near else ""
    if label is None:
        return said
    return f"{said or ';'} {label}: {', '.join(names) or 'none'}"
