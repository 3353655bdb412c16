"""The stable, documented list of bendable U-Net modules.

A module is bendable when its output (or the first item of its output tuple) is a feature map
``[B, C, H, W]``. The list is every such module of ``unet.named_modules()`` in registration
order — so index N always names the same module of a given architecture — leaving out
normalisation, activation and dropout layers (bend the conv or block around them instead).
Shapes are measured by one dry-run forward pass at the model's native sample size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

__all__ = ["LayerInfo", "list_layers", "first_tensor", "replace_first_tensor", "module_hooks", "ForwardHook"]

ForwardHook = Callable[[torch.nn.Module, tuple, object], object]

_SKIP = ("GroupNorm", "LayerNorm", "SiLU", "GELU", "Dropout", "Identity", "Mish", "ReLU", "Tanh", "Sigmoid")


@dataclass(frozen=True)
class LayerInfo:
    """One bendable module: its index, dotted diffusers name, class, and output shape (C, H, W)."""

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[0]


def first_tensor(out: object) -> torch.Tensor | None:
    """The activation a bend acts on: the output tensor, or the first tensor of a tuple/output."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    return sample if isinstance(sample, torch.Tensor) else None


def replace_first_tensor(out: object, new: torch.Tensor) -> object:
    """``out`` with its bendable activation replaced by ``new`` (same container type)."""
    if isinstance(out, torch.Tensor):
        return new
    if isinstance(out, tuple):
        return (new, *out[1:])
    out.sample = new  # a diffusers BaseOutput dataclass
    return out


@torch.no_grad()
def list_layers(
    unet: torch.nn.Module, *, seq_len: int = 77, height: int | None = None, width: int | None = None
) -> list[LayerInfo]:
    """Bendable modules of ``unet`` with their activation shapes for one latent of the given size.

    ``height``/``width`` are latent sizes (pixels / VAE factor); default: the U-Net's sample_size.
    """
    from bendbridge.server.render.conditioning import stand_in_conditioning

    unet_config = unet.config
    size = unet_config.sample_size if isinstance(unet_config.sample_size, int) else unet_config.sample_size[0]
    h, w = height or size, width or size
    p = next(unet.parameters())
    named = [(n, m) for n, m in unet.named_modules() if n and type(m).__name__ not in _SKIP]
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def recorder(name: str):
        def hook(_m, _a, out):
            t = first_tensor(out)
            if t is not None and t.ndim == 4 and name not in shapes:
                shapes[name] = tuple(t.shape[1:])

        return hook

    try:
        for n, m in named:
            handles.append(m.register_forward_hook(recorder(n)))
        x = torch.zeros(1, unet_config.in_channels, h, w, device=p.device, dtype=p.dtype)
        text = stand_in_conditioning(unet_config, 1, seq_len, h * 8, w * 8, p.device, p.dtype)
        unet(x, torch.tensor(500, device=p.device), **text)
    finally:
        for hd in handles:
            hd.remove()
    out = [(n, type(m).__name__) for n, m in named if n in shapes]
    return [LayerInfo(i, n, k, shapes[n]) for i, (n, k) in enumerate(out)]


@contextmanager
def module_hooks(
    unet: torch.nn.Module, hooks: Sequence[tuple[str, ForwardHook]], missing: Callable[[int, str], Exception]
) -> Iterator[list]:
    """Register forward hooks on the named modules, in order (hooks on one module run in the order
    given); remove every handle on exit, also when installing fails halfway or the body raises.
    A hook marked ``hook.before = True`` is a forward pre-hook with keyword arguments instead
    (``hook(module, args, kwargs) -> (args, kwargs) | None``): it changes what the module reads.
    ``missing(i, name)`` builds the error for a name the U-Net does not have."""
    handles: list = []
    try:
        modules = dict(unet.named_modules())
        for i, (name, hook) in enumerate(hooks):
            if name not in modules:
                raise missing(i, name)
            if getattr(hook, "before", False):
                handles.append(modules[name].register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(modules[name].register_forward_hook(hook))
        yield handles
    finally:
        for h in handles:
            h.remove()
