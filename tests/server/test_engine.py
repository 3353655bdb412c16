"""Hooks, per-frame parameters and the batched renderer on a tiny random-weight SD pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bendbridge.protocol.operators import OperatorSpec, ParamSpec
from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.render import RENDER_FIELDS, RenderSettings
from bendbridge.server.bending import BendEngine, FrameParamError, bind_plan, install_hooks
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

PROMPT = ("a red circle on a blue background",)


def renderer(pipe, specs=(), **kw) -> Renderer:
    """A renderer on the tiny pipeline: render settings and RenderConfig options from ``kw``."""
    settings = {"steps": 3, "guidance": 3.0, "prompts": PROMPT} | {k: kw.pop(k) for k in list(kw) if k in RENDER_FIELDS}
    return Renderer(LoadedModel(pipe), RenderConfig(RenderSettings(**settings), BendPlan.from_specs(list(specs)), **kw))


def images(results) -> np.ndarray:
    return np.stack([r.image for r in results])


def _hook_count(unet) -> int:
    return sum(len(m._forward_hooks) for m in unet.modules())


def test_identity_plan_is_bit_identical_to_no_plan(tiny_pipe):
    identity = [
        "add:value=0@mid_block",
        "multiply:factor=1@up_blocks.0.resnets.0:steps=0-1",
        "rotate_plane:angle=0@latent:step=0",
        "rotate:degrees=0@down_blocks.1",
        "dilate:size=1@conv_in",
        "weight:delta=0@text:word=red",
        "rotate_r6@latent:step=3",
        "noise:std=0@mid_block.resnets.0",
        "translate:tx=0:ty=0@up_blocks.1",
        "hadamard@latent:step=1:mix=0",
    ]
    plain = images(renderer(tiny_pipe).render([FrameSpec(seed=s) for s in (0, 1)]))
    bent = images(renderer(tiny_pipe, identity).render([FrameSpec(seed=s) for s in (0, 1)]))
    assert np.array_equal(plain, bent)


def test_a_real_bend_changes_the_frame_and_the_same_seed_gives_the_same_frame(tiny_pipe):
    r = renderer(tiny_pipe, ["rotate_plane:angle=0@latent:step=0"])
    a = images(r.render([FrameSpec(params={"rotate_plane": {"angle": 1.5}})]))
    b = images(r.render([FrameSpec(params={"rotate_plane": {"angle": 1.5}})]))
    c = images(r.render([FrameSpec()]))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_per_sample_parameters_in_one_batch_match_rendering_each_frame_alone(tiny_pipe):
    specs = [
        "rotate_plane:angle=0@latent:step=1",
        "multiply:factor=1@mid_block:steps=0-1",
        "dilate:size=1@up_blocks.0",
        "weight:delta=0@text:word=red",
    ]
    frames = [
        FrameSpec(
            params={
                "rotate_plane": {"angle": a},
                "multiply": {"factor": f},
                "dilate": {"size": k},
                "weight": {"delta": d},
            }
        )
        for a, f, k, d in [(0.0, 1.0, 1, 0.0), (0.8, 1.5, 3, 1.0), (2.0, 0.5, 1, -0.5), (0.0, 1.0, 5, 2.0)]
    ]
    r = renderer(tiny_pipe, specs, max_batch=8)
    together = images(r.render(frames))
    alone = images([r.render([f])[0] for f in frames])
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1
    assert len({f.tobytes() for f in together}) == 4


def test_hooks_are_gone_after_an_exception_inside_the_context(tiny_pipe):
    r = renderer(tiny_pipe, ["add:value=1@mid_block", "multiply:factor=2@up_blocks.0"])
    before = _hook_count(tiny_pipe.unet)
    with pytest.raises(RuntimeError, match="boom"):
        with install_hooks(tiny_pipe.unet, r.engine) as handles:
            assert len(handles) == 2 and _hook_count(tiny_pipe.unet) == before + 2
            raise RuntimeError("boom")
    assert _hook_count(tiny_pipe.unet) == before


def test_hooks_installed_before_a_failure_halfway_are_removed(tiny_pipe):
    r = renderer(tiny_pipe, ["add:value=1@mid_block", "multiply:factor=2@up_blocks.0"])
    bound = list(r.bound)
    # a bend bound to another model: its module is missing here, so installation fails on it
    broken = type(bound[1])(1, bound[1].bend, bound[1].spec, bound[1].fn, "no_such.module", None, 32, 4)
    engine = BendEngine([bound[0], broken])
    before = _hook_count(tiny_pipe.unet)
    with pytest.raises(PlanError, match="'no_such.module' is not in this U-Net"):
        with install_hooks(tiny_pipe.unet, engine):
            pass
    assert _hook_count(tiny_pipe.unet) == before


def test_a_failing_render_leaves_no_hooks_behind(tiny_pipe):
    r = renderer(tiny_pipe, ["add:value=1@mid_block"])
    before = _hook_count(tiny_pipe.unet)
    with pytest.raises(FrameParamError):
        r.render([FrameSpec(params={"add": {"value": float("inf")}})])
    r.render([FrameSpec()])
    assert _hook_count(tiny_pipe.unet) == before


def test_module_bends_act_only_during_their_step_range(tiny_pipe):
    plain = images(renderer(tiny_pipe).render([FrameSpec()]))
    with pytest.raises(
        PlanError, match=r"bend\[0\]\.steps: range starts at step 3 but there are only 3 steps \[0, 2\]"
    ):
        renderer(tiny_pipe, ["multiply:factor=3@mid_block:steps=3-9"])
    early = images(renderer(tiny_pipe, ["multiply:factor=3@mid_block:steps=0-0"]).render([FrameSpec()]))
    late = images(renderer(tiny_pipe, ["multiply:factor=3@mid_block:steps=2-2"]).render([FrameSpec()]))
    assert not np.array_equal(early, plain) and not np.array_equal(late, plain) and not np.array_equal(early, late)


def test_cfg_branches_bend_different_rows(tiny_pipe):
    outs = {
        b: images(renderer(tiny_pipe, [f"multiply:factor=2@mid_block:branch={b}"]).render([FrameSpec()]))
        for b in ("both", "cond", "uncond")
    }
    assert len({o.tobytes() for o in outs.values()}) == 3
    # without guidance there is no unconditional branch: an uncond bend does nothing
    no_cfg_plain = images(renderer(tiny_pipe, guidance=1.0).render([FrameSpec()]))
    no_cfg_uncond = images(
        renderer(tiny_pipe, ["multiply:factor=2@mid_block:branch=uncond"], guidance=1.0).render([FrameSpec()])
    )
    assert np.array_equal(no_cfg_plain, no_cfg_uncond)


def test_channel_subsets_leave_other_channels_untouched(tiny_pipe):
    r = renderer(tiny_pipe, ["multiply:factor=5@latent:step=3:channels=1,2"])
    latents = torch.randn(2, 4, 16, 16)
    r.engine.set_frames([{}, {}], guided=False)
    out = r.engine.bend_latent(latents, 3, "frames")
    assert torch.equal(out[:, [0, 3]], latents[:, [0, 3]])
    torch.testing.assert_close(out[:, [1, 2]], 5 * latents[:, [1, 2]])


def test_region_and_element_subsets_and_mix(tiny_pipe):
    r = renderer(
        tiny_pipe,
        [
            "add:value=1@latent:step=0:region=0,0,0.5,1",
            "add:value=1@latent:step=1:element_fraction=0.25:seed=3",
            "add:value=2@latent:step=2:mix=0.25",
        ],
    )
    x = torch.zeros(1, 4, 16, 16)
    r.engine.set_frames([{}], guided=False)
    a = r.engine.bend_latent(x, 0, "frames")
    assert a[..., :8].eq(1).all() and a[..., 8:].eq(0).all()
    frac = float(r.engine.bend_latent(x, 1, "frames").mean())
    assert 0.15 < frac < 0.35
    assert r.engine.bend_latent(x, 2, "frames").eq(0.5).all()


def test_word_weighting_touches_only_the_words_tokens(tiny_pipe):
    r = renderer(tiny_pipe, ["weight:delta=1@text:word=circle"])
    emb = r.embed(PROMPT[0]).unsqueeze(0)
    r.engine.set_frames([{}], guided=False)
    _, _, masks = r._frame_text([FrameSpec()])
    out = r.engine.bend_text(emb, "cond", masks)
    changed = (out != emb).any(-1)[0]
    ids = tiny_pipe.tokenizer(PROMPT[0]).input_ids
    assert changed.nonzero().flatten().tolist() == [
        ids.index(tiny_pipe.tokenizer("circle", add_special_tokens=False).input_ids[0])
    ]


def test_prompt_interpolation_and_noise_walk_are_per_frame(tiny_pipe):
    r = renderer(tiny_pipe, prompts=("a red circle", "a blue square"))
    a, b, mid = images(
        r.render([FrameSpec(prompt_weights=(1, 0)), FrameSpec(prompt_weights=(0, 1)), FrameSpec(prompt_weights=(1, 1))])
    )
    assert not np.array_equal(a, b) and not np.array_equal(mid, a)
    n0, n1 = images(r.render([FrameSpec(noise_angle=0.0), FrameSpec(noise_angle=0.5)]))
    assert np.array_equal(n0, a) and not np.array_equal(n1, a)
    with pytest.raises(PlanError, match=r"frames\[0\]\.prompt_weights: expected 2 finite weights"):
        r.render([FrameSpec(prompt_weights=(1.0,))])


def test_word_missing_from_every_prompt_is_an_error(tiny_pipe):
    with pytest.raises(PlanError, match=r"bend\[0\]\.word: 'banana' does not occur in any prompt"):
        renderer(tiny_pipe, ["weight:delta=1@text:word=banana"])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"nope": {"factor": 2}}, r"frames\[0\]\.nope: no bend with id 'nope'"),
        (
            {"multiply": {"size": 2}},
            r"frames\[0\]\.multiply\.size: not a per-frame parameter of 'multiply'.*factor, mix",
        ),
        (
            {"multiply": {"factor": float("nan")}},
            r"frames\[0\]\.multiply\.factor: nan is not finite; allowed a number in \[-10, 10\]",
        ),
        (
            {"multiply": {"factor": 1e6}},
            r"frames\[0\]\.multiply\.factor: 1000000\.0 is out of range; allowed \[-10, 10\]",
        ),
        ({"multiply": {"mix": 2}}, r"frames\[0\]\.multiply\.mix: 2 is out of range; allowed \[0, 1\]"),
    ],
)
def test_bad_frame_parameters_name_the_field_and_range(tiny_pipe, params, match):
    r = renderer(tiny_pipe, ["multiply:factor=1@mid_block"])
    with pytest.raises(FrameParamError, match=match):
        r.render([FrameSpec(params=params)])


def test_unknown_layer_suggests_the_nearest_names(tiny_pipe):
    with pytest.raises(PlanError, match=r"bend\[0\]\.target: unknown layer 'mid_blok'; did you mean mid_block"):
        renderer(tiny_pipe, ["add:value=1@mid_blok"])
    with pytest.raises(PlanError, match=r"layer index 999 out of range; this model has layers #0-#\d+"):
        renderer(tiny_pipe, ["add:value=1@#999"])


def test_binding_checks_steps_and_channels_against_the_model(tiny_pipe):
    with pytest.raises(PlanError, match=r"bend\[0\]\.step: step 7 is past the last; allowed \[0, 3\]"):
        renderer(tiny_pipe, ["add:value=1@latent:step=7"])
    with pytest.raises(
        PlanError, match=r"bend\[0\]\.channels: channel 9 out of range; the target has channels \[0, 3\]"
    ):
        renderer(tiny_pipe, ["add:value=1@latent:channels=9"])
    with pytest.raises(PlanError, match=r"rotate_r6 acts on exactly 4 channels"):
        renderer(tiny_pipe, ["rotate_r6@mid_block"])
    with pytest.raises(PlanError, match=r"params\.plane: \(0, 7\) is not a plane of 4 channels"):
        renderer(tiny_pipe, ["rotate_plane:plane=0,7:angle=1@latent"])


def test_layers_by_index_and_name_are_the_same_module(tiny_pipe):
    r = renderer(tiny_pipe)
    mid = next(layer for layer in r.layers if layer.name == "mid_block")
    a = images(renderer(tiny_pipe, ["multiply:factor=2@mid_block"]).render([FrameSpec()]))
    b = images(renderer(tiny_pipe, [f"multiply:factor=2@#{mid.index}"]).render([FrameSpec()]))
    assert np.array_equal(a, b)
    assert all(len(layer.shape) == 3 for layer in r.layers)
    assert [layer.index for layer in r.layers] == list(range(len(r.layers)))


def test_nan_producing_bends_are_reported_with_operator_and_value(tiny_pipe):
    def blow_up(x, k):
        return torch.where(x > 0, x * k.to(x).view(-1, 1, 1, 1) * float("inf"), x)

    spec = OperatorSpec("blow_up", "test", {"k": ParamSpec("float", 0.0, 0.0, 1.0, identity=0.0)})
    r = renderer(tiny_pipe, ["add:value=0@mid_block"])
    bb = r.bound[0]
    bend = bb.bend.__class__(id="boom", op="add", target=bb.bend.target, params={"k": 0.0})
    r.engine = BendEngine([type(bb)(0, bend, spec, blow_up, "mid_block", None, bb.width, 4)])
    res = r.render([FrameSpec(), FrameSpec(params={"boom": {"k": 1.0}})])
    assert res[0].ok and not res[0].faults
    assert res[1].nonfinite and not res[1].ok
    assert res[1].faults and res[1].faults[0].bend == "boom" and res[1].faults[0].params["k"] == 1.0
    assert "frame 1: bend 'boom'" in str(res[1].faults[0]) and "k=1" in str(res[1].faults[0])


def test_all_black_frames_are_flagged(tiny_pipe):
    r = renderer(tiny_pipe)
    imgs, nonfinite = r.decode(torch.full((1, 4, 16, 16), float("nan")))
    assert nonfinite.all() and imgs.max() == 0


def test_bind_plan_resolves_a_fraction_of_channels_deterministically(tiny_pipe):
    r = renderer(tiny_pipe)
    plan = BendPlan.from_specs(["add:value=1@mid_block:channel_fraction=0.25:seed=5"])
    a = bind_plan(plan, r.layers, latent_channels=4, text_dim=32, num_steps=3)[0].channels
    b = bind_plan(plan, r.layers, latent_channels=4, text_dim=32, num_steps=3)[0].channels
    assert a == b and len(a) == 8  # a quarter of mid_block's 32 channels
