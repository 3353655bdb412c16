"""Implementations of the operator catalogue, reached by name.

The catalogue (:mod:`bendbridge.protocol.operators`, no torch) says which operators exist and
what parameters they take; this module holds one pure function per entry,
``fn(x, **params) -> y`` on a batch ``x`` of shape ``[B, ...]`` (``[B, C, H, W]`` for activations
and latents, ``[B, T, D]`` for text conditioning). Every *per-frame* parameter arrives as a float
tensor of shape ``[B]`` (``[B, C, C]`` for a matrix), so a batch of B frames may carry B
different values; *static* parameters (a channel plane, a padding mode, a seed) are plain Python
values fixed by the plan. Operators never see the module they bend.

A *file* parameter (a steering vector, a sparse autoencoder) is read once, when the render server
binds the plan, by the loader registered for it with :func:`loads`; the loader checks that the
file was made for this model and module and returns a :class:`Resource`, whose value for the
current denoising step (:meth:`Resource.at_step`) is what the operator receives.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bendbridge.protocol.operators import CATALOGUE, LOADED_KINDS, OperatorSpec, operator_spec
from bendbridge.server.steering.files import FileContext, Resource

__all__ = [
    "Operator",
    "implements",
    "get_operator",
    "check_implementations",
    "Resource",
    "FileContext",
    "loads",
    "load_file_param",
]

OperatorFn = Callable[..., torch.Tensor]
_IMPLEMENTATIONS: dict[str, OperatorFn] = {}


FileLoader = Callable[[str, FileContext], Resource]
_LOADERS: dict[tuple[str, str], FileLoader] = {}


def loads(op: str, param: str) -> Callable[[FileLoader], FileLoader]:
    """Register the decorated function as the loader of file parameter ``param`` of operator ``op``."""

    def register(fn: FileLoader) -> FileLoader:
        _LOADERS[(op, param)] = fn
        return fn

    return register


def load_file_param(op: str, param: str, value: str, ctx: FileContext) -> Resource:
    """The loaded resource of file parameter ``op.param`` (raises a PlanError naming ``ctx.where``)."""
    return _LOADERS[(op, param)](value, ctx)


@dataclass(frozen=True)
class Operator:
    """A catalogue entry and the function that implements it."""

    spec: OperatorSpec
    fn: OperatorFn

    @property
    def name(self) -> str:
        return self.spec.name


def implements(name: str) -> Callable[[OperatorFn], OperatorFn]:
    """Register the decorated function as the implementation of catalogue entry ``name``."""

    def register(fn: OperatorFn) -> OperatorFn:
        if name in _IMPLEMENTATIONS:
            raise RuntimeError(f"operator {name!r} is implemented twice")
        _IMPLEMENTATIONS[name] = fn
        return fn

    return register


def check_implementations() -> None:
    """Fail loudly unless every catalogue entry has exactly one implementation whose keyword
    parameters are the entry's parameters."""
    missing = sorted(set(CATALOGUE) - set(_IMPLEMENTATIONS))
    extra = sorted(set(_IMPLEMENTATIONS) - set(CATALOGUE))
    if missing or extra:
        raise RuntimeError(
            f"operator implementations do not match the catalogue: missing {missing}, not in the catalogue {extra}"
        )
    no_loader = [(n, k) for n, spec in CATALOGUE.items() for k, p in spec.params.items() if p.kind in LOADED_KINDS]
    no_loader = [f"{n}.{k}" for n, k in no_loader if (n, k) not in _LOADERS]
    if no_loader:
        raise RuntimeError(f"file parameters without a loader: {no_loader}")
    for name, fn in _IMPLEMENTATIONS.items():
        sig = inspect.signature(fn)
        takes = [p for p in list(sig.parameters)[1:] if sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]
        if CATALOGUE[name].anchored:
            takes = [p for p in takes if p != "token_mask"]  # the engine's, not the plan's
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        if not var_kw and set(takes) != set(CATALOGUE[name].params):
            raise RuntimeError(
                f"operator {name!r} takes {takes}, the catalogue gives it {list(CATALOGUE[name].params)}"
            )


def get_operator(name: str, where: str | None = None) -> Operator:
    """The implemented operator ``name``; an unknown name raises OperatorError with the nearest names."""
    return Operator(operator_spec(name, where), _IMPLEMENTATIONS[name])
