"""The adapter operator: a low-rank adapter's change to one linear layer, per row.

Shapes: ``x`` is the layer's input ``[R, ..., in]``; ``adapter`` the layer's ``(A [r, in],
B [out, r])``; ``weight`` ``[R]``. It returns the change to the layer's output ``[R, ..., out]``
(``weight · (x Aᵀ) Bᵀ``), which the engine's hook on that layer adds to the rows it touches.
"""

from __future__ import annotations

import torch

from bendbridge.server.adapters.lora import load_lora_resource, lora_delta

from .spec import implements, loads

__all__: list[str] = []  # operators are reached through the registry

loads("lora", "adapter")(load_lora_resource)


@implements("lora")
def _lora(x: torch.Tensor, adapter: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    a, b = adapter
    return lora_delta(x, a, b, weight)
