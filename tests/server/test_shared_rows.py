"""Rows shared inside the first bent step: U-Net stages before the first module bend run once per
distinct frame start, and the images are those of the unshared path."""

from __future__ import annotations

import numpy as np
import pytest

from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.render._shared_rows import SplitPoint, row_sharing, split_point, unet_stages

PROMPTS = ("a red circle on a blue background", "a yellow star on a purple background")


def renderer(pipe, specs, **kw) -> Renderer:
    """A renderer on the tiny pipeline: render settings and RenderConfig options from ``kw``."""
    settings = {"steps": 3, "guidance": 3.0, "prompts": PROMPTS} | {
        k: kw.pop(k) for k in list(kw) if k in RENDER_FIELDS
    }
    return Renderer(LoadedModel(pipe), RenderConfig(RenderSettings(**settings), BendPlan.from_specs(list(specs)), **kw))


def amps(n: int, **kw) -> list[FrameSpec]:
    return [FrameSpec(params={"amp": {"factor": 0.6 + 0.2 * i}}, **kw) for i in range(n)]


def turns(n: int) -> list[FrameSpec]:
    return [FrameSpec(params={"amp": {"degrees": 20.0 * i}}) for i in range(n)]


def assert_same_images(a, b) -> None:
    assert all(
        np.abs(x.image.astype(int) - y.image.astype(int)).max() <= 2 for x, y in zip(a, b)
    )  # batch-size rounding


@pytest.mark.parametrize(
    "target,split",
    [
        ("up_blocks.1", SplitPoint(4, at_input=False)),  # a whole block: widened at its output
        ("up_blocks.0.resnets.1", SplitPoint(3, at_input=True)),  # nested: widened at the block's input
        ("down_blocks.1", SplitPoint(1, at_input=False)),  # a down block's output carries skip connections
        ("mid_block", SplitPoint(2, at_input=False)),
    ],
)
def test_the_first_bent_step_computes_the_stages_before_the_bend_once_and_gives_the_same_images(
    tiny_pipe, unet_calls, target, split
):
    spec = f"rotate:degrees=0@{target}:id=amp"  # a spatial turn survives the group norms after any block
    shared, unshared = renderer(tiny_pipe, [spec]), renderer(tiny_pipe, [spec], share_prefix=False)
    assert shared.split == split
    unet_calls.calls.clear()  # binding the plan measured the layers with one dry run
    a = shared.render(turns(6))
    assert unet_calls.calls == [2, 12, 12]  # step 0: one uncond and one cond row; steps 1-2: all 6 frames' rows
    unet_calls.calls.clear()
    b = unshared.render(turns(6))
    assert unet_calls.calls == [12, 12, 12]
    assert_same_images(a, b)
    assert len({x.image.tobytes() for x in a}) == 6  # each frame keeps its own bend


def test_frames_with_different_starts_get_one_row_each(tiny_pipe, unet_calls):
    frames = [FrameSpec(params={"amp": {"factor": 0.5 + 0.3 * i}}, seed=i % 2) for i in range(5)]
    frames[4] = FrameSpec(params={"amp": {"factor": 1.4}}, seed=0, prompt_weights=(1.0, 1.0))
    spec = "multiply:factor=1@up_blocks.0:id=amp"
    r = renderer(tiny_pipe, [spec])
    unet_calls.calls.clear()
    a = r.render(frames)
    assert unet_calls.calls[0] == 2 * 3  # (seed 0), (seed 1), (seed 0, mixed prompts); both branches
    b = [renderer(tiny_pipe, [spec], share_prefix=False).render([f])[0] for f in frames]
    assert_same_images(a, b)


def test_sharing_starts_after_the_shared_prefix_and_works_without_guidance(tiny_pipe, unet_calls):
    spec = "multiply:factor=1@up_blocks.1:steps=1-2:id=amp"
    r = renderer(tiny_pipe, [spec], guidance=1.0)
    assert r.prefix_steps == 1 and r.split is not None
    unet_calls.calls.clear()
    a = r.render(amps(4))
    assert unet_calls.calls == [1, 1, 4]  # the prefix (step 0), step 1 shared up to up_blocks.1, step 2
    assert_same_images(a, renderer(tiny_pipe, [spec], guidance=1.0, share_prefix=False).render(amps(4)))


@pytest.mark.parametrize(
    "specs",
    [
        [
            "multiply:factor=1@up_blocks.1:id=amp",
            "rotate_plane:angle=1@latent:step=0",
        ],  # the latent differs before the U-Net
        ["multiply:factor=1@up_blocks.1:id=amp", "weight:delta=0.5@text:word=red"],  # so does the text
        ["multiply:factor=1@conv_in:id=amp"],  # bent before the first stage
        ["rotate_plane:angle=1@latent:step=1"],  # no module bend
    ],
)
def test_no_rows_are_shared_when_they_differ_before_the_first_stage(tiny_pipe, specs):
    assert renderer(tiny_pipe, specs).split is None


def test_every_frame_distinct_or_sharing_off_runs_all_rows(tiny_pipe, unet_calls):
    r = renderer(tiny_pipe, ["multiply:factor=1@up_blocks.1:id=amp"])
    unet_calls.calls.clear()
    r.render([FrameSpec(seed=i) for i in range(3)])
    assert unet_calls.calls == [6, 6, 6]
    assert renderer(tiny_pipe, ["multiply:factor=1@up_blocks.1:id=amp"], share_prefix=False).split is None


def test_no_hook_is_left_behind(tiny_pipe):
    renderer(tiny_pipe, ["multiply:factor=1@down_blocks.1:id=amp"]).render(amps(3))
    for m in tiny_pipe.unet.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._forward_pre_hooks_with_kwargs


def test_split_point_takes_the_earliest_stage_and_a_nested_bend_moves_it_to_the_input():
    stages = ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1", "conv_out"]
    assert split_point(stages, ["up_blocks.1", "mid_block"]) == SplitPoint(2, False)
    assert split_point(stages, ["mid_block", "mid_block.resnets.0"]) == SplitPoint(2, True)
    assert split_point(stages, ["up_blocks.10"]) is None  # not up_blocks.1's child
    assert split_point(stages, ["conv_in", "up_blocks.1"]) is None
    assert split_point(stages, []) is None


def test_row_sharing_maps_each_guided_row_to_its_starts_row():
    s = row_sharing(["a", "b", "a", "a"], guided=True, device="cpu")
    assert s.compute.tolist() == [0, 1, 4, 5]  # uncond a, uncond b, cond a, cond b
    assert s.widen.tolist() == [0, 1, 0, 0, 2, 3, 2, 2]
    assert row_sharing(["a", "b"], guided=True, device="cpu") is None
    assert row_sharing(["a", "a"], guided=False, device="cpu").compute.tolist() == [0]


def test_stages_follow_the_unets_execution_order(tiny_pipe):
    assert unet_stages(tiny_pipe.unet) == [
        "down_blocks.0",
        "down_blocks.1",
        "mid_block",
        "up_blocks.0",
        "up_blocks.1",
        "conv_norm_out",
        "conv_act",
        "conv_out",
    ]
