"""The model families bendbridge renders, as architecture configs that ship with it.

Each ``families/NAME.json`` holds one family's diffusers configs (``model_index``, ``unet``,
``vae``, ``text_encoder`` and, for SDXL, ``text_encoder_2``; ``scheduler``), its padding tokens and
its sampling defaults: the released models' architecture (their parameter counts are checked by
the tests). They let a single-file checkpoint load offline (:mod:`bendbridge.server.single_file`)
and let benchmarks build a full-size model with random weights (:func:`random_pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.errors import BendbridgeError

__all__ = [
    "FAMILIES",
    "FAMILY_DIR",
    "family_config",
    "pipeline_extras",
    "random_pipeline",
    "tokenizers",
    "write_config_folder",
]

FAMILY_DIR = Path(__file__).resolve().parent / "families"
FAMILIES = tuple(sorted(p.stem for p in FAMILY_DIR.glob("*.json")))


def family_config(family: str) -> dict[str, Any]:
    """The shipped description of ``family``: summary, defaults, model_index and component configs."""
    if family not in FAMILIES:
        raise BendbridgeError("family", f"{family!r} is not a model family; allowed: {', '.join(FAMILIES)}")
    return json.loads((FAMILY_DIR / f"{family}.json").read_text(encoding="utf-8"))


def pipeline_extras(kind: str) -> dict[str, Any]:
    """Arguments that build a pipeline of class ``kind`` without its safety checker (SD) or its
    invisible watermarker (SDXL): bendbridge draws exactly what the model draws."""
    if "XL" in kind:
        return {"add_watermarker": False}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def write_config_folder(desc: dict[str, Any], folder: Path) -> Path:
    """A diffusers folder without weights (configs only) from a family's description."""
    (folder / "model_index.json").write_text(json.dumps(desc["model_index"]))
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if part in desc:
            (folder / part).mkdir()
            (folder / part / "config.json").write_text(json.dumps(desc[part]))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(desc["scheduler"]))
    return folder


def tokenizers(desc: dict[str, Any], have: Path | None = None) -> dict[str, Any]:
    """The family's tokenizers (``tokenizer``, and ``tokenizer_2`` for SDXL) that the folder ``have``
    does not hold itself: CLIP's BPE vocabulary (shipped with the embedded model), 77 tokens,
    each encoder's padding token."""
    from transformers import CLIPTokenizer

    from bendbridge.server.model import EMBEDDED_MODEL

    out = {}
    for k, pad in enumerate(desc["tokenizer_pad_tokens"]):
        name = "tokenizer" if k == 0 else f"tokenizer_{k + 1}"
        if have is None or not (have / name).is_dir():
            out[name] = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer", model_max_length=77, pad_token=pad)
    return out


def random_pipeline(family: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """The family's full-size pipeline with random weights, as a LoadedModel: the real cost of
    its U-Net, VAE and text encoders, for benchmarks (no download, nothing worth looking at),
    placed as :func:`~bendbridge.server.model.place_pipeline` places a loaded one."""
    import diffusers
    import transformers

    from bendbridge.server.model import LoadedModel, ModelDefaults, place_pipeline

    desc = family_config(family)
    torch.manual_seed(seed)
    index = desc["model_index"]
    parts: dict[str, Any] = dict(tokenizers(desc))
    for name in ("unet", "vae"):
        parts[name] = getattr(diffusers, index[name][1]).from_config(desc[name])
    for name in ("text_encoder", "text_encoder_2"):
        if name in desc:
            config = transformers.CLIPTextConfig(**{k: v for k, v in desc[name].items() if k != "architectures"})
            parts[name] = getattr(transformers, index[name][1])(config)
    parts["scheduler"] = getattr(diffusers, index["scheduler"][1]).from_config(desc["scheduler"])
    pipe = getattr(diffusers, index["_class_name"])(**parts, **pipeline_extras(index["_class_name"]))
    pipe.set_progress_bar_config(disable=True)
    place_pipeline(pipe, device, dtype)
    d = desc["defaults"]
    return LoadedModel(pipe, ModelDefaults(int(d["steps"]), float(d["guidance"]), int(d["size"])))
