"""Steering files: where they are found, what they record and how they are checked against a model.

Steering vectors and sparse autoencoders are safetensors files (tensors, no pickle) whose
metadata records the ``format``, the model they were made on (its name and :func:`unet_identity`
fingerprint), the modules, the denoising steps and the shapes. A bend that names such a file is
refused, with the field path, when the file was made for another model, another module or another
activation shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from bendbridge.protocol.plan import PlanError

__all__ = [
    "FileContext",
    "Resource",
    "resolve_file",
    "read_file",
    "write_file",
    "read_safetensors",
    "save_safetensors",
    "check_model",
    "unet_identity",
    "STEERING_DIR",
    "ADAPTERS_DIR",
]

STEERING_DIR = "steering"  # a model folder's shipped steering files, found by bare name
ADAPTERS_DIR = "adapters"  # and its shipped low-rank adapters


class Resource(Protocol):
    """A file parameter, loaded: what the operator receives at denoising step ``step``."""

    def at_step(self, step: int, device: torch.device, dtype: torch.dtype) -> Any: ...


@dataclass(frozen=True)
class FileContext:
    """What a file loader checks a file against: the bend's field path (``bend[2].params.vector``),
    the module it targets and that module's activation shape (C, H, W) at the render size, the
    bend's channel subset, the model's name and identity, and folders searched for a bare file name."""

    where: str
    module: str | None
    shape: tuple[int, ...]
    channels: tuple[int, ...] | None
    model_name: str
    model_id: str
    search: tuple[Path, ...] = ()
    embed: Callable[[str], torch.Tensor] | None = None  # prompt → text-encoder output [T, D] (prompt sets)
    kind: str = "module"  # the bend's target kind: module, latent, text
    word: str | None = None  # the text target's word(s)


def unet_identity(unet: torch.nn.Module) -> str:
    """A fingerprint of a U-Net's architecture and weights, the same in every precision.

    SHA-256 over each parameter's name, shape and first 16 values rounded to bfloat16 (so fp32,
    fp16 and bf16 loads of one checkpoint agree and a different checkpoint does not)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in unet.named_parameters():
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:16].to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:32]


def resolve_file(value: str, ctx: FileContext) -> Path:
    """``value`` as a path, or a bare name in one of ``ctx.search`` (the model's ``steering/``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    for folder in ctx.search:
        if (folder / value).is_file():
            return folder / value
    shipped = sorted({p.name for d in ctx.search if d.is_dir() for p in d.glob("*.safetensors")})
    extra = f"; the model ships {', '.join(shipped)}" if shipped else ""
    raise PlanError(ctx.where, f"no such file {value!r}{extra}")


def read_safetensors(path: Path, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw string metadata of a safetensors file; a PlanError naming ``where`` if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        return load_file(str(path)), raw
    except (SafetensorError, OSError, ValueError) as e:
        raise PlanError(where, f"{path.name} is not a safetensors file ({e})") from None


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save ``tensors`` (moved to the CPU, contiguous) with string ``metadata``, atomically."""
    import os

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_file(path: Path, fmt: str, where: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a steering file; refuses other files and other formats."""
    tensors, raw = read_safetensors(path, where)
    if raw.get("format") != fmt:
        raise PlanError(where, f"{path.name} is not a {fmt} file (format {raw.get('format')!r})")
    return tensors, {k: json.loads(v) for k, v in raw.items() if k != "format"}


def write_file(path: Path, fmt: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` with ``meta`` (JSON-encoded per key) and the format tag, atomically."""
    save_safetensors(path, tensors, {"format": fmt, **{k: json.dumps(v) for k, v in meta.items()}})


def check_model(path: Path, meta: dict[str, Any], ctx: FileContext, what: str) -> None:
    """Refuse a file made on another model (by fingerprint), naming both models."""
    if meta.get("model_id") != ctx.model_id:
        raise PlanError(
            ctx.where,
            f"{path.name} is a {what} made on model {meta.get('model')!r} (id {str(meta.get('model_id'))[:12]}); "
            f"this render uses {ctx.model_name!r} (id {ctx.model_id[:12]}): make one on this model",
        )
