"""The embedded model: offline loading through the diffusers path, and honest prompt adherence."""

from __future__ import annotations

import os

import pytest

from bendbridge.server.embedded import scenes
from bendbridge.server.model import EMBEDDED_MODEL

pytestmark = pytest.mark.skipif(
    not (EMBEDDED_MODEL / "model_index.json").exists(), reason="embedded model not exported"
)


@pytest.fixture(scope="module")
def model():
    from bendbridge.server.model import load_model

    return load_model(None, "cpu")


def test_the_folder_loads_with_plain_diffusers_offline():
    from diffusers import StableDiffusionPipeline

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    p = StableDiffusionPipeline.from_pretrained(
        EMBEDDED_MODEL, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    assert p.unet.config.in_channels == 4 and p.vae.config.latent_channels == 4
    assert 2 ** (len(p.vae.config.block_out_channels) - 1) == 4  # ×4 down-sampling
    size = sum(f.stat().st_size for f in EMBEDDED_MODEL.rglob("*") if f.is_file())
    assert size <= 30 * 1024 * 1024


def test_the_tokenizer_is_clip_bpe_and_needs_no_open_clip():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer")
    ids = tok("a red circle").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(tok) == 49408


def test_unknown_words_degrade_gracefully(model):
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    settings = RenderSettings(("a purple elephant dancing on the moon, trending on artstation",))
    res = Renderer(model, RenderConfig(settings)).render([FrameSpec()])[0]
    assert res.ok and res.image.std() > 5


@pytest.mark.slow
def test_both_named_colours_are_right_in_80_percent_of_48_held_out_prompts(model):
    """Issue #3: over 48 prompts whose (colour, shape, background colour, style) combination was never
    drawn for training, the named foreground and background colours are both right in ≥ 80 % of
    images at the default sampling settings (the shipped model measures 90 %)."""
    from bendbridge.server.embedded.adherence import measure_adherence

    held = scenes.held_out_scenes(48)
    assert all(scenes.is_held_out(s) for s in held)  # combinations never drawn for training
    report = measure_adherence(model, n=48)
    print(report.summary())
    assert report.both_rate >= 0.80, report.summary()
