"""Low-rank adapters: the file (diffusers / peft convention), refusals, per-row weights, training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.adapters.lora import LoraAdapter, linear_modules, lora_delta
from bendbridge.server.adapters.train import AdaptRequest, TrainingImages, load_images, train_adapter
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.steering.files import unet_identity

PROMPT = "a red star on a white background"
FEW = RenderSettings((PROMPT,), steps=3, guidance=4.0)


def _random_adapter(unet: torch.nn.Module, rank: int = 4, seed: int = 0, scale: float = 0.2) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = dict(unet.named_modules())
    layers = {}
    for name in linear_modules(unet):
        lin = modules[name]
        a = torch.randn(rank, lin.in_features, generator=g) * scale
        layers[name] = (a, torch.randn(lin.out_features, rank, generator=g) * scale)
    return LoraAdapter(layers, {"model": "in-memory", "model_id": unet_identity(unet), "token": "zork"})


@pytest.fixture(scope="module")
def adapter_file(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora") / "zork.safetensors"
    _random_adapter(tiny_model.pipe.unet).save(path)
    return path


def _render(model, plan: BendPlan | None, weights, share_prefix: bool = False) -> list[np.ndarray]:
    r = Renderer(model, RenderConfig(FEW, plan or BendPlan(), share_prefix=share_prefix))
    frames = [FrameSpec(seed=3, params={"z": {"weight": w}} if plan else {}) for w in weights]
    return [res.image for res in r.render(frames)]


# ----------------------------------------------------------------------------- the update
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**16))
def test_the_update_is_weight_times_x_a_transpose_b_transpose_per_row(rows, rank, seed):
    g = torch.Generator().manual_seed(seed)
    x, a, b = torch.randn(rows, 3, 6, generator=g), torch.randn(rank, 6, generator=g), torch.randn(5, rank, generator=g)
    w = torch.randn(rows, generator=g)
    want = torch.stack([w[i] * x[i] @ a.T @ b.T for i in range(rows)])
    torch.testing.assert_close(lora_delta(x, a, b, w), want, rtol=1e-5, atol=1e-5)
    assert lora_delta(x, a, b, torch.zeros(rows)).abs().max() == 0


# ----------------------------------------------------------------------------- the file
def test_the_file_uses_the_diffusers_peft_keys_and_records_the_model(adapter_file):
    from safetensors import safe_open

    with safe_open(str(adapter_file), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight" in keys
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight" in keys
    assert '"unet.lora_alpha": 4' in meta["lora_adapter_metadata"] and '"unet.r": 4' in meta["lora_adapter_metadata"]
    back = LoraAdapter.load(adapter_file)
    assert not back.foreign and back.meta["token"] == "zork" and back.rank == 4


def test_diffusers_loads_the_file_and_renders_what_weight_one_renders(tiny_pipe, tiny_model, adapter_file):
    pytest.importorskip("peft")
    plan = BendPlan.from_specs([f"lora:adapter={adapter_file}:weight=1@unet:id=z"])
    ours = Renderer(tiny_model, RenderConfig(FEW, plan, share_prefix=False))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(2, 77, tiny_pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    ours.engine.set_frames([{}, {}], guided=False)
    from bendbridge.server.bending.engine import install_hooks

    with torch.no_grad(), install_hooks(tiny_pipe.unet, ours.engine):
        bent = tiny_pipe.unet(x, 500, emb).sample
    pipe = copy.deepcopy(tiny_pipe)
    pipe.load_lora_weights(str(adapter_file.parent), weight_name=adapter_file.name)
    with torch.no_grad():
        theirs = pipe.unet(x, 500, emb).sample
        base = tiny_pipe.unet(x, 500, emb).sample
    assert (bent - base).abs().max() > 1e-3
    torch.testing.assert_close(bent, theirs, rtol=1e-4, atol=1e-5)


def test_a_file_written_by_another_tool_is_read_with_its_alpha(tiny_model, tmp_path):
    from safetensors.torch import save_file

    unet = tiny_model.pipe.unet
    name = linear_modules(unet)[0]
    lin = dict(unet.named_modules())[name]
    a, b = torch.ones(2, lin.in_features), torch.ones(lin.out_features, 2)
    meta = {"format": "pt", "lora_adapter_metadata": '{"unet.r": 2, "unet.lora_alpha": 1}'}
    save_file(
        {f"unet.{name}.lora_A.weight": a, f"unet.{name}.lora_B.weight": b},
        str(tmp_path / "x.safetensors"),
        metadata=meta,
    )
    back = LoraAdapter.load(tmp_path / "x.safetensors")
    assert back.foreign
    torch.testing.assert_close(back.layers[name][1], b * 0.5)  # alpha / r folded into B


def test_a_file_without_unet_lora_layers_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_0.alpha": torch.ones(1)}, str(tmp_path / "kohya.safetensors"))
    with pytest.raises(PlanError, match=r"holds no U-Net LoRA layers in the diffusers / peft convention"):
        LoraAdapter.load(tmp_path / "kohya.safetensors")


def test_an_adapter_made_on_another_model_is_refused(tiny_model, adapter_file):
    from tests.conftest import make_tiny_pipeline

    torch.manual_seed(123)
    other = LoadedModel(make_tiny_pipeline(seed=7))
    plan = BendPlan.from_specs([f"lora:adapter={adapter_file}:weight=1@unet:id=z"])
    with pytest.raises(
        PlanError, match=r"bend\[0\]\.params\.adapter: zork\.safetensors is an adapter trained on model"
    ):
        Renderer(other, RenderConfig(FEW, plan))


def test_an_adapter_for_other_layer_shapes_is_refused_naming_the_layer(tiny_model, tmp_path):
    unet = tiny_model.pipe.unet
    bad = _random_adapter(unet)
    name = next(iter(bad.layers))
    a, b = bad.layers[name]
    bad.layers[name] = (torch.zeros(a.shape[0], a.shape[1] + 1), b)
    bad.meta = {}
    bad.save(tmp_path / "bad.safetensors")
    plan = BendPlan.from_specs([f"lora:adapter={tmp_path / 'bad.safetensors'}:weight=1@unet:id=z"])
    with pytest.raises(PlanError, match=rf"bend\[0\]\.params\.adapter: bad\.safetensors adapts {name} as"):
        _render(tiny_model, plan, [1.0])


# ----------------------------------------------------------------------------- as a bend
def test_weight_zero_renders_the_base_model_bit_for_bit(tiny_model, adapter_file):
    plan = BendPlan.from_specs([f"lora:adapter={adapter_file}:weight=0@unet:id=z"])
    base = _render(tiny_model, None, [0.0, 0.0])
    zero = _render(tiny_model, plan, [0.0, 0.0])
    mixed = _render(tiny_model, plan, [0.0, 1.5])
    assert all(np.array_equal(b, z) for b, z in zip(base, zero))
    assert np.array_equal(mixed[0], base[0]) and not np.array_equal(mixed[1], base[1])


def test_per_row_weights_in_one_batch_equal_each_frame_rendered_alone(tiny_model, adapter_file):
    plan = BendPlan.from_specs([f"lora:adapter={adapter_file}:weight=0@unet:id=z"])
    weights = [0.0, 0.5, -1.0, 2.0]
    batch = _render(tiny_model, plan, weights)
    for w, img in zip(weights, batch):
        alone = _render(tiny_model, plan, [w])[0]
        assert np.abs(alone.astype(int) - img.astype(int)).max() <= 1, w


def test_two_adapters_and_a_module_bend_combine_and_mix_scales_the_weight(tiny_model, adapter_file, tmp_path):
    other = tmp_path / "other.safetensors"
    _random_adapter(tiny_model.pipe.unet, seed=5).save(other)
    specs = [f"lora:adapter={adapter_file}:weight=1@unet:id=z", f"lora:adapter={other}:weight=1@unet:id=o"]
    both = _render(tiny_model, BendPlan.from_specs(specs), [1.0])[0]
    one = _render(tiny_model, BendPlan.from_specs(specs[:1]), [1.0])[0]
    assert not np.array_equal(both, one)
    half_mix = _render(tiny_model, BendPlan.from_specs([specs[0].replace("@unet", "@unet:mix=0.5")]), [1.0])[0]
    half_weight = _render(tiny_model, BendPlan.from_specs(specs[:1]), [0.5])[0]
    assert np.abs(half_mix.astype(int) - half_weight.astype(int)).max() <= 1
    bent = BendPlan.from_specs([specs[0], "multiply:factor=1.5@down_blocks.1.attentions.0"])
    assert not np.array_equal(_render(tiny_model, bent, [1.0])[0], one)


def test_an_adapter_from_step_k_shares_the_steps_before_it(tiny_model, adapter_file):
    plan = BendPlan.from_specs([f"lora:adapter={adapter_file}:weight=1@unet:steps=2-2:id=z"])
    r = Renderer(tiny_model, RenderConfig(FEW, plan))
    assert r.prefix_steps == 2
    shared = [res.image for res in r.render([FrameSpec(seed=3, params={"z": {"weight": w}}) for w in (0.0, 1.0)])]
    full = _render(tiny_model, plan, [0.0, 1.0])
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(shared, full))


# ----------------------------------------------------------------------------- training
def _images(n: int = 6, size: int = 32) -> TrainingImages:
    rng = np.random.default_rng(0)
    return TrainingImages(
        rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        [f"a zork {i}" for i in range(n)],
        [f"{i}.png" for i in range(n)],
    )


def test_training_resumed_from_its_checkpoint_ends_with_the_same_adapter(tiny_pipe, tmp_path):
    req = AdaptRequest("zork", rank=2, steps=6, batch=2, checkpoint_every=3, prior=2)
    straight = train_adapter(LoadedModel(copy.deepcopy(tiny_pipe)), _images(), req, tmp_path / "a")

    def killed_after_step_4(step: int, loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt  # the checkpoint of step 3 is on disk

    with pytest.raises(KeyboardInterrupt):
        train_adapter(
            LoadedModel(copy.deepcopy(tiny_pipe)), _images(), req, tmp_path / "b", progress=killed_after_step_4
        )
    resumed = train_adapter(LoadedModel(copy.deepcopy(tiny_pipe)), _images(), req, tmp_path / "b")
    for m, (a, b) in straight.layers.items():
        torch.testing.assert_close(resumed.layers[m][0], a)
        torch.testing.assert_close(resumed.layers[m][1], b)
    assert any(b.abs().max() > 0 for _, b in straight.layers.values())  # it learned something
    assert straight.meta["token"] == "zork" and straight.meta["model_id"] == unet_identity(tiny_pipe.unet)


def test_training_leaves_the_base_model_untouched(tiny_pipe, tmp_path):
    pipe = copy.deepcopy(tiny_pipe)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    train_adapter(LoadedModel(pipe), _images(), AdaptRequest("zork", rank=2, steps=2, batch=2, prior=0), tmp_path)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    assert not any(m._forward_hooks for m in pipe.unet.modules())


def test_images_of_any_size_are_resized_and_centre_cropped_and_sidecar_captions_win(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 100), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("RGB", (50, 80), (0, 0, 255)).save(tmp_path / "tall.jpg")
    (tmp_path / "tall.txt").write_text("a blue zork\n")
    imgs = load_images(tmp_path, (32, 32), "a {token}", "zork")
    assert imgs.pixels.shape == (2, 32, 32, 3) and imgs.names == ["tall.jpg", "wide.png"]
    assert imgs.captions == ["a blue zork", "a zork"]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"token": "two words"}, r"--token: 'two words': expected one word"),
        ({"rank": 0}, r"--rank: 0 is out of range \[1, 256\]"),
        ({"lr": 0.0}, r"--lr: 0.0 is out of range \(0, 1\]"),
        ({"caption": "a photo"}, r"--caption: 'a photo' must contain \{token\}"),
        ({"batch": 1}, r"--batch: with prior preservation or replay a batch needs at least 2 images"),
        ({"batch": 1, "prior": 0, "replay": 4}, r"--batch: with prior preservation or replay a batch needs"),
        ({"replay": -1}, r"--replay: -1 is out of range \[0, 10000\]"),
    ],
)
def test_bad_training_requests_name_the_option(kwargs, says):
    with pytest.raises(BendbridgeError, match=says):
        AdaptRequest(**{"token": "zork", **kwargs}).check()


def test_a_folder_without_images_is_refused(tmp_path):
    with pytest.raises(BendbridgeError, match=r"--images: .* holds no \.png, \.jpg"):
        load_images(tmp_path, (32, 32), "a {token}", "zork")


# ----------------------------------------------------------------------------- continual
def _stage(tiny_pipe, tmp_path, strategy, earlier, name):
    from bendbridge.server.adapters.continual import after_stage, continual_setup
    from bendbridge.server.adapters.train import Objective

    model = LoadedModel(copy.deepcopy(tiny_pipe))
    req = AdaptRequest("zork", rank=2, steps=3, batch=2, seed=len(earlier), prior=0)
    setup = continual_setup(model, Objective(model, _images(), req), req, earlier, strategy) if earlier else None
    trained = train_adapter(model, _images(), req, tmp_path / name, setup=setup)
    return trained, after_stage(strategy, earlier, trained) if earlier else trained


def test_a_merged_adapter_is_the_sum_of_its_parts_and_keeps_mixed_ranks_through_a_file(tiny_model, tmp_path):
    from bendbridge.server.adapters.continual import merge_adapters

    unet = tiny_model.pipe.unet
    one, two = _random_adapter(unet, rank=2, seed=1), _random_adapter(unet, rank=3, seed=2)
    two.layers = dict(list(two.layers.items())[:5])  # the second adapts only some layers
    merged = merge_adapters([one, two])
    x = torch.randn(2, 7, merged.layers[next(iter(one.layers))][0].shape[1])
    for m, (a, b) in merged.layers.items():
        if a.shape[1] != x.shape[-1]:
            continue
        want = lora_delta(x, *one.layers[m], torch.ones(2))
        if m in two.layers:
            want = want + lora_delta(x, *two.layers[m], torch.ones(2))
        torch.testing.assert_close(lora_delta(x, a, b, torch.ones(2)), want, rtol=1e-5, atol=1e-5)
    merged.meta = one.meta
    merged.save(tmp_path / "merged.safetensors")
    back = LoraAdapter.load(tmp_path / "merged.safetensors")
    for m, (_, b) in merged.layers.items():
        torch.testing.assert_close(back.layers[m][1], b)  # per-layer alpha = rank: no rescaling


def test_orthogonal_continual_training_keeps_the_new_a_orthogonal_to_the_earlier(tiny_pipe, tmp_path):
    first, _ = _stage(tiny_pipe, tmp_path, "orthogonal", [], "one")
    new, merged = _stage(tiny_pipe, tmp_path, "orthogonal", [first], "two")
    for m, (a, _) in new.layers.items():
        assert (a @ first.layers[m][0].T).abs().max() < 1e-4, m
    assert merged.rank == 4 and set(merged.layers) == set(first.layers)
    assert len(merged.meta["stages"]) == 2


def test_relevant_training_changes_only_a_share_of_the_layers(tiny_pipe, tmp_path):
    from bendbridge.server.adapters.continual import RELEVANT_SHARE

    first, _ = _stage(tiny_pipe, tmp_path, "relevant", [], "one")
    new, merged = _stage(tiny_pipe, tmp_path, "relevant", [first], "two")
    assert len(new.layers) == round(RELEVANT_SHARE * len(first.layers))
    assert sum(a.shape[0] == 4 for a, _ in merged.layers.values()) == len(new.layers)


def _replay_stage(tiny_pipe, tmp_path, strategy, earlier, name, replay=3):
    from bendbridge.server.adapters.continual import continual_setup
    from bendbridge.server.adapters.train import Objective

    model = LoadedModel(copy.deepcopy(tiny_pipe))
    req = AdaptRequest("zork", rank=2, steps=3, batch=4, seed=1, prior=2, replay=replay)
    setup = continual_setup(model, Objective(model, _images(), req), req, earlier, strategy)
    return model, req, setup, train_adapter(model, _images(), req, tmp_path / name, setup=setup)


def test_the_teacher_context_swaps_the_trained_layers_for_the_teachers_and_keeps_the_frozen(tiny_model):
    from bendbridge.server.adapters.replay import stage_hooks
    from bendbridge.server.adapters.train import TrainSetup
    from bendbridge.server.bending.layers import module_hooks

    unet = tiny_model.pipe.unet
    frozen, trained, teacher = (_random_adapter(unet, seed=k).layers for k in (1, 2, 3))
    x = torch.randn(2, 4, 8, 8)
    t, emb = torch.tensor([10, 500]), torch.randn(2, 77, unet.config.cross_attention_dim)

    def out(*sets) -> torch.Tensor:
        summed = {m: (torch.cat([s[m][0] for s in sets]), torch.cat([s[m][1] for s in sets], 1)) for m in frozen}
        with module_hooks(unet, stage_hooks(summed, TrainSetup({}))[0], lambda i, n: KeyError(n)):
            return unet(x, t, emb).sample

    hooks, teach = stage_hooks(trained, TrainSetup({}, frozen=frozen, teacher=teacher))
    with torch.no_grad(), module_hooks(unet, hooks, lambda i, n: KeyError(n)):
        student = unet(x, t, emb).sample
        with teach():
            taught = unet(x, t, emb).sample
        again = unet(x, t, emb).sample
    with torch.no_grad():
        torch.testing.assert_close(student, out(frozen, trained), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(taught, out(frozen, teacher), rtol=1e-4, atol=1e-5)
    assert torch.equal(again, student)  # the context ends
    assert stage_hooks(trained, TrainSetup({}))[1] is None  # nothing to distil without frozen or teacher layers


def test_replay_renders_the_earlier_captions_as_the_earlier_adapter_renders_them(tiny_pipe, tmp_path):
    first, _ = _stage(tiny_pipe, tmp_path, "merge", [], "one")
    first.save(tmp_path / "one.safetensors")
    model, req, setup, _ = _replay_stage(tiny_pipe, tmp_path, "merge", [first], "two")
    assert setup.replay_captions == [[f"a zork {i}" for i in range(6)]]  # from the earlier adapter's stages
    assert set(setup.frozen) == set(first.layers) and not setup.teacher
    data = np.load(tmp_path / "two" / "replay.npz")
    assert list(data["captions"]) == ["a zork 0", "a zork 1", "a zork 2"]
    plan = BendPlan.from_specs([f"lora:adapter={tmp_path / 'one.safetensors'}:weight=1@unet:id=a"])
    r = Renderer(model, RenderConfig(RenderSettings(tuple(data["captions"]), width=32, height=32), plan))
    frames = [FrameSpec.of_prompt(i, 3, seed=(req.seed + 1) * 10_000 + i) for i in range(3)]
    for got, res in zip(data["pixels"], r.render(frames)):
        assert np.abs(got.astype(int) - res.image.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("batch", "prior", "replay", "teacher", "rows"),
    [(8, 2, 0, False, (4, 4, 0)), (8, 2, 2, True, (4, 1, 3)), (8, 0, 2, True, (4, 0, 4)), (8, 2, 2, False, (4, 4, 0)),
     (2, 2, 2, True, (1, 0, 1)), (16, 2, 2, True, (8, 2, 6)), (8, 0, 0, False, (8, 0, 0))],
)  # fmt: skip
def test_a_batch_gives_half_to_the_concept_and_shares_the_rest_between_prior_and_replay(
    tiny_model, batch, prior, replay, teacher, rows
):
    from contextlib import nullcontext

    from bendbridge.server.adapters.train import Objective

    req = AdaptRequest("zork", batch=batch, prior=prior, replay=replay)
    objective = Objective(
        tiny_model, _images(), req, _images(prior) if prior else None, _images(replay) if replay else None
    )
    objective.teacher = nullcontext if teacher else None
    assert objective.rows() == rows
    assert torch.isfinite(objective.loss(0))


def test_naive_replay_distils_from_the_adapter_it_goes_on_from_and_merged_stages_keep_their_captions(
    tiny_pipe, tmp_path
):
    from bendbridge.server.adapters.replay import earlier_captions

    first, _ = _stage(tiny_pipe, tmp_path, "naive", [], "one")
    _, _, setup, new = _replay_stage(tiny_pipe, tmp_path, "naive", [first], "two")
    for m, (a, b) in first.layers.items():
        assert torch.equal(setup.teacher[m][0], a) and torch.equal(setup.teacher[m][1], b)  # not trained
    assert any(not torch.equal(new.layers[m][1], b) for m, (_, b) in first.layers.items())
    captions = [f"a zork {i}" for i in range(6)]
    assert [s["captions"] for s in new.meta["stages"]] == [captions, captions]
    assert earlier_captions([new]) == [captions]  # two equal stage records count once
    old = LoraAdapter(first.layers, {**first.meta, "stages": [{"token": "zork"}]})  # stages without captions
    assert earlier_captions([old]) == [captions]  # its own training captions


def test_each_earlier_concept_is_replayed_n_times_and_a_merged_adapter_does_not_repeat_its_parts(tiny_model, tmp_path):
    from bendbridge.server.adapters.replay import earlier_captions, replay_images
    from bendbridge.server.adapters.train import TrainSetup

    def stage(token: str, n: int) -> dict:
        return {"token": token, "layers": 1, "rank": 2, "captions": [f"a {token} {i}" for i in range(n)]}

    one = LoraAdapter({}, {"stages": [stage("zork", 3)]})
    merged = LoraAdapter({}, {"stages": [stage("zork", 3), stage("blorp", 2)]})
    assert earlier_captions([one, merged]) == [["a zork 0", "a zork 1", "a zork 2"], ["a blorp 0", "a blorp 1"]]
    setup = TrainSetup({}, replay_captions=earlier_captions([one, merged]))
    images = replay_images(tiny_model, setup, (32, 32), AdaptRequest("x", replay=4), tmp_path)
    assert images.captions == ["a zork 0", "a zork 1", "a zork 2", "a zork 0", *["a blorp 0", "a blorp 1"] * 2]


def test_naive_continual_training_goes_on_from_the_earlier_adapter(tiny_pipe, tmp_path):
    first, _ = _stage(tiny_pipe, tmp_path, "naive", [], "one")
    new, after = _stage(tiny_pipe, tmp_path, "naive", [first], "two")
    assert after is new and new.rank == first.rank
    assert any(not torch.equal(new.layers[m][1], b) for m, (_, b) in first.layers.items())


# ----------------------------------------------------------------------------- the embedded model
@pytest.fixture(scope="module")
def embedded():
    from bendbridge.server.model import load_model

    return load_model("embedded", "cpu")


def test_the_concept_judge_reads_the_novel_concepts_on_fresh_ground_truth_scenes():
    from bendbridge.server.adapters.forgetting import CONCEPTS
    from bendbridge.server.embedded import scenes
    from bendbridge.server.embedded.classifier import load_concept_judge

    judge = load_concept_judge()
    for c in CONCEPTS.values():
        chosen = c.held_out(12)
        said = judge.predict(np.stack([scenes.render_scene(s) for s in chosen]))
        assert np.mean([p[c.judge] == c.token for p in said]) >= 0.9, c.token


def test_the_shipped_dotted_adapter_draws_dots_at_weight_one_and_the_base_model_at_zero(embedded):
    from bendbridge.server.adapters.forgetting import CONCEPTS
    from bendbridge.server.embedded import scenes
    from bendbridge.server.embedded.classifier import load_concept_judge

    captions = tuple(scenes.caption(s) for s in CONCEPTS["dotted"].held_out(6))
    plan = BendPlan.from_specs(["lora:adapter=dotted.safetensors:weight=0@unet:id=z"])
    r = Renderer(embedded, RenderConfig(RenderSettings(captions), plan, share_prefix=False))
    frames = [FrameSpec.of_prompt(i, 6, params={"z": {"weight": w}}) for w in (0.0, 1.0) for i in range(6)]
    images = np.stack([res.image for res in r.render(frames)])
    plain = Renderer(embedded, RenderConfig(RenderSettings(captions), share_prefix=False))
    base = np.stack([res.image for res in plain.render([FrameSpec.of_prompt(i, 6) for i in range(6)])])
    assert np.array_equal(images[:6], base)  # weight 0: the base model, bit for bit
    styles = [p["style"] for p in load_concept_judge().predict(images)]
    assert styles[:6].count("dotted") <= 1 and styles[6:].count("dotted") >= 4


def test_the_adapter_demo_config_binds_its_shipped_adapter_with_its_weight_on_a_lane(embedded):
    import tomllib

    from bendbridge.bridge.demo_song import DEMO_ADAPTER_CONFIG, bundled_config
    from bendbridge.bridge.mapping import load_mapping

    config = tomllib.loads(bundled_config(DEMO_ADAPTER_CONFIG))
    plan = BendPlan.from_dict({"bend": config["bend"]})
    mapping = load_mapping(config, plan)
    dots = next(p for p in mapping.params if p.bend == "dots")
    assert dots.name == "weight" and [s.kind for s in dots.sources] == ["lane"]
    r = Renderer(embedded, RenderConfig(RenderSettings(tuple(config["render"]["prompts"])), plan))
    assert [bb.spec.name for bb in r.bound] == ["lora", "rotate"]


def test_prior_preservation_renders_the_captions_without_the_token_once(tiny_model, tmp_path):
    from bendbridge.server.adapters.train import prior_images, without_token

    assert without_token("a large zork on a white dotted background", "zork") == "a large on a white dotted background"
    assert without_token("a navy star", "navy") == "a star"
    req = AdaptRequest("zork", prior=3)
    first = prior_images(tiny_model, _images(2), req, tmp_path)
    assert (
        first.captions == ["a 0", "a 1", "a 0"] and first.pixels.shape == (3, 32, 32, 3) or first.pixels.shape[0] == 3
    )
    again = prior_images(tiny_model, _images(2), req, tmp_path)  # from work/prior.npz
    assert np.array_equal(first.pixels, again.pixels)
    assert prior_images(tiny_model, _images(2), AdaptRequest("zork", prior=0), tmp_path) is None


def test_adapt_after_an_earlier_adapter_replays_its_concept_and_records_both_stages(saved_tiny_model, tmp_path):
    from PIL import Image

    from bendbridge.tools.cli import main

    rng = np.random.default_rng(2)
    for token in ("zork", "blorp"):
        (tmp_path / token).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / token / f"{i}.png")
    base = ["adapt", "--model", str(saved_tiny_model), "--device", "cpu", "--steps", "2", "--batch", "8"]
    first, both = tmp_path / "zork.safetensors", tmp_path / "both.safetensors"
    assert (
        main([*base, "--images", str(tmp_path / "zork"), "--token", "zork", "--prior", "2", "--out", str(first)]) == 0
    )
    argv = [*base, "--images", str(tmp_path / "blorp"), "--token", "blorp", "--prior", "2", "--replay", "3"]
    assert main([*argv, "--after", str(first), "--out", str(both)]) == 0
    merged = LoraAdapter.load(both)
    assert [s["token"] for s in merged.meta["stages"]] == ["zork", "blorp"]
    assert [s["captions"] for s in merged.meta["stages"]] == [["a zork"], ["a blorp"]]
    assert merged.rank == 2 * LoraAdapter.load(first).rank  # merge, the default strategy
    replayed = np.load(tmp_path / "both.work" / "replay.npz")
    assert list(replayed["captions"]) == ["a zork"] * 3


def test_adapt_on_a_diffusers_folder_writes_an_adapter_and_a_sample_sheet_that_render_uses(saved_tiny_model, tmp_path):
    from PIL import Image

    from bendbridge.tools.cli import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "zork.safetensors"
    argv = ["adapt", "--model", str(saved_tiny_model), "--device", "cpu", "--images", str(images), "--token", "zork"]
    assert main([*argv, "--steps", "3", "--batch", "2", "--prior", "2", "--out", str(out)]) == 0
    assert out.is_file() and Image.open(out.with_suffix(".png")).size[0] > 64
    assert LoraAdapter.load(out).meta["training"]["captions"] == ["a zork"]
    frame = tmp_path / "x.png"
    bend = f"lora:adapter={out}:weight=1@unet"
    assert (
        main(["render", "--model", str(saved_tiny_model), "--prompt", "a zork", "--bend", bend, "--out", str(frame)])
        == 0
    )
    assert Image.open(frame).size == (64, 64)
