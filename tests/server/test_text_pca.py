"""Movement-to-image (``pca_move``): a prompt set's PCA plane, the bend at (0, 0) being the equal mix
of the prompts, coordinates in units of the spread, and the mistakes a prompt set can have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.errors import PlanError
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.operators.text_pca import pca_plane
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer

PROMPTS = ("a red circle", "a blue square", "a green star", "a yellow triangle")


def plan(prompts=PROMPTS, **params) -> BendPlan:
    return BendPlan.from_dict(
        {
            "bend": [
                {
                    "id": "move",
                    "op": "pca_move",
                    "target": "text",
                    "params": {"prompts": prompts if isinstance(prompts, str) else list(prompts), **params},
                }
            ]
        }
    )


def test_the_plane_centre_is_the_mean_and_the_axes_are_orthonormal():
    e = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0))
    p = pca_plane(tuple("abcde"), e)
    assert torch.allclose(p.centre, e.mean(0), atol=1e-6)
    gram = p.axes.reshape(2, -1) @ p.axes.reshape(2, -1).T
    assert torch.allclose(gram, torch.eye(2), atol=1e-5)
    assert p.coordinates[0, 0] >= 0 and p.coordinates[0, 1] >= 0  # axes point to the first prompt's side
    assert p.explained[0] >= p.explained[1] > 0 and sum(p.explained) <= 1 + 1e-9


@settings(max_examples=30, deadline=None)
@given(x=st.floats(-4, 4), y=st.floats(-4, 4))
def test_a_point_of_the_plane_projects_back_to_its_coordinates(x, y):
    e = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1))
    p = pca_plane(tuple("abcd"), e)
    point = p.at(torch.tensor([x]), torch.tensor([y]))[0]
    back = (point - p.centre).reshape(-1) @ p.axes.reshape(2, -1).T / p.spread
    assert back.tolist() == pytest.approx([x, y], abs=1e-4)


def test_a_prompt_sits_at_its_coordinates_when_the_set_spans_only_the_plane():
    base, a, b = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(2))
    e = torch.stack([base + a, base - a, base + b, base - b])  # every prompt lies in one plane
    p = pca_plane(tuple("abcd"), e)
    for k in range(4):
        x, y = p.coordinates[k]
        assert torch.allclose(p.at(x[None], y[None])[0], e[k], atol=1e-4)


def test_at_the_origin_the_bend_is_the_equal_mix_of_the_prompts(tiny_model):
    settings = RenderSettings(PROMPTS, steps=3, guidance=2.0)
    moved = Renderer(tiny_model, RenderConfig(settings, plan(x=0.0, y=0.0)))
    mixed = Renderer(tiny_model, RenderConfig(settings))
    a = moved.render([FrameSpec(seed=4)])[0].image
    b = mixed.render([FrameSpec(seed=4, prompt_weights=(1.0,) * len(PROMPTS))])[0].image
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert moved.bound[0].bend.branch == "cond"  # the negative prompt keeps guiding


def test_frames_along_x_change_and_keep_their_own_coordinates(tiny_model):
    r = Renderer(tiny_model, RenderConfig(RenderSettings(("a red circle",), steps=3), plan()))
    frames = [FrameSpec(params={"move": {"x": x, "y": 0.5}}, seed=1) for x in (-1.0, 0.0, 1.0)]
    together = [f.image for f in r.render(frames)]
    alone = [r.render([f])[0].image for f in frames]
    for a, b in zip(together, alone):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.abs(together[0].astype(int) - together[2].astype(int)).mean() > 0.5


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        (["a red circle", "a blue square"], r"bend\[0\]\.params\.prompts: 2 prompts; a PCA plane needs 3 to 64"),
        (["a red circle", "a red circle", "a red circle"], r"1 distinct prompts after encoding; a PCA plane needs 3"),
        ("@/nonexistent/set.txt", r"bend\[0\]\.params\.prompts: no such prompt file"),
    ],
)
def test_a_prompt_set_too_small_for_pca_is_named(tiny_model, prompts, match):
    with pytest.raises(PlanError, match=match):
        Renderer(tiny_model, RenderConfig(RenderSettings(("a red circle",), steps=3), plan(prompts)))


def test_a_prompt_file_gives_the_same_plane_as_the_list(tiny_model, tmp_path):
    f = tmp_path / "set.txt"
    f.write_text("\n".join(PROMPTS) + "\n\n")
    from_file = Renderer(tiny_model, RenderConfig(RenderSettings(("x",), steps=2), plan(f"@{f}")))
    from_list = Renderer(tiny_model, RenderConfig(RenderSettings(("x",), steps=2), plan()))
    a, b = (r.bound[0].static["prompts"].plane for r in (from_file, from_list))
    assert a.prompts == b.prompts and torch.equal(a.axes, b.axes)
