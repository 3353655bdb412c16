"""Token steering vectors: CAA on the text encoder's output rows from the word where paired prompts
differ, added to the text conditioning at each frame's own word (``steer …@text:word=…``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.plan import BendPlan, PlanError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.operators import get_operator
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.server.steering.caa import CAARequest, build_vectors, first_difference
from bendbridge.server.steering.vectors import SteerVectors

POS = ("a red star on a white background", "a small red square on a white background")
NEG = ("a blue star on a white background", "a small blue square on a white background")
FEW = RenderSettings(("x",), steps=3, guidance=4.0)
ATTN = "down_blocks.1.attentions.0"


def _steer_tokens(x, v, alpha, mask):
    a = torch.tensor(alpha, dtype=torch.float64)
    return get_operator("steer").fn(x, vector=v, alpha=a, gate="salience", token_mask=mask)


# ----------------------------------------------------------------------------- the operator
def test_a_token_vector_adds_to_the_rows_from_the_words_first_token_on_and_nowhere_else():
    x = torch.randn(3, 6, 4)
    v = torch.randn(2, 4)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 2] = True  # frame 0: the word at token 2 (rows 2 and 3 move)
    mask[1, 5] = mask[1, 1] = True  # frame 1: first occurrence at 1 (rows 1 and 2), not 5
    y = _steer_tokens(x, v, [1.0, 0.5, 2.0], mask)  # frame 2 lacks the word: unchanged
    want = x.clone()
    want[0, 2:4] += v
    want[1, 1:3] += 0.5 * v
    torch.testing.assert_close(y, want)


def test_a_token_vector_past_the_last_token_is_cut_off():
    x = torch.zeros(1, 4, 2)
    mask = torch.tensor([[False, False, False, True]])
    y = _steer_tokens(x, torch.ones(3, 2), [1.0], mask)
    assert y[0, 3].tolist() == [1.0, 1.0] and y[0, :3].abs().sum() == 0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 8), st.integers(1, 3), st.integers(0, 2**16))
def test_a_token_vector_at_alpha_zero_is_identity(b, t, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 5, generator=g)
    mask = torch.rand(b, t, generator=g) < 0.3
    assert torch.equal(_steer_tokens(x, torch.randn(k, 5, generator=g), [0.0] * b, mask), x)


def test_the_first_difference_of_two_token_sequences():
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 7]) == 2
    assert first_difference([1, 2], [1, 2]) is None


# ----------------------------------------------------------------------------- building on a tiny pipeline
@pytest.fixture(scope="module")
def token_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "red_blue_token.safetensors"
    build_vectors(tiny_model, CAARequest(POS, NEG, ("text",), broadcast="token", tokens=2), settings=FEW).save(path)
    return path


def test_a_token_vector_is_the_mean_difference_of_the_encoders_rows_from_the_differing_word(tiny_model, token_file):
    sv = SteerVectors.load(token_file)
    r = Renderer(tiny_model, RenderConfig(FEW))
    at = [first_difference(r.cond.ids(p), r.cond.ids(n)) for p, n in zip(POS, NEG)]
    assert at[0] + 1 == at[1]  # "small" moves the word one token on
    want = sum(r.embed(p)[i : i + 2] - r.embed(n)[i : i + 2] for p, n, i in zip(POS, NEG, at)) / 2
    assert sv.vectors["text"].shape == (1, 2, r.embed(POS[0]).shape[-1])
    torch.testing.assert_close(sv.vectors["text"][0], want.float())
    assert sv.meta["broadcast"] == "token" and sv.meta["words"] == ["blue"] and sv.meta["tokens"] == 2


def test_swapping_the_prompt_sets_negates_a_token_vector(tiny_model):
    req = CAARequest(POS, NEG, ("text",), broadcast="token")
    one = build_vectors(tiny_model, req, settings=FEW).vectors["text"]
    back = build_vectors(tiny_model, CAARequest(NEG, POS, ("text",), broadcast="token"), settings=FEW).vectors["text"]
    torch.testing.assert_close(one, -back)


@pytest.mark.parametrize(
    "request_, match",
    [
        (CAARequest(POS, NEG[:1], ("text",), broadcast="token"), r"pairs the prompts one to one: 2 positive, 1"),
        (CAARequest(POS, NEG, (ATTN,), broadcast="token"), r"--target: a token vector .* steers --target text"),
        (CAARequest(POS, NEG, ("text",)), r"--target: a token vector .* steers --target text, and only it"),
        (CAARequest(POS, NEG, ("text",), broadcast="token", tokens=17), r"--tokens: 17 is out of range \[1, 16\]"),
        (CAARequest(POS, NEG, ("text",), broadcast="token", steps="1-2"), r"--steps: .* no denoising steps"),
    ],
)
def test_bad_token_vector_requests_are_refused(request_, match):
    with pytest.raises(BendbridgeError, match=match):
        request_.check()


def test_a_pair_that_tokenizes_the_same_is_refused(tiny_model):
    with pytest.raises(BendbridgeError, match=r"--positive\[0\]: .* tokenize the same: nothing to steer"):
        build_vectors(tiny_model, CAARequest(POS[:1], POS[:1], ("text",), broadcast="token"), settings=FEW)


# ----------------------------------------------------------------------------- the bend
def _renderer(model, spec, prompts=(NEG[0],)):
    return Renderer(model, RenderConfig(RenderSettings(prompts, steps=3, guidance=4.0), BendPlan.from_specs([spec])))


def test_a_token_steer_bend_at_alpha_zero_renders_the_unbent_frame_and_alpha_moves_it(tiny_model, token_file):
    plain = Renderer(tiny_model, RenderConfig(RenderSettings((NEG[0],), steps=3, guidance=4.0)))
    plain_image = plain.render([FrameSpec()])[0].image
    r = _renderer(tiny_model, f"steer:vector={token_file}:alpha=0@text:word=green|blue:branch=cond:id=s")
    zero, strong = (r.render([FrameSpec(params={"s": {"alpha": a}})])[0].image for a in (0.0, 20.0))
    assert np.array_equal(zero, plain_image)
    assert np.abs(strong.astype(int) - plain_image).mean() > 1.0


def test_the_text_conditioning_moves_only_at_each_prompts_own_word(tiny_model, token_file):
    prompts = ("a blue star on a white background", "a large green ring on a white background")
    r = _renderer(tiny_model, f"steer:vector={token_file}:alpha=1@text:word=blue|green:id=s", prompts)
    frames = [FrameSpec.of_prompt(i, 2, params={"s": {"alpha": 1.0}}) for i in range(2)]
    r.engine.set_frames([f.params for f in frames], guided=False)
    bent = r.text_rows(frames, guided=False)
    plain = r.text_rows(frames, bend=False, guided=False)
    moved = (bent - plain).abs().sum(-1) > 0  # [B, T]
    v = SteerVectors.load(token_file).vectors["text"][0]
    for row, (prompt, word) in enumerate(zip(prompts, ("blue", "green"))):
        ids = r.cond.ids(prompt)
        at = ids.index(r.tokenizer(word, add_special_tokens=False).input_ids[0])
        assert moved[row].nonzero().flatten().tolist() == [at, at + 1]
        torch.testing.assert_close(bent[row, at : at + 2] - plain[row, at : at + 2], v.to(bent.dtype))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("steer:vector={tok}:alpha=1@text:id=s", r"is a token vector: name the word to steer at, @text:word="),
        ("steer:vector={tok}:alpha=1@" + ATTN + ":id=s", r"is a token vector: it steers the text target"),
        ("steer:vector={mod}:alpha=1@text:word=blue:id=s", r"holds module vectors; the text target takes a token"),
        ("steer:vector={tok}:alpha=1@text:word=blue||red:id=s", r"bend\[0\]\.word: expected a word from the prompt"),
        ("steer:vector={tok}:alpha=1@text:word=mauve|teal:id=s", r"'mauve\|teal' does not occur in any prompt"),
    ],
)
def test_token_vectors_in_the_wrong_place_are_refused(tiny_model, token_file, tmp_path, spec, match):
    mod = tmp_path / "module.safetensors"
    build_vectors(tiny_model, CAARequest(POS[:1], NEG[:1], (ATTN,), seeds=1), settings=FEW).save(mod)
    with pytest.raises(PlanError, match=match):
        _renderer(tiny_model, spec.format(tok=token_file, mod=mod))


@pytest.mark.slow
def test_the_shipped_token_vector_turns_held_out_foregrounds_redder_as_alpha_grows():
    from bendbridge.server.embedded.scenes import COLOURS
    from bendbridge.server.model import load_model
    from bendbridge.server.steering.evaluate import parse_watch, strength_sweep

    words = "|".join(c for c in COLOURS if c != "red")
    plan = BendPlan.from_specs([f"steer:vector=red_blue_token.safetensors@text:word={words}:branch=cond:id=s"])
    model = load_model("embedded", "cpu")
    curve = strength_sweep(model, plan, "alpha", [0.0, 0.5, 1.0], parse_watch("fg=red"), prompts=8, sheet_prompts=0)
    p = curve.watched_prob
    assert p[0] < p[1] < p[2] and p[2] >= 0.15, p


# ----------------------------------------------------------------------------- at: only some cross-attentions
def _contexts(model, renderer, frame):
    """The context every cross-attention reads in one render of ``frame`` (the input of its key
    projection, so after every hook on the layer itself): name → [steps × [R, T, D]]."""
    seen: dict[str, list[torch.Tensor]] = {}
    modules = dict(renderer.unet.named_modules())
    names = [n for n in modules if n.endswith("attn2")]

    def grab(name):
        def hook(_m, args):
            seen.setdefault(name, []).append(args[0].clone())

        return hook

    handles = [modules[n + ".to_k"].register_forward_pre_hook(grab(n)) for n in names]
    try:
        renderer.render([frame])
    finally:
        for h in handles:
            h.remove()
    return seen


def test_a_text_bend_at_some_cross_attentions_changes_only_the_context_they_read(tiny_model, token_file):
    spec = f"steer:vector={token_file}:alpha=0@text:word=blue:at=up_blocks.0:branch=cond:id=s"
    r = _renderer(tiny_model, spec)
    plain = _contexts(tiny_model, r, FrameSpec(params={"s": {"alpha": 0.0}}))
    bent = _contexts(tiny_model, r, FrameSpec(params={"s": {"alpha": 1.0}}))
    at = r.cond.ids(NEG[0]).index(r.tokenizer("blue", add_special_tokens=False).input_ids[0])
    v = SteerVectors.load(token_file).vectors["text"][0]
    assert {n for n in bent if n.startswith("up_blocks.0.")} and set(bent) - {n for n in bent if "up_blocks.0" in n}
    for name in plain:
        for p, b in zip(plain[name], bent[name]):
            if not name.startswith("up_blocks.0."):
                assert torch.equal(p, b), name
                continue
            moved = ((b - p).abs().sum(-1) > 0).nonzero().tolist()  # rows [uncond; cond] = [0; 1]
            assert moved == [[1, at], [1, at + 1]], (name, moved)
            torch.testing.assert_close(b[1, at : at + 2] - p[1, at : at + 2], v.to(b.dtype))


def test_a_text_bend_at_some_cross_attentions_at_alpha_zero_renders_the_unbent_frame(tiny_model, token_file):
    plain = Renderer(tiny_model, RenderConfig(RenderSettings((NEG[0],), steps=3, guidance=4.0)))
    r = _renderer(tiny_model, f"steer:vector={token_file}:alpha=0@text:word=blue:at=up_blocks.0,mid_block:id=s")
    assert r.bound[0].reads == tuple(
        n for n, _ in r.unet.named_modules() if n.endswith("attn2") and n.startswith(("up_blocks.0.", "mid_block."))
    )
    zero = r.render([FrameSpec(params={"s": {"alpha": 0.0}})])[0].image
    assert np.array_equal(zero, plain.render([FrameSpec()])[0].image)


def test_at_round_trips_through_the_plan():
    plan = BendPlan.from_specs(
        ["steer:vector=v.safetensors:alpha=1@text:word=blue|green:at=up_blocks.1,mid_block:id=s"]
    )
    t = plan.bends[0].target
    assert t.at == ("up_blocks.1", "mid_block") and t.word == "blue|green"
    assert str(t) == "text:word=blue|green:at=up_blocks.1,mid_block"
    assert BendPlan.from_dict({"bend": [plan.bends[0].to_dict()]}).bends[0].target == t


@pytest.mark.parametrize(
    "spec, match",
    [
        (
            "steer:vector={tok}:alpha=1@text:word=blue:at=up_blocks.9:id=s",
            r"bend\[0\]\.at: no cross-attention layer at or under 'up_blocks\.9'; the U-Net has them under",
        ),
        ("steer:vector={tok}:alpha=1@" + ATTN + ":at=up_blocks.1:id=s", r"bend\[0\]\.at: 'at' is for the text target"),
        ("add:value=1@latent:at=up_blocks.1", r"bend\[0\]\.at: 'at' is for the text target"),
        ("steer:vector={tok}:alpha=1@text:word=blue:at=1up:id=s", r"bend\[0\]\.at: '1up' is not a dotted module name"),
    ],
)
def test_bad_at_options_are_refused(tiny_model, token_file, spec, match):
    with pytest.raises(PlanError, match=match):
        _renderer(tiny_model, spec.format(tok=token_file))
