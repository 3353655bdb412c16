"""Single-file checkpoints in the original (LDM) layout: written from each family's pipeline, read
back through diffusers' own converter offline, weight for weight; the shipped full-size family
configs checked against diffusers' key probes and converters and the released models' parameter
counts (on the meta device: no memory, no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import load_model
from bendbridge.server.model_families import FAMILIES, family_config
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.single_file import detect_family, to_ldm, write_single_file

from .test_families import FAMILIES as REDUCED
from .test_families import build

#: the released models' parameter counts (U-Net, VAE, text encoder(s))
PUBLISHED = {
    "sd1": (859_520_964, 83_653_863, 123_060_480),
    "sd2-base": (865_910_724, 83_653_863, 340_387_840),
    "sd2-v": (865_910_724, 83_653_863, 340_387_840),
    "sd-turbo": (865_910_724, 83_653_863, 340_387_840),
    "sdxl": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
    "sdxl-turbo": (2_567_463_684, 83_653_863, 123_060_480, 694_659_840),
}
#: what the file alone says without a sidecar (SD 2.x base and 768 hold the same keys)
DETECTED = {"sd1": "sd1", "sd2-base": "sd2-v", "sd2-v": "sd2-v", "sd-turbo": "sd-turbo", "sdxl": "sdxl",
            "sdxl-turbo": "sdxl-turbo"}  # fmt: skip


def meta_pipeline(family: str):
    """The family's full-size pipeline parts, built from the shipped configs on the meta device."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    desc = family_config(family)

    def text(part, cls):
        return cls(CLIPTextConfig(**{k: v for k, v in desc[part].items() if k != "architectures"}))

    with torch.device("meta"):
        parts = SimpleNamespace(
            unet=UNet2DConditionModel.from_config(desc["unet"]),
            vae=AutoencoderKL.from_config(desc["vae"]),
            text_encoder=text("text_encoder", CLIPTextModel),
            text_encoder_2=text("text_encoder_2", CLIPTextModelWithProjection) if "text_encoder_2" in desc else None,
        )
    return parts


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("position_ids")}


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_family_configs_have_the_released_models_sizes_and_diffusers_reads_their_layout(family):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    pipe = meta_pipeline(family)
    models = [pipe.unet, pipe.vae, pipe.text_encoder] + ([pipe.text_encoder_2] if pipe.text_encoder_2 else [])
    assert tuple(sum(p.numel() for p in m.parameters()) for m in models) == PUBLISHED[family]
    ldm = to_ldm(pipe)
    assert detect_family(_named(family), ldm) == DETECTED[family]
    assert shapes(convert_ldm_unet_checkpoint(ldm, dict(pipe.unet.config))) == shapes(pipe.unet.state_dict())
    assert shapes(convert_ldm_vae_checkpoint(ldm, dict(pipe.vae.config))) == shapes(pipe.vae.state_dict())
    if pipe.text_encoder_2 is None and family == "sd1":
        text = convert_ldm_clip_checkpoint(ldm)
    elif pipe.text_encoder_2 is None:
        text = convert_open_clip_checkpoint(pipe.text_encoder, ldm, prefix="cond_stage_model.model.")
    else:
        text = convert_ldm_clip_checkpoint(ldm)
        text2 = convert_open_clip_checkpoint(pipe.text_encoder_2, ldm, prefix="conditioner.embedders.1.model.")
        assert shapes(text2) == shapes(pipe.text_encoder_2.state_dict())
    text = {k.removeprefix("text_model."): v for k, v in text.items()}
    assert shapes(text) == {k.removeprefix("text_model."): v for k, v in shapes(pipe.text_encoder.state_dict()).items()}


def _named(family):
    from pathlib import Path

    return Path(f"/nonexistent/{family}-model.safetensors")


@pytest.fixture(scope="module", params=sorted(REDUCED))
def written(request, tmp_path_factory):
    """A reduced-width pipeline of each family, its folder, and a single file written from it whose
    sidecar names the family and the folder's configs (the architecture is not the released one)."""
    root = tmp_path_factory.mktemp(f"single-{request.param}")
    folder = build(request.param, root / "folder")
    model = load_model(folder, "cpu", channels_last=False)
    path = write_single_file(model.pipe, root / "model.safetensors")
    (root / "model.bendbridge.json").write_text(json.dumps({"family": request.param, "config": "folder"}))
    return request.param, model, path


def test_a_single_file_written_from_each_family_loads_back_weight_for_weight(written):
    family, model, path = written
    loaded = load_model(path, "cpu", channels_last=False)
    assert type(loaded.pipe).__name__ == type(model.pipe).__name__
    assert type(loaded.pipe.scheduler).__name__ == REDUCED[family]["scheduler"]
    parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if hasattr(model.pipe, "text_encoder_2") else [])
    for part in parts:
        ours, theirs = getattr(model.pipe, part).state_dict(), getattr(loaded.pipe, part).state_dict()
        ours = {k: v for k, v in ours.items() if not k.endswith("position_ids")}
        theirs = {k: v for k, v in theirs.items() if not k.endswith("position_ids")}
        assert ours.keys() == theirs.keys(), part
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    settings = RenderSettings(("a red circle on a blue background",), steps=2, guidance=2.0, width=64, height=64)
    a, b = (Renderer(m, RenderConfig(settings)).render([FrameSpec(seed=1)])[0].image for m in (model, loaded))
    assert np.array_equal(a, b)


def test_bendbridge_layers_reads_a_single_file(written, capsys):
    from bendbridge.tools.cli import main

    _, _, path = written
    assert main(["layers", "--model", str(path), "--size", "64"]) == 0
    assert "up_blocks.1.attentions.0" in capsys.readouterr().out


def _empty_file_with_sidecar(folder, sidecar_text: str):
    path = folder / "model.safetensors"
    path.write_bytes(b"")
    (folder / "model.bendbridge.json").write_text(sidecar_text)
    return path


def test_a_sidecar_naming_an_unknown_family_is_refused_before_loading(tmp_path):
    path = _empty_file_with_sidecar(tmp_path, '{"family": "sd3"}')
    with pytest.raises(BendbridgeError, match=r"family.*'sd3' is not a model family; allowed: sd-turbo, sd1"):
        load_model(path, "cpu")


def test_a_checkpoint_of_another_kind_is_refused_with_the_families_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.pos_embed": torch.zeros(1, 4)}, str(path))
    with pytest.raises(
        BendbridgeError,
        match=r"--model.*other.safetensors is not a whole Stable Diffusion checkpoint: it holds no VAE and no text",
    ):
        load_model(path, "cpu")


def test_a_missing_checkpoint_file_and_a_pickle_suffix_are_refused(tmp_path):
    with pytest.raises(BendbridgeError, match=r"--model.*checkpoint file .*gone.safetensors' does not exist"):
        load_model(tmp_path / "gone.safetensors", "cpu")
    with pytest.raises(BendbridgeError, match=r"--model.*model.bin: bendbridge reads single-file checkpoints as"):
        load_model(tmp_path / "model.bin", "cpu")


def test_the_family_is_read_from_the_files_keys_its_name_and_a_sidecar(tmp_path):
    from safetensors.torch import save_file

    keys = {  # the keys diffusers probes, at SD 2.x's shapes (1024-wide cross-attention)
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 1024),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(1),
        "cond_stage_model.model.token_embedding.weight": torch.zeros(1),
    }
    for name, family in (("v21.safetensors", "sd2-v"), ("my-sd-turbo.safetensors", "sd-turbo")):
        save_file(keys, str(tmp_path / name))
        assert detect_family(tmp_path / name) == family
    (tmp_path / "v21.bendbridge.json").write_text('{"family": "sd2-base"}')
    assert detect_family(tmp_path / "v21.safetensors") == "sd2-base"


def test_bendbridge_convert_turns_a_single_file_into_a_folder_and_refuses_to_overwrite(tmp_path, capsys):
    from bendbridge.tools.cli import main

    model = load_model(build("sdxl", tmp_path / "sdxl"), "cpu", channels_last=False)
    path = write_single_file(model.pipe, tmp_path / "model.safetensors")
    (tmp_path / "model.bendbridge.json").write_text(json.dumps({"family": "sdxl", "config": "sdxl"}))
    folder = tmp_path / "converted"
    assert main(["convert", "--model", str(path), "--out", str(folder)]) == 0
    back = load_model(folder, "cpu", channels_last=False)
    ours, theirs = model.pipe.unet.state_dict(), back.pipe.unet.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert main(["convert", "--model", str(folder), "--out", str(folder)]) == 2
    assert "exists; name a new file or folder (nothing is overwritten)" in capsys.readouterr().err
    half = tmp_path / "half.safetensors"
    assert main(["convert", "--model", str(folder), "--out", str(half), "--half"]) == 0
    from safetensors import safe_open

    with safe_open(str(half), framework="pt") as f:
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16


def test_a_sidecar_config_that_is_not_a_pipeline_folder_is_refused(tmp_path):
    path = _empty_file_with_sidecar(tmp_path, '{"family": "sd1", "config": "nowhere"}')
    with pytest.raises(BendbridgeError, match=r"model.bendbridge.json.config.*nowhere' is not a diffusers pipeline"):
        load_model(path, "cpu")


@pytest.mark.slow
def test_a_full_size_sd1_file_loads_offline_with_the_shipped_configs_and_renders(tmp_path):
    """The path a user's SD 1.5 file takes: no sidecar, the family read from its keys, the shipped
    configs and tokenizer, diffusers' converter. Random weights at full size (2.1 GB in float16)."""
    from bendbridge.server.model_families import random_pipeline

    original = random_pipeline("sd1", torch.device("cpu"), torch.float16)
    path = write_single_file(original.pipe, tmp_path / "v1-5-random.safetensors")
    ours = {part: getattr(original.pipe, part).state_dict() for part in ("unet", "vae", "text_encoder")}
    del original
    loaded = load_model(path, "cpu", channels_last=False)
    assert loaded.defaults.size == 512 and loaded.pipe.tokenizer.model_max_length == 77
    for part, weights in ours.items():
        theirs = getattr(loaded.pipe, part).state_dict()
        assert {k for k in weights if not k.endswith("position_ids")} == {
            k for k in theirs if not k.endswith("position_ids")
        }, part
        assert all(torch.equal(v.float(), theirs[k].float()) for k, v in weights.items() if k in theirs), part
    settings = RenderSettings(("a red circle on a blue background",), steps=1, guidance=2.0, width=64, height=64)
    frame = Renderer(loaded, RenderConfig(settings)).render([FrameSpec(seed=0)])[0]
    assert frame.image.shape == (64, 64, 3) and not frame.nonfinite
