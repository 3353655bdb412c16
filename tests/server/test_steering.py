"""Steering: the steer and sae_feature operators, steering-vector files, activation patching and
sparse autoencoders, on tiny random pipelines (shapes and bookkeeping) and the embedded model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.model import LoadedModel
from bendbridge.server.operators import get_operator
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.steering.caa import CAARequest, build_vectors
from bendbridge.server.steering.patching import PatchRequest, patch_map, rank_correlation
from bendbridge.server.steering.sae import SparseAutoencoder
from bendbridge.server.steering.vectors import SteerVectors

POS = ("a red star on a white background", "a red square on a white background")
NEG = ("a blue star on a white background", "a blue square on a white background")
ATTN = "down_blocks.1.attentions.0"
FEW = RenderSettings(("x",), steps=3, guidance=4.0)


def _steer(x, v, alpha, gate="none"):
    return get_operator("steer").fn(x, vector=v, alpha=torch.tensor(alpha, dtype=torch.float64), gate=gate)


def _sae_edit(x, sae, feature, scale, clamp):
    f = get_operator("sae_feature").fn
    return f(
        x,
        sae=sae,
        feature=feature,
        scale=torch.tensor(scale, dtype=torch.float64),
        clamp=torch.tensor(clamp, dtype=torch.float64),
    )


# ----------------------------------------------------------------------------- operators
@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4), st.integers(1, 8), st.booleans(), st.sampled_from(["none", "salience"]), st.integers(0, 2**16)
)
def test_steer_at_alpha_zero_is_identity(b, c, spatial, gate, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, 5, 6, generator=g)
    v = torch.randn(c, 5, 6, generator=g) if spatial else torch.randn(c, generator=g)
    assert torch.equal(_steer(x, v, [0.0] * b, gate), x)


def test_salience_gate_adds_the_full_vector_where_the_activation_stands_out_most_and_nothing_at_its_mean():
    x = torch.zeros(1, 3, 4, 4)
    x[0, :, 1, 2] = torch.tensor([3.0, 0.0, 4.0])  # the pixel that stands out
    x[0, :, 3, 3] = x[0, :, 1, 2] / 2
    v = torch.tensor([1.0, 2.0, -1.0])
    moved = _steer(x, v, [2.0], "salience") - x
    dev = (x - x.mean((2, 3), keepdim=True)).norm(dim=1)[0]
    mask = (dev / dev.max()) ** 2
    torch.testing.assert_close(moved[0], 2.0 * mask * v[:, None, None])
    torch.testing.assert_close(moved[0, :, 1, 2], 2.0 * v)
    assert float(mask.min()) >= 0 and float(mask.max()) == pytest.approx(1.0)


def test_steer_adds_each_frames_alpha_times_the_vector():
    x = torch.randn(3, 4, 2, 2)
    v = torch.tensor([1.0, -2.0, 0.5, 0.0])
    y = _steer(x, v, [0.0, 1.0, -2.5])
    for i, a in enumerate([0.0, 1.0, -2.5]):
        torch.testing.assert_close(y[i], x[i] + a * v[:, None, None])
    vs = torch.randn(4, 2, 2)
    torch.testing.assert_close(_steer(x, vs, [1.0, 1.0, 1.0]), x + vs)


def _sae(c=6, f=24, k=3, seed=0):
    sae = SparseAutoencoder(c, f, k, scale=1.7, seed=seed).requires_grad_(False)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
        sae.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
        sae.feature_max.fill_(3.0)
    return sae


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 23), st.integers(0, 2**16))
def test_sae_feature_with_unit_scale_and_no_clamp_is_identity(feature, seed):
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(_sae_edit(x, _sae(), feature, [1.0, 1.0], [-1.0, -1.0]), x)


def test_sae_feature_edit_is_the_decoded_edited_code_plus_the_reconstruction_error():
    sae = _sae()
    x = torch.randn(1, 6, 3, 3)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 6)
    z = sae.encode(pixels)
    f = int(z.sum(0).argmax())  # a feature that fires somewhere
    z2 = z.clone()
    z2[:, f] *= 2.5
    want = sae.decode(z2) + (pixels - sae.decode(z))
    got = _sae_edit(x, sae, f, [2.5], [-1.0]).permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sae_clamp_sets_the_feature_to_a_share_of_its_largest_activation():
    sae = _sae()
    x = torch.randn(1, 6, 3, 3)
    y = _sae_edit(x, sae, 5, [1.0], [0.5])
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 6)
    moved = y.permute(0, 2, 3, 1).reshape(-1, 6) - pixels
    a = sae.activation(pixels, 5)
    torch.testing.assert_close(moved, (1.5 - a)[:, None] * sae.direction(5)[None], rtol=1e-5, atol=1e-5)


def test_rank_correlation_is_one_for_the_same_order_and_minus_one_reversed():
    a = np.array([[0.1, 0.5], [0.9, -0.2]])
    assert rank_correlation(a, a * 3 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- vectors on a tiny pipeline
@pytest.fixture(scope="module")
def red_blue(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("steer") / "red_blue.safetensors"
    sv = build_vectors(tiny_model, CAARequest(POS, NEG, (ATTN, "up_blocks.0.attentions.1"), seeds=2), settings=FEW)
    sv.save(path)
    return path


def test_built_vectors_have_the_modules_channel_shape_and_record_their_making(red_blue):
    sv = SteerVectors.load(red_blue)
    assert set(sv.vectors) == {ATTN, "up_blocks.0.attentions.1"}
    assert sv.vectors[ATTN].shape == (1, 32)
    assert sv.meta["positive"] == list(POS) and sv.meta["steps"] == [0, 2] and sv.meta["broadcast"] == "channel"
    assert sv.meta["model"] == "in-memory" and len(sv.meta["model_id"]) == 32


def test_per_step_spatial_vectors_keep_one_vector_per_step(tiny_model):
    sv = build_vectors(
        tiny_model,
        CAARequest(POS, NEG, (ATTN,), steps="1-2", seeds=1, per_step=True, broadcast="spatial"),
        settings=FEW,
    )
    assert sv.vectors[ATTN].shape == (2, 32, 8, 8)


def test_difference_weighting_weights_pixels_by_how_much_the_sets_differ_there():
    from bendbridge.server.steering.caa import _pixel_mean

    d = torch.zeros(1, 2, 2, 2)
    d[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # |d| = 5 at one pixel, 0 elsewhere
    torch.testing.assert_close(_pixel_mean(d, "pixels"), torch.tensor([[0.75, 1.0]]))
    torch.testing.assert_close(_pixel_mean(d, "difference"), torch.tensor([[3.0, 4.0]]))


def test_the_vector_is_the_difference_of_the_two_sets_means(tiny_model):
    req = CAARequest(POS[:1], NEG[:1], (ATTN,), seeds=1, weighting="pixels")
    one = build_vectors(tiny_model, req, settings=FEW).vectors[ATTN]
    swapped = build_vectors(tiny_model, replace(req, positive=NEG[:1], negative=POS[:1]), settings=FEW).vectors[ATTN]
    torch.testing.assert_close(one, -swapped)
    same = build_vectors(tiny_model, CAARequest(POS[:1], POS[:1], (ATTN,), seeds=1), settings=FEW).vectors[ATTN]
    assert same.abs().max() == 0


def test_prompt_sets_larger_than_one_render_are_built_in_groups_with_the_same_means(tiny_model):
    req = CAARequest(POS[:1], NEG[:1], (ATTN,), seeds=1, weighting="pixels")
    one = build_vectors(tiny_model, req, settings=FEW).vectors[ATTN]
    many = replace(req, positive=POS[:1] * 40, negative=NEG[:1] * 40)  # 80 prompts: two renders
    torch.testing.assert_close(build_vectors(tiny_model, many, settings=FEW).vectors[ATTN], one, rtol=1e-4, atol=1e-5)


def _render(model, specs, alphas, prompt=POS[0]):
    plan = BendPlan.from_specs(specs)
    r = Renderer(model, RenderConfig(RenderSettings((prompt,), steps=3, guidance=4.0), plan))
    return [res.image for res in r.render([FrameSpec(params={"s": {"alpha": a}}) for a in alphas])]


def test_a_steer_bend_at_alpha_zero_renders_the_unbent_frame_and_alpha_moves_it(tiny_model, red_blue):
    plain = (
        Renderer(tiny_model, RenderConfig(RenderSettings((POS[0],), steps=3, guidance=4.0)))
        .render([FrameSpec()])[0]
        .image
    )
    zero, strong = _render(tiny_model, [f"steer:vector={red_blue}:alpha=0:gate=none@{ATTN}:id=s"], [0.0, 8.0])
    assert np.array_equal(zero, plain)
    assert np.abs(strong.astype(int) - plain).mean() > 1.0


def test_a_vector_made_on_another_model_is_refused(red_blue):
    from tests.conftest import make_tiny_pipeline

    other = LoadedModel(make_tiny_pipeline(seed=1))
    with pytest.raises(
        PlanError, match=r"bend\[0\]\.params\.vector: red_blue\.safetensors is a steering vector made on model"
    ):
        _render(other, [f"steer:vector={red_blue}:alpha=1@{ATTN}:id=s"], [1.0])


def test_a_vector_for_another_module_is_refused_naming_the_modules_it_holds(tiny_model, red_blue):
    with pytest.raises(
        PlanError, match=r"holds vectors for down_blocks\.1\.attentions\.0, up_blocks\.0\.attentions\.1, not for"
    ):
        _render(tiny_model, [f"steer:vector={red_blue}:alpha=1@up_blocks.0.attentions.0:id=s"], [1.0])


def test_a_spatial_vector_at_another_render_size_is_refused(tiny_model, tmp_path):
    sv = build_vectors(tiny_model, CAARequest(POS[:1], NEG[:1], (ATTN,), seeds=1, broadcast="spatial"), settings=FEW)
    sv.save(tmp_path / "s.safetensors")
    plan = BendPlan.from_specs([f"steer:vector={tmp_path / 's.safetensors'}:alpha=1@{ATTN}:id=s"])
    with pytest.raises(PlanError, match=r"has shape \(32, 8, 8\), the module's activation here is \(32, 16, 16\)"):
        Renderer(tiny_model, RenderConfig(RenderSettings((POS[0],), steps=3, width=128, height=128), plan))


def test_missing_and_foreign_files_are_refused(tiny_model, tmp_path):
    with pytest.raises(PlanError, match=r"bend\[0\]\.params\.vector: no such file 'nope\.safetensors'"):
        _render(tiny_model, [f"steer:vector=nope.safetensors:alpha=1@{ATTN}:id=s"], [1.0])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(PlanError, match=r"junk\.safetensors is not a safetensors file"):
        _render(tiny_model, [f"steer:vector={junk}:alpha=1@{ATTN}:id=s"], [1.0])
    sae_file = tmp_path / "sae.safetensors"
    _sae().save(sae_file, {"model": "x", "model_id": "y", "module": ATTN})
    with pytest.raises(PlanError, match=r"sae\.safetensors is not a bendbridge\.steer/1 file"):
        _render(tiny_model, [f"steer:vector={sae_file}:alpha=1@{ATTN}:id=s"], [1.0])


# ----------------------------------------------------------------------------- patching on a tiny pipeline
def test_patching_the_unets_last_layer_at_every_step_restores_the_clean_latent(tiny_model):
    req = PatchRequest(POS[0], NEG[0], "latent", targets=("conv_out", ATTN), steps=("all", "0"), seeds=(3,))
    pm = patch_map(tiny_model, req, settings=FEW)
    assert pm.targets == ["conv_out", ATTN] and pm.columns == ["all", "0"]
    assert pm.values[0, 0, 0] == pytest.approx(1.0, abs=1e-4)  # conv_out, all steps: the clean trajectory
    assert pm.values[0, 0, 1] < 1.0


def test_patching_is_deterministic(tiny_model):
    req = PatchRequest(
        POS[0], NEG[0], "pixels", targets=(ATTN, "up_blocks.0.attentions.1"), steps=("0", "1", "all"), seeds=(0, 1)
    )
    a, b = patch_map(tiny_model, req, settings=FEW), patch_map(tiny_model, req, settings=FEW)
    assert np.array_equal(a.values, b.values)
    assert a.values.shape == (2, 2, 3)


def test_patching_writes_a_heatmap_and_its_numbers(tiny_model, tmp_path):
    req = PatchRequest(POS[0], NEG[0], "latent", targets=(ATTN,), steps=("all",), seeds=(0, 1))
    out = patch_map(tiny_model, req, settings=FEW).save(tmp_path / "map.png")
    import json

    data = json.loads(out.read_text())
    assert (tmp_path / "map.png").stat().st_size > 5000
    assert data["targets"] == [ATTN] and len(data["restored_per_seed"]) == 2 and "seed_rank_correlation" in data


def test_bad_patch_requests_are_refused():
    from bendbridge.protocol.errors import BendbridgeError

    with pytest.raises(BendbridgeError, match=r"--metric: 'redness' is not valid; allowed: colour, shape"):
        PatchRequest("a", "b", "redness").check()
    with pytest.raises(BendbridgeError, match=r"--corrupt: is the clean prompt"):
        PatchRequest("a", "a").check()


# ----------------------------------------------------------------------------- sparse autoencoders on a tiny pipeline
@pytest.fixture(scope="module")
def tiny_sae(tiny_model, tmp_path_factory):
    from bendbridge.server.steering.sae_train import SAERequest, collect, train

    work = tmp_path_factory.mktemp("sae")
    req = SAERequest(ATTN, prompts=8, features=64, k=4, pixels=16, train_steps=60, batch=128)
    data = collect(tiny_model.__class__(tiny_model.pipe), req, work)
    sae, report = train(data["vectors"], req, work)
    path = work / "attn.safetensors"
    sae.save(path, {**data["meta"], "report": report})
    return path, data, report, work


def test_sae_training_collects_the_modules_vectors_and_reports_its_quality(tiny_sae):
    path, data, report, _ = tiny_sae
    assert data["vectors"].shape == (8 * 25 * 16, 32)  # prompts × steps × pixels, C
    assert data["maps"].shape == (8, 32, 8, 8) and data["images"].shape == (8, 64, 64, 3)
    assert 0 <= report["dead_share"] <= 1 and report["fraction_of_variance_unexplained"] < 1.0
    assert report["mean_active"] <= 4


def test_sae_training_resumes_from_its_checkpoint(tiny_model, tiny_sae):
    from bendbridge.server.steering.sae_train import SAERequest, train

    path, data, report, work = tiny_sae
    req = SAERequest(ATTN, prompts=8, features=64, k=4, pixels=16, train_steps=60, batch=128)
    again, report2 = train(data["vectors"], req, work)  # the checkpoint is at step 60: nothing to do
    assert report2 == report
    torch.testing.assert_close(again.W_dec, SparseAutoencoder.load(path).W_dec)


def test_an_sae_feature_bend_binds_and_a_wrong_feature_or_module_is_refused(tiny_model, tiny_sae):
    path = tiny_sae[0]
    s = RenderSettings((POS[0],), steps=3, guidance=4.0)
    plan = BendPlan.from_specs([f"sae_feature:sae={path}:feature=3:scale=4@{ATTN}:id=f"])
    assert len(Renderer(tiny_model, RenderConfig(s, plan)).render([FrameSpec()])) == 1
    with pytest.raises(
        PlanError, match=r"bend\[0\]\.params\.feature: 64 out of range; attn\.safetensors has features \[0, 63\]"
    ):
        Renderer(tiny_model, RenderConfig(s, BendPlan.from_specs([f"sae_feature:sae={path}:feature=64@{ATTN}"])))
    with pytest.raises(PlanError, match=r"was trained on 'down_blocks\.1\.attentions\.0', not on the bend's target"):
        Renderer(tiny_model, RenderConfig(s, BendPlan.from_specs([f"sae_feature:sae={path}@up_blocks.0.attentions.1"])))


# ----------------------------------------------------------------------------- the embedded model
@pytest.fixture(scope="module")
def embedded():
    from bendbridge.server.model import load_model

    return load_model("embedded", "cpu")


def test_the_scene_classifier_reads_fresh_ground_truth_scenes():
    from bendbridge.server.embedded import scenes
    from bendbridge.server.embedded.classifier import LABELS, load_classifier, scene_labels

    rng = np.random.default_rng(2024)
    chosen = [scenes.random_scene(rng, held_out=bool(i % 2)) for i in range(120)]
    probs = load_classifier().probabilities(np.stack([scenes.render_scene(s) for s in chosen]))
    for attr in LABELS:
        right = np.mean([probs[attr][i].argmax() == scene_labels(s)[attr] for i, s in enumerate(chosen)])
        assert right >= 0.97, (attr, right)
        np.testing.assert_allclose(probs[attr].sum(1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_patching_finds_colour_in_the_decoders_16px_attention_block(embedded):
    req = PatchRequest(
        "a red star on a white background", "a blue star on a white background", "colour",
        targets=("up_blocks.1.attentions.1", "down_blocks.2.attentions.0"), steps=("0-5",), seeds=(0,),
    )  # fmt: skip
    pm = patch_map(embedded, req)
    assert pm.values[0, 0, 0] > 0.9 and abs(pm.values[0, 1, 0]) < 0.2


@pytest.mark.slow
def test_the_shipped_red_vector_turns_held_out_foregrounds_redder_as_alpha_grows(embedded):
    from bendbridge.server.steering.evaluate import parse_watch, strength_sweep

    v = "red_blue.safetensors"
    plan = BendPlan.from_specs(
        [f"steer:vector={v}@up_blocks.1.attentions.{i}:branch=cond:steps=1-5:id=s{i}" for i in (0, 1)]
    )
    curve = strength_sweep(embedded, plan, "alpha", [0.0, 0.5, 1.0], parse_watch("fg=red"), prompts=8, sheet_prompts=0)
    p = curve.watched_prob
    assert p[0] < p[1] < p[2] and p[2] >= 0.15, p


@pytest.mark.slow
def test_the_shipped_autoencoders_stripes_feature_recolours_stripes_and_keeps_them_stripes(embedded):
    from bendbridge.server.embedded.classifier import load_classifier

    sae = "sae_up1_attn0.safetensors"
    plan = BendPlan.from_specs([f"sae_feature:sae={sae}:feature=297:scale=1@up_blocks.1.attentions.0:id=f"])
    r = Renderer(
        embedded,
        RenderConfig(RenderSettings(("medium orange stripes in the top on a green background",), seed=237), plan),
    )
    plain = Renderer(
        embedded, RenderConfig(RenderSettings(("medium orange stripes in the top on a green background",), seed=237))
    )
    unit = r.render([FrameSpec(params={"f": {"scale": 1.0}})])[0]
    edited = r.render([FrameSpec(params={"f": {"scale": -2.0}})])[0]
    assert np.array_equal(unit.image, plain.render([FrameSpec()])[0].image)  # scale 1 is the identity
    before, after = load_classifier().predict(np.stack([unit.image, edited.image]))
    assert before["shape"] == after["shape"] == "stripes" and before["bg"] == after["bg"]
    assert before["fg"] != after["fg"]


def test_the_steering_demo_config_binds_its_shipped_files_on_the_embedded_model(embedded):
    import tomllib

    from bendbridge.bridge.demo_song import DEMO_STEER_CONFIG, bundled_config
    from bendbridge.bridge.mapping import load_mapping

    config = tomllib.loads(bundled_config(DEMO_STEER_CONFIG))
    plan = BendPlan.from_dict({"bend": config["bend"]})
    mapping = load_mapping(config, plan)
    assert {(p.bend, p.name) for p in mapping.params} == {("redden", "alpha"), ("blue_out", "scale")}
    r = Renderer(embedded, RenderConfig(RenderSettings(tuple(config["render"]["prompts"])), plan))
    assert [bb.spec.name for bb in r.bound] == ["steer", "sae_feature"]


def test_region_metrics_score_only_the_region(tiny_model):
    from bendbridge.server.steering.patching import _scorer

    clean = np.zeros((8, 8, 3), np.uint8)
    other = clean.copy()
    other[:4] = 200  # differs in the top half only
    lat = torch.zeros(4, 2, 2)
    top = _scorer("mean-colour", (clean, lat), (other, lat), region=(0.0, 0.0, 1.0, 0.5))
    bottom = _scorer("pixels", (clean, lat), (other, lat), region=(0.0, 0.5, 1.0, 1.0))
    assert top(other[None], lat[None])[0] == pytest.approx(-np.linalg.norm([200.0] * 3))
    assert bottom(other[None], lat[None])[0] == 0.0
    req = PatchRequest(POS[0], NEG[0], "mean-colour", targets=(ATTN,), steps=("all",), region=(0.25, 0.25, 0.75, 0.75))
    assert patch_map(tiny_model, req, settings=FEW).values.shape == (1, 1, 1)


def test_a_region_with_a_classifier_metric_is_refused():
    from bendbridge.protocol.errors import BendbridgeError

    with pytest.raises(BendbridgeError, match=r"--region: limits the pixels and mean-colour metrics, not 'colour'"):
        PatchRequest("a", "b", "colour", region=(0, 0, 1, 1)).check()


def test_a_channel_subset_steers_only_those_channels_with_their_part_of_the_vector(tiny_model, red_blue):
    plan = BendPlan.from_specs([f"steer:vector={red_blue}:alpha=1:gate=none@{ATTN}:channels=0-7:id=s"])
    r = Renderer(tiny_model, RenderConfig(RenderSettings((POS[0],), steps=3, guidance=4.0), plan))
    v = r.bound[0].static_at(0, torch.device("cpu"), torch.float32)["vector"]
    torch.testing.assert_close(v, SteerVectors.load(red_blue).vectors[ATTN][0, :8])
    assert r.render([FrameSpec(params={"s": {"alpha": 2.0}})])[0].ok
