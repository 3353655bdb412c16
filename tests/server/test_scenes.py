"""The procedural scene grammar and its colour classifier (used to judge the embedded model)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bendbridge.server.embedded import scenes


@pytest.mark.slow
def test_the_colour_classifier_is_right_on_ground_truth_scenes():
    rng = np.random.default_rng(11)
    ok = 0
    for _ in range(300):
        s = scenes.random_scene(rng)
        fg, bg = scenes.classify_colours(scenes.render_scene(s), s.style)
        ok += fg == s.fg and bg == s.bg
    assert ok >= 0.97 * 300


def test_held_out_combinations_are_never_drawn_for_training():
    rng = np.random.default_rng(3)
    assert not any(scenes.is_held_out(scenes.random_scene(rng)) for _ in range(2000))
    held = scenes.held_out_scenes(48)
    assert len({scenes.caption(s) for s in held}) == 48 and all(scenes.is_held_out(s) for s in held)


def test_captions_follow_the_grammar():
    s = scenes.Scene("red", "star", "blue", "gradient")
    assert scenes.caption(s) == "a red star on a blue gradient background"
    assert (
        scenes.caption(scenes.Scene("yellow", "circle", "purple", "sea")) == "a yellow sun in the sky over a purple sea"
    )
    assert (
        scenes.caption(scenes.Scene("orange", "ring", None, "night", say_position=True, position="top left"))
        == "an orange ring in the top left in a starry night sky"
    )
    assert scenes.render_scene(s).shape == (128, 128, 3)


def test_a_sky_tinted_by_the_model_is_not_taken_for_the_sun():
    s = scenes.Scene("purple", "circle", "red", "sea")
    img = scenes.render_scene(s).astype(np.float32)
    pale = (img.min(-1) > 180)[..., None]  # the sky (and nothing of the purple sun or the red sea)
    tinted = np.where(pale, 0.5 * img + 0.5 * np.array(scenes.COLOURS["pink"], np.float32), img)
    assert scenes.classify_colours(np.rint(tinted).astype(np.uint8), "sea") == ("purple", "red")


@pytest.mark.parametrize(("attribute", "value"), [("fg", "red"), ("bg", "white"), ("shape", "star")])
def test_contrast_pairs_differ_only_in_the_attribute_and_are_training_scenes(attribute, value):
    pairs = scenes.contrast_pairs(attribute, value, 40, seed=1)
    assert len({scenes.caption(t) for t, _ in pairs}) == 40
    for toward, away in pairs:
        assert getattr(toward, attribute) == value != getattr(away, attribute)
        assert replace(toward, **{attribute: getattr(away, attribute)}) == away
        assert not scenes.is_held_out(toward) and not scenes.is_held_out(away)
    assert pairs == scenes.contrast_pairs(attribute, value, 40, seed=1)


def test_contrast_pairs_from_one_source_pair_only_scenes_of_that_source():
    pairs = scenes.contrast_pairs("fg", "red", 32, seed=2, source="blue")
    assert len(pairs) == 32 and all(t.fg == "red" and a.fg == "blue" for t, a in pairs)
    assert {a.shape for _, a in pairs} != {pairs[0][1].shape}  # otherwise drawn as before: many scenes
    with pytest.raises(ValueError, match="the source 'red' is the value steered toward"):
        scenes.contrast_pairs("fg", "red", 4, source="red")


def test_contrast_pairs_refuse_an_unknown_attribute():
    with pytest.raises(ValueError, match="attribute must be fg, bg or shape"):
        scenes.contrast_pairs("size", "large", 4)
