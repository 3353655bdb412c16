"""Maths properties of the operators, called directly (no model)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bendbridge.protocol.operators import CATALOGUE, OperatorError, operator_spec
from bendbridge.server.operators import get_operator
from bendbridge.server.operators.channel import R6_PLANES, hadamard_matrix, plane_rotation_matrix, r6_matrix
from bendbridge.server.steering.sae import SparseAutoencoder

settings.register_profile("fast", max_examples=40, deadline=None)
settings.load_profile("fast")


def _x(b: int = 3, c: int = 4, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _p(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float64)


def run(name: str, x: torch.Tensor, **params):
    return get_operator(name).fn(x, **params)


def test_registry_has_every_family_of_the_papers():
    need = {
        "add",
        "subtract",
        "multiply",
        "noise",
        "threshold",
        "soft_threshold",
        "invert",
        "negate",
        "power",
        "log",
        "absolute",
        "clamp",
        "rescale",
        "gaussian",
        "rotate_plane",
        "rotate_r6",
        "reflect",
        "hadamard",
        "matrix",
        "rotate",
        "scale",
        "translate",
        "flip",
        "dilate",
        "erode",
        "gradient",
        "open",
        "close",
    }
    assert need <= set(CATALOGUE)


def test_unknown_operator_suggests_nearest_names():
    with pytest.raises(OperatorError, match=r"unknown operator 'dilat'; did you mean dilate"):
        get_operator("dilat")


@given(st.floats(-20, 20), st.sampled_from([(0, 1), (1, 2), (0, 2), (0, 3)]))
def test_channel_rotation_preserves_each_pixels_channel_norm(angle, plane):
    x = _x()
    y = run("rotate_plane", x, angle=_p(angle, angle / 2, -angle), plane=plane)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-5, atol=1e-5)


@given(st.lists(st.floats(-7, 7), min_size=6, max_size=6))
def test_r6_preserves_norms_and_is_orthogonal(angles):
    m = r6_matrix([_p(a) for a in angles])[0]
    torch.testing.assert_close(m @ m.T, torch.eye(4, dtype=m.dtype), atol=1e-12, rtol=0)
    x = _x(b=1)
    y = run("rotate_r6", x, **{f"a{i}{j}": _p(a) for (i, j), a in zip(R6_PLANES, angles)})
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=1e-5, atol=1e-5)


def test_rotation_by_2pi_is_identity():
    x = _x()
    y = run("rotate_plane", x, angle=_p(2 * math.pi, 2 * math.pi, -2 * math.pi), plane=(0, 1))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)


def test_r6_with_all_angles_zero_is_bit_identical():
    x = _x()
    y = run("rotate_r6", x, **{f"a{i}{j}": _p(0, 0, 0) for i, j in R6_PLANES})
    assert torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rotate_plane_by_zero_and_multiply_by_one_and_add_zero_are_bit_identical(dtype):
    x = _x().to(dtype)
    assert torch.equal(run("rotate_plane", x, angle=_p(0, 0, 0), plane=(0, 2)), x)
    assert torch.equal(run("multiply", x, factor=_p(1, 1, 1)), x)
    assert torch.equal(run("add", x, value=_p(0, 0, 0)), x)


def test_quarter_turn_in_plane_01_maps_channel_0_to_channel_1():
    x = _x(b=1)
    y = run("rotate_plane", x, angle=_p(math.pi / 2), plane=(0, 1))
    torch.testing.assert_close(y[:, 1], x[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, 0], -x[:, 1], atol=1e-6, rtol=0)
    assert torch.equal(y[:, 2:], x[:, 2:])


def test_normalised_hadamard_is_orthonormal_and_rejects_non_powers_of_two():
    h = hadamard_matrix(8, torch.float64)
    torch.testing.assert_close(h @ h.T, torch.eye(8, dtype=torch.float64))
    with pytest.raises(OperatorError, match="power-of-two"):
        hadamard_matrix(6)


def test_plane_rotation_rejects_a_plane_outside_the_channels():
    with pytest.raises(OperatorError, match=r"plane \(0, 5\) is not a plane of 4 channels"):
        plane_rotation_matrix(_p(1.0), 4, 0, 5)


def test_reflect_twice_and_flip_twice_are_identity():
    x = _x()
    assert torch.equal(run("reflect", run("reflect", x, channel=2), channel=2), x)
    assert torch.equal(run("flip", run("flip", x, axis="vertical"), axis="vertical"), x)
    assert torch.equal(run("reflect", x, channel=1)[:, 1], -x[:, 1])


@given(st.integers(1, 9), st.sampled_from(["square", "ellipse"]))
def test_dilation_is_at_least_the_input_which_is_at_least_the_erosion(size, shape):
    x = _x(seed=size)
    s = _p(size, size, size)
    d, e = run("dilate", x, size=s, shape=shape), run("erode", x, size=s, shape=shape)
    assert d.shape == e.shape == x.shape
    assert bool((d >= x).all()) and bool((x >= e).all())


@given(st.integers(2, 7), st.sampled_from(["square", "ellipse"]))
def test_opening_is_below_and_closing_above_the_input(size, shape):
    x = _x(seed=size + 100)
    s = _p(size, size, size)
    assert bool((run("open", x, size=s, shape=shape) <= x + 1e-6).all())
    assert bool((run("close", x, size=s, shape=shape) >= x - 1e-6).all())
    assert bool((run("gradient", x, size=s, shape=shape) >= 0).all())


def test_dilation_of_a_single_peak_covers_the_window():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    sq = run("dilate", x, size=_p(3.0))
    assert sq.sum() == 9 and sq[0, 0, 3:6, 3:6].eq(1).all()
    el = run("dilate", x, size=_p(5.0), shape="ellipse")
    assert el.sum() == 13  # the radius-2 disc on the integer grid


def test_morphology_sizes_may_differ_per_sample():
    x = _x()
    batched = run("dilate", x, size=_p(1, 3, 5))
    for i, k in enumerate((1, 3, 5)):
        assert torch.equal(batched[i : i + 1], run("dilate", x[i : i + 1], size=_p(k)))
    assert torch.equal(batched[0], x[0])


@pytest.mark.parametrize(
    "name,params",
    [
        ("add", {"value": (0.5, -2.0, 3.0)}),
        ("multiply", {"factor": (2.0, 0.0, -1.0)}),
        ("threshold", {"r": (0.1, 0.5, 1.0)}),
        ("soft_threshold", {"r": (0.1, 0.5, 1.0)}),
        ("power", {"p": (0.5, 2.0, 3.0)}),
        ("clamp", {"lo": (-1, -0.5, 0), "hi": (1, 0.5, 2)}),
        ("rotate_plane", {"angle": (0.3, 1.0, 2.0)}),
        ("rotate", {"degrees": (10.0, 45.0, 90.0)}),
        ("scale", {"factor": (1.2, 0.5, 2.0)}),
        ("translate", {"tx": (0.1, -0.2, 0.25), "ty": (0.0, 0.1, -0.3)}),
        (
            "gaussian",
            {"value": (1.0, 2.0, -1.0), "sigma": (0.2, 0.1, 0.3), "cx": (0.5, 0.2, 0.8), "cy": (0.5, 0.5, 0.1)},
        ),
    ],
)
def test_per_sample_parameters_equal_one_sample_at_a_time(name, params):
    x = _x()
    batched = run(name, x, **{k: _p(*v) for k, v in params.items()})
    for i in range(3):
        alone = run(name, x[i : i + 1], **{k: _p(v[i]) for k, v in params.items()})
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-6, atol=1e-6)


def test_nan_traps_of_the_research_code_are_finite():
    x = torch.tensor([[[[0.0, -0.0, 1e-30, -2.0]]]])
    for name, params in [
        ("soft_threshold", {"r": _p(0.0)}),
        ("invert", {"r": _p(0.0)}),
        ("log", {"base": _p(1.0)}),
        ("log", {"base": _p(0.01)}),
        ("power", {"p": _p(0.0)}),
        ("power", {"p": _p(0.5)}),
        ("rescale", {"lo": _p(-1.0), "hi": _p(1.0)}),
    ]:
        y = run(name, x, **params)
        assert torch.isfinite(y).all(), (name, params, y)
    assert torch.equal(run("soft_threshold", x, r=_p(0.0))[0, 0, 0, :2], torch.zeros(2))


def test_noise_is_one_seeded_field_shared_by_every_frame():
    x = torch.zeros(2, 4, 8, 8)
    y = run("noise", x, std=_p(1.0, 2.0), seed=7)
    torch.testing.assert_close(y[1], 2 * y[0])
    assert torch.equal(run("noise", x, std=_p(1.0, 2.0), seed=7), y)
    assert not torch.equal(run("noise", x, std=_p(1.0, 2.0), seed=8), y)


def test_spatial_rotation_by_90_degrees_turns_the_map_clockwise():
    x = _x(b=1, h=8, w=8)
    y = run("rotate", x, degrees=_p(90.0))
    torch.testing.assert_close(y, torch.rot90(x, k=-1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_translate_moves_content_right_by_a_fraction_of_the_width():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 3, 2] = 1.0
    y = run("translate", x, tx=_p(0.25), ty=_p(0.0))
    assert y[0, 0, 3, 4] == pytest.approx(1.0, abs=1e-5)


def test_gaussian_bump_peaks_at_its_centre():
    y = run("gaussian", torch.zeros(1, 1, 16, 16), value=_p(2.0), sigma=_p(0.1), cx=_p(0.25), cy=_p(0.75))
    iy, ix = divmod(int(y[0, 0].argmax()), 16)
    assert (iy, ix) in {(11, 3), (11, 4), (12, 3), (12, 4)}
    assert float(y.max()) <= 2.0


def test_rescale_maps_each_sample_to_the_range():
    y = run("rescale", _x(), lo=_p(0, -1, 2), hi=_p(1, 1, 3))
    for i, (lo, hi) in enumerate([(0, 1), (-1, 1), (2, 3)]):
        assert float(y[i].min()) == pytest.approx(lo, abs=1e-5) and float(y[i].max()) == pytest.approx(hi, abs=1e-5)


def test_parameter_checks_name_the_field_and_the_range():
    spec = operator_spec("multiply").params["factor"]
    with pytest.raises(OperatorError, match=r"bend\[0\]\.params\.factor: 11 is out of range; allowed \[-10, 10\]"):
        spec.check(11, "bend[0].params.factor")
    with pytest.raises(OperatorError, match="not finite"):
        spec.check(float("nan"), "f")
    with pytest.raises(OperatorError, match="expected a number"):
        spec.check("two", "f")


@given(st.floats(-7, 7), st.sampled_from([(0, 1), (3, 1), (2, 5), (7, 0)]))
def test_plane_rotation_fast_path_equals_the_full_channel_matrix(angle, plane):
    from bendbridge.server.operators.channel import apply_channel_matrix

    x = _x(b=2, c=8)
    a = _p(angle, -angle)
    full = apply_channel_matrix(x, plane_rotation_matrix(a, 8, *plane))
    torch.testing.assert_close(run("rotate_plane", x, angle=a, plane=plane), full, rtol=1e-5, atol=1e-5)


@given(st.integers(1, 8))
def test_square_dilation_equals_max_pooling_with_the_same_window(size):
    import torch.nn.functional as F

    x = _x(seed=size)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    ref = F.max_pool2d(F.pad(x, (lo, hi, lo, hi), value=float("-inf")), size, stride=1)
    assert torch.equal(run("dilate", x, size=_p(size, size, size)), ref)


@pytest.mark.parametrize("name", sorted(n for n, s in CATALOGUE.items() if 4 in s.ranks))
def test_every_operator_gives_the_same_result_on_channels_last_activations(name):
    x = _x(b=2, c=4, h=8, w=8)  # 4 channels: the latent's, and what rotate_r6 needs
    params = _demo_params(name, 2)
    plain = run(name, x, **params)
    cl = run(name, x.contiguous(memory_format=torch.channels_last), **params)
    torch.testing.assert_close(cl, plain, rtol=1e-6, atol=1e-6)


def _demo_resource(name: str):
    """What a file parameter hands the operator for 4 channels: a vector [4], or an autoencoder."""
    if name == "steer":
        return torch.linspace(-1.0, 1.0, 4)
    sae = SparseAutoencoder(4, 16, 2, scale=1.0, seed=3).requires_grad_(False)
    sae.feature_max.fill_(2.0)
    return sae


def _demo_params(name: str, b: int) -> dict:
    """A parameter set that moves the operator away from its identity (per sample where a float)."""
    spec = operator_spec(name)
    params = {}
    for k, p in spec.params.items():
        if p.kind == "float":
            v = (
                p.default
                if p.identity is None or p.default != p.identity
                else (p.lo if p.lo is not None and p.lo != p.identity else p.identity + 0.5)
            )
            params[k] = _p(*[v] * b)
        elif p.kind == "matrix":
            params[k] = torch.eye(4, dtype=torch.float64).flip(0).expand(b, 4, 4)
        elif p.kind == "file":
            params[k] = _demo_resource(name)
        else:
            params[k] = p.default
    return params


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(n for n, s in CATALOGUE.items() if 4 in s.ranks))
def test_every_operator_keeps_reduced_precision_and_agrees_with_float32(name, dtype):
    x = _x(b=2, c=4, h=8, w=8).to(dtype)  # activations as a bf16/fp16 model hands them over
    params = _demo_params(name, 2)
    low = run(name, x, **params)
    ref = run(name, x.float(), **params)  # the same (rounded) input, in float32
    assert low.dtype == dtype and low.shape == x.shape and torch.isfinite(low).all() == torch.isfinite(ref).all()
    eps = torch.finfo(dtype).eps
    scale = ref.abs().max().clamp(min=1.0)
    # the reduced type rounds every intermediate: agree within a few of its ulps of the output's scale
    torch.testing.assert_close(low.float(), ref, rtol=8 * eps, atol=8 * eps * scale)
