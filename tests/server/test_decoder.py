"""``--decoder``: the model's VAE, its distilled tiny decoder, or a user's AutoencoderTiny folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import EMBEDDED_MODEL, TINY_DECODER, ModelError, check_model_options, load_model
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

SHIPPED = EMBEDDED_MODEL / TINY_DECODER


def _user_tiny_decoder(folder):
    """A random-weight AutoencoderTiny with the tiny test pipeline's 4× down-sampling."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
    ).save_pretrained(folder)
    return folder


def _render(model, frames: int = 2, **settings) -> np.ndarray:
    r = Renderer(model, RenderConfig(RenderSettings(("a red circle on a blue background",), **settings)))
    return np.stack([res.image for res in r.render([FrameSpec(seed=i) for i in range(frames)])])


def test_a_user_autoencoder_tiny_folder_decodes_and_names_the_frames(saved_tiny_model, tmp_path):
    folder = _user_tiny_decoder(tmp_path / "taesd")
    full = load_model(saved_tiny_model, "cpu")
    tiny = load_model(saved_tiny_model, "cpu", decoder=folder)
    assert type(tiny.decoder).__name__ == "AutoencoderTiny" and tiny.pipe.vae is not tiny.decoder
    assert tiny.name == f"{full.name}+{folder}" and tiny.base_name == full.name  # resume never mixes the two
    a, b = _render(full), _render(tiny)
    assert a.shape == b.shape == (2, 64, 64, 3) and not np.array_equal(a, b)


def test_a_folder_that_is_not_an_autoencoder_tiny_is_refused_before_loading(saved_tiny_model):
    with pytest.raises(ModelError, match=r"--decoder.*not a diffusers AutoencoderTiny folder; allowed: full"):
        check_model_options(saved_tiny_model, decoder=saved_tiny_model / "vae")


def test_tiny_on_a_model_without_a_tiny_decoder_is_refused(saved_tiny_model):
    with pytest.raises(ModelError, match="has no tiny decoder"):
        load_model(saved_tiny_model, "cpu", decoder="tiny")


def test_the_shipped_tiny_decoder_is_a_small_diffusers_autoencoder_tiny():
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderTiny" and config["scaling_factor"] == 1.0
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 1024 * 1024
    report = json.loads((SHIPPED / "training.json").read_text())["held_out_error"]
    assert report["unbent"]["psnr_db"] >= 25 and report["bent"]["psnr_db"] >= 20


@pytest.mark.parametrize("model", ["embedded", "fast"])
def test_the_tiny_decoder_draws_what_the_vae_draws_within_its_stated_error(model):
    full, tiny = load_model(model, "cpu"), load_model(model, "cpu", decoder="tiny")
    assert tiny.name == f"{model}+tiny"
    a, b = (_render(m, frames=4).astype(np.float64) for m in (full, tiny))
    mse = ((a - b) ** 2).mean()
    assert np.abs(a - b).mean() < 8 and 10 * np.log10(255**2 / mse) >= 25  # PSNR in dB


def test_bounce_on_a_server_refuses_a_decoder_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bendbridge.tools.cli", "demo", "--out", str(tmp_path / "d.mp4"), "--server",
         "tcp://127.0.0.1:9", "--decoder", "tiny"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "--decoder: with --server, give --decoder to 'bendbridge serve'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
