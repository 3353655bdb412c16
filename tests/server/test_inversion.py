"""DDIM inversion: the step's coefficients, recovering a DDIM trajectory, starting frames from
pictures (order, start step, bends), the reconstruction numbers and the ``invert`` sheet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.render.inversion import (
    ddim_scheduler,
    encode_images,
    invert,
    reconstruction_error,
    start_from,
    step_coefficients,
)

STEPS = 6


def renderer(model, guidance: float = 1.0, plan: BendPlan | None = None, **kw) -> Renderer:
    settings = RenderSettings(("a red circle on a blue background",), steps=STEPS, guidance=guidance)
    return Renderer(model, RenderConfig(settings, plan or BendPlan(), **kw))


@settings(max_examples=25, deadline=None)
@given(step=st.integers(0, STEPS - 1), x=st.floats(-3, 3), m=st.floats(-3, 3))
def test_a_ddim_step_is_its_two_coefficients(tiny_pipe, step, x, m):
    sched = ddim_scheduler(tiny_pipe.scheduler, STEPS, torch.device("cpu"))
    t = sched.timesteps[step]
    c_x, c_m = step_coefficients(sched, t)
    sample, output = torch.full((1, 4, 2, 2), x, dtype=torch.float64), torch.full((1, 4, 2, 2), m, dtype=torch.float64)
    assert sched.step(output, t, sample).prev_sample[0, 0, 0, 0].item() == pytest.approx(c_x * x + c_m * m, abs=1e-9)


def test_inverting_a_ddim_trajectory_recovers_its_latent_at_the_start_step(tiny_model):
    r = renderer(tiny_model)
    start = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    frame = FrameSpec(start_latent=start[0], start_step=2)
    clean = r.denoise([frame]).latents  # DDIM from step 2 to the end
    errors = {}
    for iterations in (1, 10):
        back = invert(r, clean, [FrameSpec()], InversionSettings(to_step=2, iterations=iterations))
        errors[iterations] = float((back - start).norm() / start.norm())
    assert errors[10] < 1e-3  # the fixed point is the latent the trajectory passed through
    assert errors[10] < errors[1] / 10  # plain DDIM inversion is only an approximation


def test_inverting_to_the_last_step_is_the_clean_latent_itself(tiny_model):
    r = renderer(tiny_model)
    clean = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(invert(r, clean, [FrameSpec(), FrameSpec()], InversionSettings(to_step=STEPS)), clean)


def test_frames_from_pictures_and_from_noise_render_together_in_input_order(tiny_model):
    r = renderer(tiny_model, max_batch=4)
    pictures = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    started = start_from(r, pictures, [FrameSpec(), FrameSpec()], InversionSettings(to_step=3, iterations=2))
    assert [f.start_step for f in started] == [3, 3] and started[0].start_latent.shape == (4, 16, 16)
    mixed = [FrameSpec(seed=5), started[1], FrameSpec(seed=6), started[0]]
    together = [x.image for x in r.render(mixed)]
    alone = [r.render([f])[0].image for f in mixed]
    for a, b in zip(together, alone):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_a_picture_that_is_not_the_render_size_is_named(tiny_model):
    r = renderer(tiny_model)
    with pytest.raises(BendbridgeError, match=r"image: expected pictures of 64×64 RGB, got shape \(1, 32, 32, 3\)"):
        encode_images(r, np.zeros((1, 32, 32, 3), np.uint8))


def test_a_bend_that_acts_only_before_the_start_step_is_refused(tiny_model):
    plan = BendPlan.from_specs(["add:value=1@latent:step=1"])
    r = renderer(tiny_model, plan=plan)
    with pytest.raises(BendbridgeError, match=r"bend\[0\]\.step: acts only before step 3, .*--invert-to 3"):
        start_from(r, np.zeros((1, 64, 64, 3), np.uint8), [FrameSpec()], InversionSettings(to_step=3))


@pytest.mark.parametrize(
    ("inversion", "match"),
    [
        (InversionSettings(to_step=7), r"invert\.to_step: 7 is not a step of this render: 0…6"),
        (InversionSettings(iterations=0), r"invert\.iterations: 0 is outside 1…50"),
        (InversionSettings(guidance=0.5), r"invert\.guidance: 0\.5 is outside 1…30"),
    ],
)
def test_inversion_settings_out_of_range_are_named(inversion, match):
    with pytest.raises(BendbridgeError, match=match):
        inversion.check(STEPS)


def test_reconstruction_error_is_mean_absolute_levels_and_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    e = reconstruction_error(a, b)
    assert e.mean_abs == 10.0 and e.psnr == pytest.approx(10 * np.log10(255**2 / 100))
    assert reconstruction_error(a, a).psnr == float("inf")


@pytest.mark.slow
def test_a_drawn_scene_inverted_without_guidance_comes_back_as_well_as_the_vae_allows(tmp_path):
    """The embedded model: at guidance 1 with 8 fixed-point iterations the reconstruction is within
    one level (mean absolute, 0–255) of the VAE's own round trip; the CLI draws the sheet."""
    from PIL import Image

    from bendbridge.server.embedded import scenes
    from bendbridge.tools.cli import main

    scene = scenes.held_out_scenes(1, seed=11)[0]
    Image.fromarray(scenes.render_scene(scene)).save(tmp_path / "drawn.png")
    out = tmp_path / "sheet.png"
    argv = ["invert", "--image", str(tmp_path / "drawn.png"), "--prompt", scenes.caption(scene), "--guidance", "1"]
    assert main([*argv, "--invert-iterations", "8", "--out", str(out)]) == 0
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert numbers["reconstruction"]["mean_abs"] < numbers["vae_only"]["mean_abs"] + 1.0
    assert numbers["invert_to"] == 0 and numbers["iterations"] == 8 and numbers["guidance"] == 1.0
    with Image.open(out) as sheet:
        assert sheet.width > 4 * 128  # four panels
