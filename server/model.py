"""Loading diffusion models: the embedded default, any local Stable Diffusion or SDXL folder, and
single-file checkpoints.

A folder goes through ``StableDiffusionPipeline.from_pretrained`` (or the SDXL pipeline, as its
``model_index.json`` names) offline, with no safety checker or watermarker. Real SD 1.x / 2.x /
SD-Turbo / SDXL / SDXL-Turbo folders load the same way as the small model that ships in
``server/embedded/model``; a ``.safetensors`` / ``.ckpt`` file in the original layout loads through
:mod:`bendbridge.server.single_file`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import DECODERS

__all__ = [
    "EMBEDDED_MODEL",
    "FAST_MODEL",
    "NAMED_MODELS",
    "PIPELINES",
    "LoadedModel",
    "ModelDefaults",
    "ModelError",
    "default_device",
    "check_model_options",
    "load_model",
    "model_defaults",
    "model_folder",
    "native_bf16",
    "pipeline_kind",
    "place_pipeline",
    "precision_dtype",
    "text_encoders",
]

EMBEDDED_MODEL = Path(__file__).resolve().parent / "embedded" / "model"
FAST_MODEL = EMBEDDED_MODEL.parent / "fast"  # distilled from it: 2 steps, no guidance (tools/train_fast_model.py)
NAMED_MODELS = {"embedded": EMBEDDED_MODEL, "fast": FAST_MODEL}  # what --model NAME means, before a folder NAME
SD_PIPELINE, XL_PIPELINE = "StableDiffusionPipeline", "StableDiffusionXLPipeline"
PIPELINES = (SD_PIPELINE, XL_PIPELINE)  # the pipeline classes a model folder may name in model_index.json
TINY_DECODER = "vae_tiny"  # a model folder's tiny decoder (tools/train_tiny_decoder.py made the embedded one)


class ModelError(BendbridgeError):
    """A model folder that is missing or is not a diffusers Stable Diffusion pipeline."""


@dataclass(frozen=True)
class ModelDefaults:
    """Sampling defaults of a model folder (``bendbridge.json`` in the folder overrides them)."""

    steps: int = 25
    guidance: float = 7.5
    size: int = 512


@dataclass(frozen=True)
class LoadedModel:
    """A diffusers Stable Diffusion pipeline with the facts bendbridge keeps about it: its
    sampling defaults and the folder it came from (None for a pipeline built in memory)."""

    pipe: Any
    defaults: ModelDefaults = ModelDefaults()
    path: Path | None = None
    tiny_decoder: Any = None  # a diffusers AutoencoderTiny that decodes instead of the pipeline's VAE
    decoder_name: str = DECODERS[0]  # "full", "tiny" or the tiny decoder's folder

    @property
    def base_name(self) -> str:
        """The model's own name: ``embedded``, ``fast``, its folder, or ``in-memory``."""
        if self.path is None:
            return "in-memory"
        return next((k for k, v in NAMED_MODELS.items() if v == self.path), str(self.path))

    @property
    def name(self) -> str:
        """How sessions and manifests name the model: its base name, with ``+tiny`` (or
        ``+DIR``) when a tiny decoder draws the images, since the frames differ."""
        return self.base_name if self.tiny_decoder is None else f"{self.base_name}+{self.decoder_name}"

    @property
    def decoder(self) -> Any:
        """The module whose ``decode(z).sample`` turns latents into images."""
        return self.pipe.vae if self.tiny_decoder is None else self.tiny_decoder


def text_encoders(pipe: Any) -> list[Any]:
    """The pipeline's text encoders: one for SD 1.x/2.x, two for SDXL."""
    return [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]


def place_pipeline(pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Move the U-Net and text encoders to ``device`` in ``dtype`` and the VAE too (in float32
    where its config asks: SD's VAE overflows in fp16); all for inference, without gradients."""
    pipe.unet.to(device, dtype)
    for encoder in text_encoders(pipe):
        encoder.to(device, dtype)
    pipe.vae.to(device, torch.float32 if getattr(pipe.vae.config, "force_upcast", False) else dtype)
    for m in (pipe.unet, pipe.vae, *text_encoders(pipe)):
        m.eval().requires_grad_(False)


def model_defaults(model_dir: Path) -> ModelDefaults:
    f = model_dir / "bendbridge.json"
    if f.exists():
        d = json.loads(f.read_text())
        return ModelDefaults(int(d.get("steps", 25)), float(d.get("guidance", 7.5)), int(d.get("size", 512)))
    if "turbo" in model_dir.name.lower():
        return ModelDefaults(steps=1, guidance=0.0, size=512)
    if pipeline_kind(model_dir) == XL_PIPELINE:
        return ModelDefaults(steps=25, guidance=5.0, size=1024)  # SDXL base's own defaults in diffusers
    return ModelDefaults()


def default_device() -> torch.device:
    """CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_folder(model: str | Path | None) -> Path:
    """The folder ``--model`` names: a folder, or ``embedded`` / ``fast`` (the models that ship)
    where no folder of that name exists here; None is the embedded model."""
    if model is None:
        return EMBEDDED_MODEL
    path = Path(model)
    return NAMED_MODELS[str(model)] if str(model) in NAMED_MODELS and not path.exists() else path


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX). Without it PyTorch
    emulates bf16 and a model runs several times slower than in fp32 (``bendbridge bench model``)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a model computes in for ``--precision`` (see :data:`~protocol.render.PRECISIONS`)."""
    from bendbridge.protocol.render import PRECISIONS

    if precision not in PRECISIONS:
        raise ModelError("--precision", f"{precision!r} is not a precision; allowed: {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and native_bf16() else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ModelError("--precision", "fp16 runs only on a GPU; on the CPU use fp32 or bf16")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_model(
    model: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
    precision: str | None = None,
    decoder: str | Path | None = None,
) -> LoadedModel:
    """Load a diffusers Stable Diffusion folder (default: the embedded model) onto ``device``.

    ``precision`` (auto, fp32, bf16, fp16) chooses the dtype by name (:func:`precision_dtype`);
    otherwise ``dtype`` defaults to float16 on CUDA and float32 elsewhere. ``channels_last`` stores the
    U-Net's and VAE's convolution weights NHWC, which the oneDNN and cuDNN kernels run faster
    (measured here: 8–16 % less time per U-Net row on CPU, batch 1–16; images within 1/255).
    ``decoder`` (``full``, ``tiny`` or an AutoencoderTiny folder; None is ``full``) chooses what
    turns latents into images.
    Never touches the network. Raises ModelError naming the folder when it is not a diffusers
    pipeline folder, or the decoder when there is none.
    """
    path = model_folder(model)
    family = _check_folder(path)
    tiny_path = _tiny_decoder_folder(path, decoder)
    dev = torch.device(device) if device is not None else default_device()
    if precision is not None:
        dtype = precision_dtype(precision, dev)
    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    with _quiet_hub_libraries():
        pipe, defaults = _load_pipeline(path, family)
        place_pipeline(pipe, dev, dtype)
    tiny = None if tiny_path is None else _load_tiny_decoder(tiny_path, dev, dtype)
    for m in (pipe.unet, pipe.vae, tiny):
        if channels_last and m is not None:
            m.to(memory_format=torch.channels_last)
    name = DECODERS[0] if decoder is None else str(decoder)
    return LoadedModel(pipe, defaults, path, tiny, name)


def check_model_options(
    model: str | Path | None, device: str | None = None, precision: str | None = None, decoder: str | Path | None = None
) -> None:
    """Refuse a missing model folder, an unknown precision and a missing decoder without loading
    anything, so that commands check them before any long work."""
    path = model_folder(model)
    _check_folder(path)
    _tiny_decoder_folder(path, decoder)
    if precision is not None:
        precision_dtype(precision, torch.device(device) if device is not None else default_device())


def _tiny_decoder_folder(path: Path, decoder: str | Path | None) -> Path | None:
    """The AutoencoderTiny folder ``--decoder`` names for the model at ``path`` (None: the VAE)."""
    if decoder is None or str(decoder) == "full":
        return None
    if str(decoder) == "tiny":
        for folder in (path / TINY_DECODER, EMBEDDED_MODEL / TINY_DECODER if "vae" in _shares(path) else None):
            if folder is not None and (folder / "config.json").exists():
                return folder
        raise ModelError(
            "--decoder", f"{str(path)!r} has no tiny decoder ({TINY_DECODER}/); pass --decoder DIR, a folder holding "
            "a diffusers AutoencoderTiny, or --decoder full"
        )  # fmt: skip
    folder = Path(decoder)
    config = folder / "config.json"
    kind = json.loads(config.read_text()).get("_class_name") if config.exists() else None
    if kind != "AutoencoderTiny":
        raise ModelError(
            "--decoder",
            f"{str(folder)!r} is not a diffusers AutoencoderTiny folder; allowed: {', '.join(DECODERS)} "
            "or a folder holding a diffusers AutoencoderTiny",
        )
    return folder


def _load_tiny_decoder(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderTiny

    with _quiet_hub_libraries():
        tiny = AutoencoderTiny.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    return tiny.to(device).eval().requires_grad_(False)


def _check_folder(path: Path) -> str | None:
    """Refuse a folder that cannot be a diffusers pipeline, or a checkpoint file bendbridge cannot
    read, before any weights are read. Returns a checkpoint file's family (None for a folder)."""
    from bendbridge.server.single_file import CHECKPOINT_SUFFIXES, detect_family

    if path.suffix.lower() in (*CHECKPOINT_SUFFIXES, ".pt", ".bin"):
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelError(
                "--model", f"{path.name}: bendbridge reads single-file checkpoints as "
                f"{' or '.join(CHECKPOINT_SUFFIXES)}, or diffusers folders"
            )  # fmt: skip
        if not path.is_file():
            raise ModelError("--model", f"checkpoint file {str(path)!r} does not exist")
        return detect_family(path)  # refuses a file of another kind, or a sidecar naming an unknown family
    if not path.is_dir():
        raise ModelError(
            "--model", f"model folder {str(path)!r} does not exist (expected a diffusers folder with model_index.json)"
        )
    if not (path / "model_index.json").exists():
        raise ModelError(
            "--model",
            f"{str(path)!r} has no model_index.json: not a diffusers pipeline folder "
            "(unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
        )
    kind = pipeline_kind(path)
    if kind not in PIPELINES:
        raise ModelError(
            "--model", f"{str(path)!r} holds a {kind or 'pipeline of unknown kind'}; bendbridge renders "
            f"{' and '.join(PIPELINES)} folders (SD 1.x, SD 2.x, SD-Turbo, SDXL, SDXL-Turbo)"
        )  # fmt: skip
    if kind == XL_PIPELINE and not (path / "text_encoder").is_dir():
        raise ModelError(
            "--model", f"{str(path)!r} is an SDXL refiner (one text encoder, aesthetic-score conditioning); "
            "bendbridge renders SDXL base and SDXL-Turbo folders"
        )  # fmt: skip
    return None


@contextmanager
def _quiet_hub_libraries() -> Iterator[None]:
    """diffusers and transformers log only errors and show no progress bars inside the block."""
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()  # importing the pipeline warns about optional image processors
    from diffusers.utils import logging as dlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()


def _shares(path: Path) -> list[str]:
    """The parts a model folder takes from the embedded model (``"shares"`` in ``bendbridge.json``)."""
    f = path / "bendbridge.json"
    return list(json.loads(f.read_text()).get("shares", [])) if f.exists() else []


def _shared_parts(path: Path) -> dict[str, Any]:
    """Parts a folder takes from the embedded model (``"shares"`` in its ``bendbridge.json``) and does
    not hold itself: the fast model links them in a source checkout, an installed wheel leaves the
    links out, and they are loaded from the embedded model's folder instead."""
    missing = [name for name in _shares(path) if not (path / name).exists()]
    if not missing:
        return {}
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    kinds = {"vae": AutoencoderKL, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer}
    return {name: kinds[name].from_pretrained(EMBEDDED_MODEL / name, local_files_only=True) for name in missing}


def pipeline_kind(path: Path) -> str:
    """The pipeline class a model folder names (``_class_name`` in model_index.json)."""
    try:
        return str(json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def _load_pipeline(path: Path, family: str | None) -> tuple[Any, ModelDefaults]:
    """The pipeline at ``path`` (a diffusers folder, or a single-file checkpoint of ``family``) and
    its defaults."""
    if family is None:
        return _from_pretrained(path), model_defaults(path)
    from bendbridge.server.single_file import load_single_file

    pipe, defaults = load_single_file(path, family)
    return pipe, ModelDefaults(int(defaults["steps"]), float(defaults["guidance"]), int(defaults["size"]))


def _from_pretrained(path: Path) -> Any:
    """The folder's pipeline (Stable Diffusion or SDXL) loaded offline, without a safety checker
    or watermarker."""
    import diffusers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kind = pipeline_kind(path)
    from bendbridge.server.model_families import pipeline_extras

    try:
        pipe = getattr(diffusers, kind).from_pretrained(
            path, local_files_only=True, **pipeline_extras(kind), **_shared_parts(path)
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        message = f"{str(path)!r}: cannot load it as a Stable Diffusion pipeline ({type(e).__name__}: {e})"
        raise ModelError("--model", message[:600]) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe
