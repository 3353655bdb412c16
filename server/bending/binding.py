"""Binding a plan to a model: resolve layers, channel subsets and step ranges, with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.errors import hint
from bendbridge.protocol.operators import LOADED_KINDS, OperatorSpec
from bendbridge.protocol.plan import UNET, Bend, BendPlan, PlanError
from bendbridge.server.operators import OperatorFn, get_operator
from bendbridge.server.operators.spec import FileContext, load_file_param

from .layers import LayerInfo

__all__ = ["BoundBend", "ModelFacts", "bind_plan", "resolve_module"]


@dataclass(frozen=True)
class BoundBend:
    """A bend resolved against a model.

    ``spec`` and ``fn`` are its operator's catalogue entry and implementation, ``module`` the
    dotted name (module targets), ``channels`` the resolved channel subset (or None for all),
    ``width`` the channel count the operator sees, ``rank`` the tensor rank, ``static`` the
    values of its static parameters (file parameters loaded: see ``operators.spec.Resource``),
    ``reads`` the cross-attention layers whose context a text bend with ``at`` changes (else ()).
    """

    index: int
    bend: Bend
    spec: OperatorSpec
    fn: OperatorFn
    module: str | None
    channels: tuple[int, ...] | None
    width: int
    rank: int
    static: dict[str, Any] = field(default_factory=dict)
    reads: tuple[str, ...] = ()

    def static_at(self, step: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """The static parameters for denoising step ``step``: file resources resolved to their value."""
        return {k: v.at_step(step, device, dtype) if hasattr(v, "at_step") else v for k, v in self.static.items()}


@dataclass
class ModelFacts:
    """What file parameters are checked against: the model's name, its U-Net (for the fingerprint,
    computed only when a file is bound) and the folders searched for bare file names."""

    name: str = "in-memory"
    unet: torch.nn.Module | None = None
    search: tuple[Path, ...] = ()
    embed: Callable[[str], torch.Tensor] | None = None  # prompt → the text encoder's output [T, D]

    @cached_property
    def identity(self) -> str:
        """The U-Net's fingerprint (``steering.files.unet_identity``), or "" without a U-Net."""
        from bendbridge.server.steering.files import unet_identity

        return unet_identity(self.unet) if self.unet is not None else ""


def resolve_module(name: str, layers: list[LayerInfo], where: str) -> LayerInfo:
    """The layer named ``name`` (a dotted module name or ``#N``); else a PlanError naming ``where``."""
    if name.lstrip("#").isdigit():
        i = int(name.lstrip("#"))
        if not 0 <= i < len(layers):
            raise PlanError(
                where,
                f"layer index {i} out of range; this model has layers #0-#{len(layers) - 1} (see 'bendbridge layers')",
            )
        return layers[i]
    for info in layers:
        if info.name == name:
            return info
    near = hint(name, [info.name for info in layers], None)
    raise PlanError(
        where, f"unknown layer {name!r}{near or ';'} run 'bendbridge layers' for the {len(layers)} bendable layers"
    )


def _check_channel_op(spec: OperatorSpec, params: dict, width: int, where: str) -> None:
    if spec.name == "rotate_plane":
        i, j = params["plane"]
        if not (0 <= i < width and 0 <= j < width and i != j):
            raise PlanError(
                f"{where}.params.plane",
                f"({i}, {j}) is not a plane of {width} channels: two different indices in [0, {width - 1}]",
            )
    elif spec.name == "rotate_r6" and width != 4:
        raise PlanError(
            f"{where}.channels",
            f"rotate_r6 acts on exactly 4 channels, the target gives {width}; select 4 with 'channels'",
        )
    elif spec.name == "hadamard" and width & (width - 1):
        raise PlanError(
            f"{where}.channels",
            f"hadamard needs a power-of-two channel count, the target gives {width}; select channels",
        )
    elif spec.name == "reflect" and not 0 <= params["channel"] < width:
        raise PlanError(f"{where}.params.channel", f"{params['channel']} out of range [0, {width - 1}]")
    elif spec.name == "matrix" and len(params["m"]) != width:
        raise PlanError(
            f"{where}.params.m", f"matrix is {len(params['m'])}×{len(params['m'])}, the target has {width} channels"
        )


def _static(b: Bend, spec: OperatorSpec, info: LayerInfo | None, channels, facts: ModelFacts, where: str) -> dict:
    """The bend's static parameter values, its file parameters loaded and checked."""
    static: dict[str, Any] = {}
    for k, p in spec.params.items():
        if p.per_frame:
            continue
        if p.kind not in LOADED_KINDS:
            static[k] = b.params[k]
            continue
        ctx = FileContext(
            f"{where}.params.{k}",
            info.name if info else None,
            info.shape if info else (),
            channels,
            facts.name,
            facts.identity if p.kind == "file" else "",
            facts.search,
            facts.embed,
            b.target.kind,
            b.target.word,
        )
        static[k] = res = load_file_param(spec.name, k, b.params[k], ctx)
        if hasattr(res, "check_params"):
            res.check_params(b.params, where)
    return static


def bind_plan(
    plan: BendPlan,
    layers: list[LayerInfo],
    *,
    latent_channels: int,
    text_dim: int,
    num_steps: int,
    facts: ModelFacts | None = None,
) -> list[BoundBend]:
    """Check ``plan`` against a model's layers and a step count; return the bound bends.
    ``facts``: the model that file parameters (steering vectors, autoencoders) must match."""
    facts = facts or ModelFacts()
    bound = []
    for i, b in enumerate(plan.bends):
        where = f"bend[{i}]"
        op = get_operator(b.op)
        spec = op.spec
        t = b.target
        module, info = None, None
        if t.kind == "latent":
            if t.step is not None and t.step > num_steps:
                raise PlanError(
                    f"{where}.step",
                    f"step {t.step} is past the last; allowed [0, {num_steps}] for {num_steps} steps "
                    f"({num_steps} = final latent)",
                )
            c, rank = latent_channels, 4
        elif t.kind == "text":
            c, rank = text_dim, 3
        elif t.kind == UNET:
            c, rank = 0, 0  # an adapter: its layers are checked when its hooks are installed
        else:
            info = resolve_module(t.module or "", layers, f"{where}.target")
            module, c, rank = info.name, info.channels, 4
        if t.steps is not None and t.steps[0] >= num_steps:
            raise PlanError(
                f"{where}.steps",
                f"range starts at step {t.steps[0]} but there are only {num_steps} steps [0, {num_steps - 1}]",
            )
        channels = b.channels
        if channels is not None and max(channels) >= c:
            raise PlanError(
                f"{where}.channels", f"channel {max(channels)} out of range; the target has channels [0, {c - 1}]"
            )
        if b.channel_fraction is not None:
            k = max(1, round(b.channel_fraction * c))
            g = torch.Generator().manual_seed(b.seed)
            channels = tuple(sorted(torch.randperm(c, generator=g)[:k].tolist()))
        width = len(channels) if channels is not None else c
        if spec.channel_op:
            _check_channel_op(spec, b.params, width, where)
        static = _static(b, spec, info, channels, facts, where)
        reads = cross_attentions(facts.unet, t.at, f"{where}.at") if t.kind == "text" and t.at else ()
        bound.append(BoundBend(i, b, spec, op.fn, module, channels, width, rank, static, reads))
    return bound


def cross_attentions(unet: torch.nn.Module | None, under: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The cross-attention layers (``….attn2``) at or under each module name of ``under``, in U-Net order."""
    if unet is None:
        raise PlanError(where, "needs the model's U-Net to find its cross-attention layers")
    names = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    out: list[str] = []
    for u in under:
        found = [n for n in names if n == u or n.startswith(u + ".")]
        if not found:
            near = sorted({n.split(".attentions")[0] for n in names})
            raise PlanError(
                where, f"no cross-attention layer at or under {u!r}; the U-Net has them under {', '.join(near)}"
            )
        out += [n for n in found if n not in out]
    return tuple(n for n in names if n in out)
