"""The shared denoising prefix: steps before the first bend run once per (seed, angle, prompt mix)."""

from __future__ import annotations

import numpy as np
import pytest

from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

PROMPTS = ("a red circle on a blue background", "a yellow star on a purple background")


def renderer(pipe, specs, **kw) -> Renderer:
    """A renderer on the tiny pipeline: render settings and RenderConfig options from ``kw``."""
    settings = {"steps": 4, "guidance": 3.0, "prompts": PROMPTS} | {
        k: kw.pop(k) for k in list(kw) if k in RENDER_FIELDS
    }
    return Renderer(LoadedModel(pipe), RenderConfig(RenderSettings(**settings), BendPlan.from_specs(list(specs)), **kw))


def spins(n: int, **kw) -> list[FrameSpec]:
    return [FrameSpec(params={"spin": {"angle": 0.4 * i}}, **kw) for i in range(n)]


def test_the_unbent_prefix_is_denoised_once_and_gives_the_same_images(tiny_pipe, unet_calls):
    shared = renderer(tiny_pipe, ["rotate_plane:angle=0@latent:step=3:id=spin"])
    assert shared.prefix_steps == 3
    a = np.stack([r.image for r in shared.render(spins(8))])
    assert unet_calls.rows == 3 * 2 + 1 * 16  # steps 0-2 once (cond + uncond), step 3 for all 8 frames
    unet_calls.calls.clear()
    full = renderer(tiny_pipe, ["rotate_plane:angle=0@latent:step=3:id=spin"], share_prefix=False)
    b = np.stack([r.image for r in full.render(spins(8))])
    assert unet_calls.rows == 4 * 16
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # batch-size rounding only
    assert len({img.tobytes() for img in a}) == 8  # the bend still differs per frame


def test_a_later_batch_reuses_the_cached_prefix(tiny_pipe, unet_calls):
    r = renderer(
        tiny_pipe,
        ["multiply:factor=1@up_blocks.0:steps=2-3:id=spin_free", "rotate_plane:angle=0@latent:step=3:id=spin"],
    )
    assert r.prefix_steps == 2  # the module bend starts at step 2
    r.render(spins(4))
    unet_calls.calls.clear()
    r.render(spins(4))
    # step 2: the stages before up_blocks.0 once (see test_shared_rows), step 3: every frame's rows
    assert unet_calls.rows == 2 + 8 and r.prefix.computed == 1 and r.prefix.reused == 1


def test_each_seed_angle_and_prompt_mix_gets_its_own_prefix(tiny_pipe):
    r = renderer(tiny_pipe, ["rotate_plane:angle=0@latent:step=2:id=spin"])
    frames = [
        FrameSpec(seed=0),
        FrameSpec(seed=1),
        FrameSpec(seed=0, noise_angle=0.5),
        FrameSpec(seed=0, prompt_weights=(1.0, 1.0)),
        FrameSpec(seed=1),
    ]
    shared = [x.image for x in r.render(frames)]
    alone = [
        renderer(tiny_pipe, ["rotate_plane:angle=0@latent:step=2:id=spin"], share_prefix=False).render([f])[0].image
        for f in frames
    ]
    assert r.prefix.computed == 4
    assert all(np.abs(x.astype(int) - y.astype(int)).max() <= 2 for x, y in zip(shared, alone))
    assert np.array_equal(shared[1], shared[4])


@pytest.mark.parametrize(
    "specs,kw",
    [
        (["weight:delta=0.5@text:word=red"], {}),  # text bends change the conditioning from step 0
        (["rotate_plane:angle=1@latent:step=0"], {}),
        (["rotate_plane:angle=1@latent:step=2"], {"scheduler": "dpm"}),  # multistep history is per sample
        (["rotate_plane:angle=1@latent:step=2"], {"share_prefix": False}),
    ],
)
def test_sharing_is_off_when_a_bend_acts_from_the_start_or_the_scheduler_keeps_history(tiny_pipe, specs, kw):
    assert renderer(tiny_pipe, specs, **kw).prefix_steps == 0


def test_a_plan_without_bends_shares_the_whole_trajectory(tiny_pipe, unet_calls):
    r = renderer(tiny_pipe, [])
    assert r.prefix_steps == 4
    imgs = r.render([FrameSpec()] * 6)
    assert unet_calls.rows == 4 * 2 and all(np.array_equal(i.image, imgs[0].image) for i in imgs)
