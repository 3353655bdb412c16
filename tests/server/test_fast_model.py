"""The fast model (distilled from the embedded one: 2 steps, no guidance): it loads as a diffusers
folder sharing the embedded model's text encoder, tokenizer and VAE, keeps prompt adherence on
held-out prompts, and every operator family still bends it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bendbridge.server.model import EMBEDDED_MODEL, FAST_MODEL

pytestmark = pytest.mark.skipif(not (FAST_MODEL / "model_index.json").exists(), reason="fast model not exported")


@pytest.fixture(scope="module")
def fast():
    from bendbridge.server.model import load_model

    return load_model("fast", "cpu")


def test_the_fast_model_is_a_diffusers_folder_with_its_own_unet_and_the_embedded_models_other_parts(fast):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(
        FAST_MODEL, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    assert p.unet.config == fast.pipe.unet.config and fast.name == "fast"
    assert (fast.defaults.steps, fast.defaults.guidance) == (2, 1.0)
    for part in ("text_encoder", "tokenizer", "vae"):
        assert (FAST_MODEL / part).resolve() == (EMBEDDED_MODEL / part).resolve()  # shared, not copied
    own = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(FAST_MODEL) for f in files)  # no links
    assert own <= 5 * 1024 * 1024  # what it adds to the download-free install


@pytest.mark.slow
def test_both_named_colours_are_right_in_80_percent_of_48_held_out_prompts_in_two_steps(fast):
    from bendbridge.server.embedded.adherence import measure_adherence

    report = measure_adherence(fast, n=48)  # its defaults: 2 steps, no guidance
    print(report.summary())
    assert report.both_rate >= 0.80, report.summary()


@pytest.mark.slow
@pytest.mark.parametrize(
    "op, target, params",
    [
        ("add", "latent", {"value": 1.5}),
        ("rotate_plane", "latent", {"angle": 1.6, "plane": [0, 1]}),
        ("multiply", "down_blocks.1", {"factor": -1.0}),
        ("rotate", "mid_block", {"degrees": 90.0}),
        ("dilate", "up_blocks.1", {"size": 5}),
        ("threshold", "up_blocks.0", {"r": 2.0}),
    ],
)
def test_every_operator_family_bends_the_fast_model(fast, op, target, params):
    from bendbridge.protocol.plan import BendPlan
    from bendbridge.protocol.render import RenderSettings
    from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

    settings = RenderSettings(("a red circle on a blue background",), seed=3)
    plain = Renderer(fast, RenderConfig(settings)).render([FrameSpec()])[0].image
    plan = BendPlan.from_dict({"bend": [{"id": "b", "op": op, "target": target, "params": params}]})
    bent = Renderer(fast, RenderConfig(settings, plan)).render([FrameSpec()])[0]
    assert bent.ok
    assert np.abs(bent.image.astype(int) - plain.astype(int)).mean() > 4  # visibly bent
