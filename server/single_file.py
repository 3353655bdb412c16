"""Single-file checkpoints: the original Stable Diffusion (LDM) layout most people hold models in.

A ``.safetensors`` (or ``.ckpt``) file holds the U-Net under ``model.diffusion_model.``, the VAE
under ``first_stage_model.`` and the text encoders under ``cond_stage_model.`` (SD 1.x: CLIP in
Hugging Face layout under ``.transformer.``; SD 2.x: OpenCLIP under ``.model.``) or
``conditioner.embedders.0.`` / ``.1.`` (SDXL). It names no architecture, so bendbridge reads it
with diffusers' own converter (``from_single_file``) against architecture configs that ship with
the project (:mod:`bendbridge.server.model_families`) and never asks a hub.

Which family: a sidecar ``FILE.bendbridge.json`` beside the checkpoint may say (``"family"``, and
``"config"``: a diffusers folder whose configs to use instead, for architectures of one's own);
otherwise diffusers' key probes tell SD 1.x, SD 2.x and SDXL apart, and a file name containing
``turbo`` picks the Turbo variant. SD 2.x 768 (v-prediction) and 512 (ε) files hold the same keys:
without a sidecar a 2.x file is read as 2.x 768, as diffusers does; say ``"family": "sd2-base"`` for
a base file.

:func:`to_ldm` writes a pipeline back in that layout (``bendbridge convert``), the inverse of the
converter, so a checkpoint file can be made from any folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.server.model_families import (
    FAMILIES,
    family_config,
    pipeline_extras,
    tokenizers,
    write_config_folder,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "detect_family",
    "load_single_file",
    "sidecar",
    "to_ldm",
    "write_single_file",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
UNET, VAE = "model.diffusion_model.", "first_stage_model."
CLIP_SD1, OPENCLIP_SD2 = "cond_stage_model.transformer.", "cond_stage_model.model."
CLIP_XL, OPENCLIP_XL = "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."
_PROBES = {"U-Net": (UNET,), "VAE": (VAE, "vae."), "text encoder": ("cond_stage_model.", "conditioner.embedders.")}
_DIFFUSERS_KIND = {"v1": "sd1", "v2": "sd2-v", "xl_base": "sdxl"}  # diffusers' model types we render


def sidecar(path: Path) -> dict[str, Any]:
    """``FILE.bendbridge.json`` beside a checkpoint (``family``, ``config``, ``steps``, ``guidance``,
    ``size``), or {}."""
    f = path.with_name(path.stem + ".bendbridge.json")
    if not f.exists():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BendbridgeError(f.name, f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BendbridgeError(f.name, "expected a JSON object")
    return data


def detect_family(path: Path, checkpoint: dict[str, torch.Tensor] | None = None) -> str:
    """The family of the checkpoint at ``path`` (see the module notes). Reads only the file's
    header when ``checkpoint`` is not given."""
    side = sidecar(path)
    _own_config(path, side)  # a sidecar's config folder must be a pipeline folder
    named = side.get("family")
    if named is not None:
        family_config(str(named))  # refuses an unknown name
        return str(named)
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    keys = checkpoint if checkpoint is not None else _shapes(path)
    missing = [part for part, probes in _PROBES.items() if not any(k.startswith(probes) for k in keys)]
    if missing:
        raise BendbridgeError(
            "--model",
            f"{path.name} is not a whole Stable Diffusion checkpoint: it holds no {' and no '.join(missing)} "
            f"(expected the original layout: keys under {', '.join(p for probes in _PROBES.values() for p in probes)})",
        )
    kind = infer_diffusers_model_type(keys)
    if kind not in _DIFFUSERS_KIND:
        raise BendbridgeError(
            "--model", f"{path.name} holds a {kind!r} model; bendbridge renders single files of the families "
            f"{', '.join(FAMILIES)} (name one in {path.stem}.bendbridge.json if the guess is wrong)"
        )  # fmt: skip
    family = _DIFFUSERS_KIND[kind]
    if "turbo" in path.name.lower():
        family = {"sd2-v": "sd-turbo", "sdxl": "sdxl-turbo"}.get(family, family)
    return family


def _own_config(path: Path, side: dict[str, Any]) -> Path | None:
    """The diffusers folder the sidecar ``side`` names for the checkpoint's architecture (relative
    to the checkpoint), checked; None without one."""
    from bendbridge.server.model import PIPELINES, pipeline_kind

    if "config" not in side:
        return None
    folder = Path(str(side["config"]))
    folder = folder if folder.is_absolute() else path.parent / folder
    if pipeline_kind(folder) not in PIPELINES:
        raise BendbridgeError(
            f"{path.stem}.bendbridge.json.config", f"{str(folder)!r} is not a diffusers pipeline folder whose "
            f"model_index.json names one of {', '.join(PIPELINES)}"
        )  # fmt: skip
    return folder


def load_single_file(path: Path, family: str) -> tuple[Any, dict[str, Any]]:
    """Load a single-file checkpoint of ``family`` (:func:`detect_family`) offline → (pipeline,
    defaults). The pipeline is the family's diffusers class with its scheduler and tokenizers; no
    safety checker or watermarker."""
    import diffusers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    desc = family_config(family)
    side = sidecar(path)
    with tempfile.TemporaryDirectory(prefix="bb-family-") as tmp:
        config = _own_config(path, side) or write_config_folder(desc, Path(tmp))
        kind = json.loads((config / "model_index.json").read_text(encoding="utf-8"))["_class_name"]
        parts = {**tokenizers(desc, have=config), **pipeline_extras(kind)}
        try:
            pipe = getattr(diffusers, kind).from_single_file(
                str(path), config=str(config), local_files_only=True, **parts
            )
        except Exception as e:  # noqa: BLE001 — diffusers raises its own kinds (SingleFileComponentError…)
            message = f"{path.name}: cannot load it as a {family} checkpoint ({type(e).__name__}: {e})"
            raise BendbridgeError("--model", message[:600]) from None
    defaults = {**desc["defaults"], **{k: side[k] for k in ("steps", "guidance", "size") if k in side}}
    pipe.set_progress_bar_config(disable=True)
    return pipe, defaults


def _shapes(path: Path) -> dict[str, Any]:
    """The checkpoint's tensors as shape-only stand-ins (enough for diffusers' key probes). A
    ``.ckpt`` is read with ``weights_only`` (no code in the file runs)."""
    try:
        if path.suffix.lower() != ".safetensors":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            return dict(loaded.get("state_dict", loaded)) if isinstance(loaded, dict) else {}
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except Exception as e:  # noqa: BLE001 — safetensors, pickle and zip each raise their own kinds
        kind = "safetensors" if path.suffix.lower() == ".safetensors" else "PyTorch checkpoint"
        message = f"{path.name} is not a readable {kind} file ({type(e).__name__}: {e})"
        raise BendbridgeError("--model", message[:400]) from None


# ---------------------------------------------------------------------------- writing (diffusers → LDM)
def write_single_file(pipe: Any, path: Path, dtype: torch.dtype | None = None) -> Path:
    """Save ``pipe`` as one LDM-layout ``.safetensors`` file (``dtype``: convert, e.g. float16)."""
    from safetensors.torch import save_file

    tensors = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in to_ldm(pipe).items()}
    save_file(tensors, str(path))
    return path


def to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    """A pipeline's weights in the original LDM layout (the inverse of diffusers' converter)."""
    out = {UNET + k: v for k, v in unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config).items()}
    out.update({VAE + k: v for k, v in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()})
    text2 = getattr(pipe, "text_encoder_2", None)
    if text2 is not None:  # SDXL: CLIP-L as is, OpenCLIP-bigG with its projection
        out.update(_clip_to_ldm(pipe.text_encoder.state_dict(), CLIP_XL))
        out.update(_openclip_to_ldm(text2.state_dict(), OPENCLIP_XL))
    elif pipe.text_encoder.config.hidden_size == 768:  # SD 1.x: CLIP ViT-L/14
        out.update(_clip_to_ldm(pipe.text_encoder.state_dict(), CLIP_SD1))
    else:  # SD 2.x: OpenCLIP ViT-H/14
        out.update(_openclip_to_ldm(pipe.text_encoder.state_dict(), OPENCLIP_SD2))
    return out


_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # fmt: skip


def unet_to_ldm(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Diffusers U-Net keys → LDM ``input_blocks``/``middle_block``/``output_blocks`` keys."""
    per = int(config.layers_per_block) + 1  # LDM input/output blocks per level (resnets + sampler)
    up_has_attention = ["CrossAttn" in t for t in config.up_block_types]
    out = {}
    for key, value in sd.items():
        out[_unet_key(key, per, up_has_attention)] = value
    return out


def _unet_key(key: str, per: int, up_attention: list[bool]) -> str:
    head, _, leaf = key.rpartition(".")
    if head in _UNET_TOP:
        return f"{_UNET_TOP[head]}.{leaf}"
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * per}.0.op.{rest.removeprefix('conv.')}"
        return _ldm_block("input_blocks", level * per + j + 1, kind, rest)
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            return f"output_blocks.{level * per + per - 1}.{2 if up_attention[level] else 1}.{rest}"
        return _ldm_block("output_blocks", level * per + j, kind, rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"middle_block.{2 * j if kind == 'resnets' else 1}.{_resnet(rest) if kind == 'resnets' else rest}"
    raise BendbridgeError("unet", f"no LDM name for the U-Net weight {key!r}")


def _ldm_block(blocks: str, block: int, kind: str, rest: str) -> str:
    """A resnet (LDM slot 0, its layers renamed) or a transformer (slot 1, names kept) in an LDM block."""
    return f"{blocks}.{block}.0.{_resnet(rest)}" if kind == "resnets" else f"{blocks}.{block}.1.{rest}"


def _resnet(rest: str) -> str:
    name, _, leaf = rest.partition(".")
    return f"{_RESNET.get(name, name)}.{leaf}"


_VAE_TOP = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Diffusers VAE keys → LDM ``encoder.down.i.block.j`` / ``decoder.up.(n-1-i)`` keys; the
    mid-block attention's linear weights become the 1×1 convolutions LDM stores."""
    levels = len(config.up_block_types)
    out = {}
    for key, value in sd.items():
        new = _vae_key(key, levels)
        if ".mid.attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


def _vae_key(key: str, levels: int) -> str:
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return key
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        side, i, kind, j, tail = m[1], int(m[2]), m[3], int(m[4]), m[5]
        level = i if side == "down" else levels - 1 - i
        if kind == "resnets":
            return f"{part}.{side}.{level}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{part}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.{tail}"
    m = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest)
    if m:
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)", rest)
    if m:
        return f"{part}.mid.attn_1.{_VAE_ATTENTION[m[1]]}.{m[2]}"
    head, _, leaf = rest.rpartition(".")
    return f"{part}.{_VAE_TOP.get(head, head)}.{leaf}"


def _clip_to_ldm(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIP in Hugging Face layout under ``prefix`` (``text_model.`` as the original file has it)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()
            if not k.endswith("position_ids")}  # fmt: skip


_OPENCLIP_LAYER = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                   ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj"))  # fmt: skip


def _openclip_to_ldm(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIP text model → OpenCLIP layout: fused q/k/v ``in_proj``, ``resblocks``, a
    ``text_projection`` matrix [width, dim] (the transpose of the Linear's weight)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)", key)
        if key == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out[prefix + "ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m and m[2] in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault(f"{m[1]}.{m[3]}", {})[m[2][10]] = value
        elif m:
            name = dict(_OPENCLIP_LAYER)[m[2]]
            out[f"{prefix}transformer.resblocks.{m[1]}.{name}.{m[3]}"] = value
        else:
            raise BendbridgeError("text_encoder", f"no OpenCLIP name for the weight {key!r}")
    for layer_leaf, parts in qkv.items():
        layer, leaf = layer_leaf.split(".")
        fused = torch.cat([parts["q"], parts["k"], parts["v"]])
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = fused
    return out
