"""``bendbridge analyse``: words and their tokens, perturbation and gradient maps, and the figures and
numbers the command writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.render import RenderSettings
from bendbridge.server.analysis.perturb import mask_overlap, word_maps
from bendbridge.server.analysis.words import prompt_words, render_float
from bendbridge.server.render import FrameSpec, RenderConfig, Renderer
from bendbridge.tools.cli import main

PROMPT = "a red circle on a blue background"


def test_words_are_found_with_their_token_positions(tiny_pipe):
    words = prompt_words(tiny_pipe.tokenizer, "a red, bluish circle")
    assert [w.text for w in words] == ["a", "red", ",", "bluish", "circle"]
    assert words[0].positions == (1,)  # after the start token
    assert all(len(w.positions) >= 1 for w in words)
    assert sum(len(w.positions) for w in words) == len(tiny_pipe.tokenizer("a red, bluish circle").input_ids) - 2


def test_a_prompt_longer_than_the_text_encoder_reads_is_refused(tiny_pipe):
    with pytest.raises(BendbridgeError, match=r"PROMPT: \d+ tokens; the text encoder reads at most \d+"):
        prompt_words(tiny_pipe.tokenizer, " ".join(["red"] * 200))


def test_float_frames_round_to_the_frames_the_renderer_writes(tiny_model):
    r = Renderer(tiny_model, RenderConfig(RenderSettings((PROMPT,), steps=3)))
    exact = render_float(r, [FrameSpec(seed=2)])[0]
    assert np.abs(exact.round() - r.render([FrameSpec(seed=2)])[0].image).max() <= 1


@pytest.mark.parametrize("at", ["input", "output"])
def test_each_word_gets_a_map_and_the_gradient_is_the_change_over_the_embedding_change(tiny_model, at):
    settings = RenderSettings((PROMPT,), steps=3, guidance=2.0)
    p = word_maps(tiny_model, PROMPT, settings, "perturb", 0.15, at=at)
    g = word_maps(tiny_model, PROMPT, settings, "gradient", 0.15, at=at)
    assert [w.text for w in p.words] == ["a", "red", "circle", "on", "blue", "background"]  # 'a' twice: one word
    assert p.words[0].positions == (1, 5)
    assert p.maps.shape == (6, 64, 64) and (p.maps >= 0).all() and p.maps.sum() > 0
    assert np.allclose(g.embedding_change, p.embedding_change)
    assert (g.maps * np.asarray(g.embedding_change)[:, None, None] >= p.maps - 1e-3).all()  # ‖Δ‖₂ ≥ mean |Δ|


def test_the_overlap_is_the_share_of_a_colour_words_map_on_that_colours_pixels(tiny_model):
    p = word_maps(tiny_model, PROMPT, RenderSettings((PROMPT,), steps=2), "perturb")
    p.picture = np.zeros_like(p.picture)
    p.picture[:32] = (215, 30, 35)  # top half red, bottom half blue
    p.picture[32:] = (35, 65, 215)
    p.maps = np.zeros_like(p.maps)
    p.maps[1, :8] = 1.0  # 'red' only in the top quarter
    p.maps[4, :48] = 1.0  # 'blue' over the top three quarters
    got = mask_overlap(p)
    assert got["red"] == {"inside": 1.0, "area": 0.5}
    assert got["blue"] == {"inside": pytest.approx(16 / 48, abs=1e-4), "area": 0.5}


def test_an_embedding_of_the_wrong_shape_is_refused(tiny_model):
    r = Renderer(tiny_model, RenderConfig(RenderSettings((PROMPT,), steps=2)))
    with pytest.raises(BendbridgeError, match=r"embedding: expected \[32, 32\], got \[3, 32\]"):
        r.use_embedding("x", torch.zeros(3, 32))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["perturb", "gradient"])
def test_analyse_draws_the_maps_and_writes_their_numbers(tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    assert main(["analyse", kind, PROMPT, "--steps", "3", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [w["word"] for w in data["words"]] == ["a", "red", "circle", "on", "blue", "background"]
    assert abs(sum(w["share"] for w in data["words"]) - 1) < 1e-3 and data["at"] == "input"
    assert out.stat().st_size > 10_000


def test_every_query_spreads_all_its_attention_over_the_start_the_words_and_the_end(tiny_model):
    from bendbridge.server.analysis.attention import word_attention

    te = tiny_model.pipe.text_encoder
    before = te.config._attn_implementation
    wa = word_attention(tiny_model, PROMPT)
    assert wa.labels == ["<start>", "a", "red", "circle", "on", "a", "blue", "background", "<end>"]
    assert wa.received.shape == (2, 2, 9)  # layers, heads, labels
    assert np.allclose(wa.received.sum(-1), 1.0, atol=1e-5)  # causal: nothing after the end is seen
    assert te.config._attn_implementation == before  # the renderer's fused attention is back


@pytest.mark.parametrize(
    ("prompt", "labels"),
    [
        ("a red circle on a blue background", {"fg": "red", "shape": "circle", "bg": "blue"}),
        ("a large green star on a pink checkered background", {"fg": "green", "shape": "star", "bg": "pink"}),
        ("a yellow sun in the sky over a purple sea", {"fg": "yellow", "shape": "circle", "bg": "purple"}),
        ("a white ring in a starry night sky", {"fg": "white", "shape": "ring"}),
        ("a teapot", {}),
    ],
)
def test_what_a_prompt_names_is_read_in_the_scene_classifiers_terms(prompt, labels):
    from bendbridge.server.analysis.noise import prompt_labels

    assert prompt_labels(prompt) == labels


def test_noise_scores_run_over_the_seeds_with_their_spread(tiny_model):
    from bendbridge.server.analysis.noise import noise_scores

    def brightness(pictures, prompt):
        return pictures.reshape(len(pictures), -1).mean(1) / 255

    prompts = ("a red circle", "a blue square")
    ns = noise_scores(tiny_model, prompts, RenderSettings(prompts, steps=2), 5, brightness, "brightness")
    mean, std = ns.running()
    assert ns.scores.shape == (2, 5) and mean.shape == std.shape == (2, 5)
    assert np.allclose(mean[:, -1], ns.scores.mean(1)) and np.allclose(std[:, -1], ns.scores.std(1))
    assert len(set(np.round(ns.scores[0], 6))) > 1  # the seeds differ


def test_the_clip_score_reads_a_local_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from bendbridge.server.analysis.noise import clip_scorer
    from bendbridge.server.model import EMBEDDED_MODEL

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(tmp_path)
    score = clip_scorer(tmp_path, torch.device("cpu"))
    pictures = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    got = score(pictures, "a red circle")
    assert got.shape == (3,) and np.isfinite(got).all() and (got >= 0).all() and (got <= 100).all()
    with pytest.raises(BendbridgeError, match="--clip: .* is not a CLIP model folder"):
        clip_scorer(tmp_path / "nothing", torch.device("cpu"))


@pytest.mark.slow
def test_analyse_attention_and_noise_write_figures_and_numbers(tmp_path):
    att = tmp_path / "att.png"
    assert main(["analyse", "attention", PROMPT, "--per-head", "--out", str(att)]) == 0
    assert json.loads(att.with_suffix(".json").read_text())["labels"][0] == "<start>"
    noise = tmp_path / "noise.png"
    assert (
        main(["analyse", "noise", PROMPT, "a yellow star on a green background", "--seeds", "3", "--out", str(noise)])
        == 0
    )
    data = json.loads(noise.with_suffix(".json").read_text())
    assert data["score"] == "scene classifier probability" and [len(p["scores"]) for p in data["prompts"]] == [3, 3]
    assert all(0 <= s <= 1 for p in data["prompts"] for s in p["scores"])
