"""Low-rank adapters (LoRA; Hu et al., ICLR 2022): the file, the checks and the per-row update.

An adapter changes each of a set of ``nn.Linear`` layers of the U-Net from ``W`` to
``W + weight · B·A`` with ``A`` ``[r, in]`` and ``B`` ``[out, r]``. bendbridge never merges it
into ``W``: a forward hook adds ``weight · (x Aᵀ) Bᵀ`` to the layer's output for the rows of the
batch whose weight is not 0, so every frame of a batch can carry its own weight and a weight of
0 leaves the row bit for bit as the base model computes it.

The file is the diffusers / peft convention (what ``StableDiffusionPipeline.load_lora_weights``
reads): safetensors tensors ``unet.<module>.lora_A.weight`` and ``unet.<module>.lora_B.weight``,
metadata ``lora_adapter_metadata`` (the peft ``LoraConfig`` with diffusers' ``unet.`` prefix:
``unet.r``, ``unet.lora_alpha`` = ``r``, so the stored ``B·A`` is the update at weight 1, and
``unet.target_modules``). bendbridge adds its own
metadata under ``bendbridge``: the format tag, the model it was trained on (name and U-Net
fingerprint), the token, the training settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.plan import PlanError
from bendbridge.server.steering.files import FileContext, read_safetensors, resolve_file, save_safetensors

__all__ = ["LORA_FORMAT", "LoraAdapter", "lora_delta", "load_lora_resource", "linear_modules"]

LORA_FORMAT = "bendbridge.lora/1"
_PREFIX = "unet."
_A, _B = ".lora_A.weight", ".lora_B.weight"


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The adapter's change to a linear layer's output: ``weight · (x Aᵀ) Bᵀ``.

    ``x`` ``[R, ..., in]`` (the layer's input rows), ``a`` ``[r, in]``, ``b`` ``[out, r]``,
    ``weight`` ``[R]`` (one per row) → ``[R, ..., out]``."""
    low = torch.nn.functional.linear(x, a.to(x.dtype))
    low = low * weight.to(low.dtype).reshape(-1, *([1] * (low.ndim - 1)))
    return torch.nn.functional.linear(low, b.to(x.dtype))


@dataclass
class LoraAdapter:
    """Per module: ``(A [r, in], B [out, r])``; ``meta`` bendbridge's metadata (model, model_id,
    token, rank, training); ``foreign`` when no model fingerprint is recorded (another tool made it)."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    meta: dict[str, Any] = field(default_factory=dict)
    foreign: bool = False

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _ in self.layers.values())

    def save(self, path: Path) -> None:
        """Write the diffusers / peft file (atomically)."""
        tensors = {}
        for m, (a, b) in self.layers.items():
            tensors[_PREFIX + m + _A] = a.float()
            tensors[_PREFIX + m + _B] = b.float()
        ranks = {m: a.shape[0] for m, (a, _) in self.layers.items()}
        r = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common rank
        pattern = {m: k for m, k in ranks.items() if k != r}  # merged adapters: ranks differ per layer
        peft = {"r": r, "lora_alpha": r, "target_modules": sorted(self.layers), "bias": "none"}
        if pattern:
            peft |= {"rank_pattern": pattern, "alpha_pattern": pattern}
        metadata = {
            "format": "pt",
            "lora_adapter_metadata": json.dumps({_PREFIX + k: v for k, v in peft.items()}, sort_keys=True),
            "bendbridge": json.dumps({"format": LORA_FORMAT, **self.meta}, sort_keys=True),
        }
        save_safetensors(path, tensors, metadata)

    @classmethod
    def load(cls, path: Path, where: str = "adapter") -> LoraAdapter:
        """Read a diffusers / peft LoRA file of a U-Net (ours or another tool's)."""
        tensors, raw = read_safetensors(path, where)
        layers = _pair_layers(tensors, path.name, where)
        scales = _alpha_scales(raw, layers)
        layers = {m: (a, b * scales[m] if scales[m] != 1.0 else b) for m, (a, b) in layers.items()}
        meta = json.loads(raw["bendbridge"]) if "bendbridge" in raw else {}
        if meta and meta.get("format") != LORA_FORMAT:
            raise PlanError(where, f"{path.name} is a {meta.get('format')!r} file, not a {LORA_FORMAT} adapter")
        return cls(layers, meta, foreign=not meta.get("model_id"))

    def check_unet(self, unet: torch.nn.Module, name: str, where: str) -> None:
        """Refuse an adapter whose layers are not linear layers of ``unet`` with the same shapes."""
        modules = dict(unet.named_modules())
        for m, (a, b) in sorted(self.layers.items()):
            layer = modules.get(m)
            if not isinstance(layer, torch.nn.Linear):
                raise PlanError(where, f"{name} adapts {m!r}, which is not a linear layer of this U-Net")
            if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features or a.shape[0] != b.shape[1]:
                raise PlanError(
                    where,
                    f"{name} adapts {m} as {a.shape[1]}→{b.shape[0]} (rank {a.shape[0]}); this U-Net's layer is "
                    f"{layer.in_features}→{layer.out_features}: it was made for another model",
                )


def _pair_layers(
    tensors: dict[str, torch.Tensor], name: str, where: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if key.endswith(_A):
            base = key[: -len(_A)]
            if base + _B not in tensors:
                raise PlanError(where, f"{name}: {key} has no matching {base + _B}")
            module = base[len(_PREFIX) :] if base.startswith(_PREFIX) else base
            layers[module] = (a.float(), tensors[base + _B].float())
    if not layers:
        raise PlanError(
            where,
            f"{name} holds no U-Net LoRA layers in the diffusers / peft convention "
            "('unet.<module>.lora_A.weight' and '….lora_B.weight')",
        )
    return layers


def _alpha_scales(raw: dict[str, str], layers: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Per layer, lora_alpha / r from the peft metadata (its patterns included); 1 when absent,
    as diffusers assumes."""
    try:
        cfg = json.loads(raw.get("lora_adapter_metadata", "{}"))
    except json.JSONDecodeError:
        cfg = {}
    cfg = {k.removeprefix(_PREFIX): v for k, v in cfg.items() if k.startswith(_PREFIX)}  # diffusers packs "unet.r"
    ranks, alphas = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    out = {}
    for m, (a, _) in layers.items():
        r = ranks.get(m, cfg.get("r") or a.shape[0])
        out[m] = float(alphas.get(m, cfg.get("lora_alpha", r))) / float(r)
    return out


def linear_modules(unet: torch.nn.Module, kinds: Iterable[str] = ("to_q", "to_k", "to_v", "to_out.0")) -> list[str]:
    """The U-Net's attention projections (diffusers names ending in ``kinds``), in module order:
    where an adapter goes (the layers diffusers' DreamBooth-LoRA scripts adapt)."""
    out = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + k) for k in kinds):
            out.append(name)
    return out


class AdapterResource:
    """A loaded adapter: its layers on the render's device and dtype, cached."""

    def __init__(self, adapter: LoraAdapter, name: str):
        self.adapter, self.name = adapter, name
        self._cache: dict[tuple, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def at_step(self, step: int, device: torch.device, dtype: torch.dtype) -> LoraAdapter:
        return self.adapter

    def layers_on(self, device: torch.device, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = {
                m: (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
                for m, (a, b) in self.adapter.layers.items()
            }
        return self._cache[key]


def load_lora_resource(value: str, ctx: FileContext) -> AdapterResource:
    """The ``adapter`` parameter of a ``lora`` bend: the file, refused when bendbridge made it on
    another model (by U-Net fingerprint); layer shapes are checked when its hooks are installed."""
    path = resolve_file(value, ctx)
    adapter = LoraAdapter.load(path, ctx.where)
    if not adapter.foreign and ctx.model_id and adapter.meta.get("model_id") != ctx.model_id:
        raise PlanError(
            ctx.where,
            f"{path.name} is an adapter trained on model {adapter.meta.get('model')!r} "
            f"(id {str(adapter.meta.get('model_id'))[:12]}); this render uses {ctx.model_name!r} "
            f"(id {ctx.model_id[:12]}): train one on this model",
        )
    return AdapterResource(adapter, path.name)
