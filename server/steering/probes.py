"""Probes: read or replace module activations during a render, step by step.

A probe is a function ``probe(step, activation) -> replacement | None`` attached to a module by
name; it sees the module's output (``[R, C, H, W]``, or ``[R, HW, C]`` for an attention layer
such as ``….attn2``; R = the U-Net call's rows: ``[uncond B; cond B]`` with guidance, B without)
at every denoising step, and may return a tensor to use in its place. Probes use the same hook
registry as bends (``layers.module_hooks``): every handle goes on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.server.bending.binding import resolve_module
from bendbridge.server.bending.layers import LayerInfo, first_tensor, module_hooks, replace_first_tensor

__all__ = ["Probe", "probing", "resolve_targets", "default_targets", "cond_rows", "step_range"]

Probe = Callable[[int, torch.Tensor], torch.Tensor | None]


@contextmanager
def probing(renderer, probes: Sequence[tuple[str, Probe]]) -> Iterator[None]:
    """Attach ``probes`` (module name, probe) to ``renderer``'s U-Net while the body renders.

    The renderer must not share its first steps between frames (``share_prefix=False``), so every
    step of every frame runs through the U-Net."""
    if renderer.prefix_steps:
        raise RuntimeError("probing needs a renderer made with share_prefix=False")

    def hook_for(probe: Probe):
        def hook(_module, _args, output):
            t = first_tensor(output)
            if t is None or t.ndim not in (3, 4):
                return None
            y = probe(renderer.engine.step, t)
            return None if y is None else replace_first_tensor(output, y)

        return hook

    with module_hooks(
        renderer.unet,
        [(name, hook_for(p)) for name, p in probes],
        lambda i, name: BendbridgeError("--targets", f"module {name!r} is not in this U-Net"),
    ):
        yield


def cond_rows(x: torch.Tensor, batch: int, guided: bool) -> torch.Tensor:
    """The prompt-conditioned rows of a U-Net activation [R, ...] → [B, ...]."""
    return x[batch:] if guided and x.shape[0] == 2 * batch else x


def resolve_targets(
    names: Sequence[str], layers: list[LayerInfo], where: str = "--targets", unet: torch.nn.Module | None = None
) -> list[LayerInfo]:
    """Module names or ``#N`` indices → layers, with the same errors as a bend's target. With
    ``unet``, any other module of it is accepted too (attention layers: ``….attn2``; shape unknown)."""
    modules = dict(unet.named_modules()) if unet is not None else {}
    known = {i.name for i in layers}
    out = []
    for name in names:
        if name not in known and name in modules and name:
            info = LayerInfo(-1, name, type(modules[name]).__name__, ())
        else:
            info = resolve_module(name, layers, where)
        if info not in out:
            out.append(info)
    if not out:
        raise BendbridgeError(where, "no target modules given")
    return out


def default_targets(unet: torch.nn.Module) -> list[LayerInfo]:
    """Where the prompt enters and what it passes on: every cross-attention layer (``….attn2``,
    output ``[R, HW, C]``) and every attention block (``….attentions.N``, ``[R, C, H, W]``), in
    U-Net order (the map's rows)."""
    out = []
    for name, module in unet.named_modules():
        parts = name.split(".")
        if name.endswith(".attn2") or (len(parts) >= 2 and parts[-2] == "attentions"):
            out.append(LayerInfo(-1, name, type(module).__name__, ()))
    return out


def step_range(text: str | None, num_steps: int, where: str = "--steps") -> tuple[int, int]:
    """``"A-B"``, ``"A"`` or None (all) → an inclusive range within [0, num_steps − 1]."""
    if text is None or text == "all":
        return (0, num_steps - 1)
    a_s, _, b_s = str(text).partition("-")
    try:
        a = int(a_s)
        b = int(b_s) if b_s else a
    except ValueError:
        raise BendbridgeError(where, f"expected A-B or A (step numbers), got {text!r}") from None
    if not 0 <= a <= b < num_steps:
        raise BendbridgeError(where, f"{text!r} is not a step range within [0, {num_steps - 1}] ({num_steps} steps)")
    return (a, b)


def check_targets(
    model, settings, targets: Sequence[str] | None, steps: Sequence[str | None] = (None,), where: str = "--targets"
) -> None:
    """Refuse unknown target modules and step ranges for ``model`` at ``settings`` before any long work."""
    from bendbridge.server.render import RenderConfig, Renderer

    renderer = Renderer(model, RenderConfig(settings, share_prefix=False))
    if targets:
        resolve_targets(targets, renderer.layers, where, unet=renderer.unet)
    for text in steps:
        step_range(text, renderer.steps)
