"""Bend plans: parsing, validation errors, and round trips (no model, no torch)."""

from __future__ import annotations

import pytest

from bendbridge.protocol.plan import BendPlan, PlanError, parse_spec


def test_compact_specs_from_the_issue_parse_into_targets():
    plan = BendPlan.from_specs(["rotate_plane:plane=0,1:angle=1.2@latent:step=0", "dilate:size=3@mid_block:steps=0-2"])
    a, b = plan.bends
    assert (a.op, a.target.kind, a.target.step, a.params["plane"], a.params["angle"]) == (
        "rotate_plane",
        "latent",
        0,
        (0, 1),
        1.2,
    )
    assert (b.op, b.target.kind, b.target.module, b.target.steps, b.params["size"]) == (
        "dilate",
        "module",
        "mid_block",
        (0, 2),
        3.0,
    )


def test_spec_options_cover_branch_channels_subsets_and_text_words():
    plan = BendPlan.from_specs(
        [
            "multiply:factor=2@up_blocks.1.resnets.0:steps=1-3:branch=cond:channels=0-3,8:seed=4",
            "threshold:r=0.5@mid_block:channel_fraction=0.5",
            "weight:delta=1.5@text:word=red",
            "add:value=-2@#12:region=0,0,0.5,0.5:element_fraction=0.25:mix=0.5",
        ]
    )
    m, t, w, a = plan.bends
    assert m.branch == "cond" and m.channels == (0, 1, 2, 3, 8) and m.seed == 4 and m.target.steps == (1, 3)
    assert t.channel_fraction == 0.5
    assert w.target.kind == "text" and w.target.word == "red"
    assert a.target.module == "#12" and a.region == (0, 0, 0.5, 0.5) and a.element_fraction == 0.25 and a.mix == 0.5
    assert a.params["value"] == -2


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_plans_serialise_and_load_back_identically(fmt):
    plan = BendPlan.from_specs(
        [
            "rotate_plane:plane=1,2:angle=0.7@latent:step=3",
            "dilate:size=5:shape=ellipse@mid_block:steps=0-1:branch=uncond",
            "weight:delta=0.5@text:word=sun",
            "hadamard@latent:step=2",
        ]
    )
    again = BendPlan.loads(plan.dumps(fmt), fmt)
    assert again == plan


def test_plan_file_loads_from_toml(tmp_path):
    f = tmp_path / "plan.toml"
    f.write_text(
        '[[bend]]\nid = "spin"\nop = "rotate_plane"\ntarget = "latent"\nstep = 0\n'
        "params = { angle = 1.0, plane = [0, 3] }\n"
    )
    (b,) = BendPlan.load(f).bends
    assert (b.id, b.params["plane"]) == ("spin", (0, 3))


def test_duplicate_operators_get_distinct_ids_and_explicit_duplicates_are_refused():
    plan = BendPlan.from_specs(["add:value=1@latent", "add:value=2@latent:step=1"])
    assert plan.ids() == ["add", "add_2"]
    with pytest.raises(PlanError, match=r"bend\[1\]\.id: id 'x' is used by another bend"):
        BendPlan.from_dict(
            {"bend": [{"id": "x", "op": "add", "target": "latent"}, {"id": "x", "op": "negate", "target": "latent"}]}
        )


@pytest.mark.parametrize(
    "spec,match",
    [
        ("rotat:angle=1@latent", r"bend\[0\]\.op: unknown operator 'rotat'; did you mean rotate"),
        (
            "rotate_plane:angel=1@latent",
            r"bend\[0\]\.params\.angel: operator 'rotate_plane' has no parameter 'angel'; "
            r"did you mean angle.*valid: angle, plane",
        ),
        (
            "multiply:factor=nan@latent",
            r"bend\[0\]\.params\.factor: nan is not finite; allowed a number in \[-10, 10\]",
        ),
        ("multiply:factor=99@latent", r"bend\[0\]\.params\.factor: 99 is out of range; allowed \[-10, 10\]"),
        ("add:value=1@mid_block:branch=left", r"bend\[0\]\.branch: 'left' is not valid; allowed: both, cond, uncond"),
        ("add:value=1@latent:steps=0-3", r"a latent target takes 'step'"),
        ("add:value=1@mid_block:step=2", r"bend\[0\]\.step: 'step' is for latent targets"),
        ("add:value=1@mid_block:steps=3-1", r"bend\[0\]\.steps: step range 3-1 runs backwards"),
        ("dilate:size=3@text", r"'dilate' \(morphological\) does not apply to the text target"),
        (
            "dilate:size=3:shape=round@latent",
            r"bend\[0\]\.params\.shape: 'round' is not valid; allowed: square, ellipse",
        ),
        (
            "add:value=1@latent:channel_fraction=1.5",
            r"bend\[0\]\.channel_fraction: 1.5 is out of range; allowed \(0, 1\]",
        ),
        ("add:value=1@latent:region=0.5,0,0.2,1", r"x1 must exceed x0"),
        ("add:value=1", r"expected OP\[:param=value…\]@TARGET"),
        ("add:value=1@mid block", r"not a dotted module name"),
        ("matrix@latent", r"operator 'matrix' needs 'm'"),
    ],
)
def test_bad_specs_name_the_field_and_the_allowed_values(spec, match):
    with pytest.raises(PlanError, match=match):
        BendPlan.from_specs([spec])


def test_unknown_fields_in_a_plan_file_are_named_with_suggestions():
    with pytest.raises(PlanError, match=r"bend\[0\]\.chanels: unknown field; did you mean channels\b"):
        BendPlan.from_dict({"bend": [{"op": "add", "target": "latent", "chanels": [0]}]})
    with pytest.raises(PlanError, match=r"bends: unknown top-level field; did you mean bend\?"):
        BendPlan.from_dict({"bends": []})
    with pytest.raises(PlanError, match="not valid TOML"):
        BendPlan.loads("[[bend]\nop=", "toml")


def test_parse_spec_keeps_negative_numbers_and_ranges_apart():
    d = parse_spec("add:value=-2.5@mid_block:steps=0-3")
    assert d["params"]["value"] == -2.5 and d["steps"] == "0-3"
