"""The bendbridge command line, run as a user would (subprocess, real files)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bendbridge.server.model import EMBEDDED_MODEL

needs_model = pytest.mark.skipif(
    not (EMBEDDED_MODEL / "model_index.json").exists(), reason="embedded model not exported"
)


def bb(*args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "bendbridge.tools.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
@needs_model
def test_layers_lists_latent_text_and_module_targets():
    r = bb("layers")
    assert r.returncode == 0, r.stderr
    assert "latent:step=K" in r.stdout and "text[:word=W]" in r.stdout
    assert "mid_block " in r.stdout and "#0 " in r.stdout


@pytest.mark.slow
@needs_model
def test_render_writes_a_png_of_the_model_size(tmp_path):
    out = tmp_path / "x.png"
    r = bb(
        "render",
        "--prompt",
        "a red circle on a blue background",
        "--bend",
        "rotate_plane:plane=0,1:angle=1.2@latent:step=0",
        "--bend",
        "dilate:size=3@mid_block:steps=0-2",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (128, 128)


@needs_model
@pytest.mark.parametrize(
    "spec,match",
    [
        ("rotat:angle=1@latent", "unknown operator 'rotat'; did you mean rotate"),
        ("add:value=1@mid_blok", "unknown layer 'mid_blok'; did you mean mid_block"),
        ("multiply:factor=50@latent", "bend[0].params.factor: 50 is out of range; allowed [-10, 10]"),
    ],
)
@pytest.mark.slow
def test_bad_bends_exit_2_with_a_message_naming_the_field(tmp_path, spec, match):
    r = bb("render", "--prompt", "x", "--bend", spec, "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and match in r.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_missing_model_folder_is_a_clear_error(tmp_path):
    r = bb("layers", "--model", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.slow
@needs_model
def test_sweep_renders_a_labelled_contact_sheet(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(
        'prompt = "a yellow star on a purple background"\n\n[[row]]\nop = "rotate_plane"\ntarget = "latent"\nstep = 0\n'
        'sweep = "angle"\nvalues = [0.0, 1.5, 3.0]\n\n'
        '[[row]]\nop = "dilate"\ntarget = "mid_block"\nsweep = "size"\nvalues = [1, 3]\n'
    )
    out = tmp_path / "sheet.png"
    r = bb("sweep", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 0, r.stderr
    w, h = Image.open(out).size
    assert w >= 3 * 128 and h >= 2 * 128


def test_every_tool_module_imports():
    import importlib
    from pathlib import Path

    from bendbridge import tools

    for path in sorted(Path(tools.__file__).parent.glob("*.py")):
        importlib.import_module(f"bendbridge.tools.{path.stem}")  # a syntax error in a rarely run benchmark fails here


@needs_model
@pytest.mark.slow
def test_bench_model_prints_guidance_the_limit_and_each_precision_against_fp32():
    r = bb("bench", "model", "--steps", "2", "--repeats", "1", "--frames", "2")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.startswith(("cfg", "no-cfg"))}
    assert set(rows) == {"cfg", "no-cfg"} and all(float(v[1]) > 0 for v in rows.values())
    limit, demo = r.stdout.split("against the limit")[1].split("against fp32")
    limit, where = limit.split("where an fp32 U-Net row's time goes")
    kinds = {ln.split()[0]: ln.split() for ln in where.splitlines()[2:] if ln.strip() and not ln.startswith("the ")}
    assert {"convolutions", "matmuls", "normalisation", "element-wise", "copies"} <= set(kinds)
    assert sum(int(k[2].rstrip("%")) for k in kinds.values()) == pytest.approx(100, abs=len(kinds) / 2)
    assert 0 < float(kinds["convolutions"][4]) and 0 < float(kinds["convolutions"][5].rstrip("%"))  # GFLOP/s, of peak
    row = {line.split()[0]: line.split() for line in limit.splitlines() if line.startswith(("fp32", "bf16"))}
    assert set(row) == {"fp32", "bf16"} and float(row["fp32"][1]) == pytest.approx(float(row["bf16"][1]))
    assert 0 < float(row["fp32"][5].rstrip("%")) <= 100  # the row's GFLOP/s is a share of the measured peak
    diff = {line.split()[0]: line.split() for line in demo.splitlines() if line.startswith(("fp32", "bf16"))}
    assert diff["fp32"][2:] == ["0", "0.000"] and 0 < float(diff["bf16"][3]) < 5  # bf16 close to fp32, not equal


@needs_model
@pytest.mark.slow
def test_bench_live_measures_models_side_by_side_with_latency_and_cc_to_page():
    if shutil.which("jackd") is None or not any(shutil.which(n) for n in ("chromium", "chromium-browser")):
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("bench live needs jackd and Chromium")
        pytest.skip("bench live needs jackd and Chromium")
    r = bb("bench", "live", "--rows", "fast/serial,fast+tiny", "--seconds", "7", "--fps", "8", "--cc-every", "1.5")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.startswith("  fast") and ":" not in ln}
    assert set(rows) == {"fast", "fast+tiny"}, r.stdout
    assert rows["fast"][1] == "serial" and float(rows["fast"][2]) > 0 and float(rows["fast+tiny"][1]) > 0
    assert float(rows["fast+tiny"][4]) > 0 and float(rows["fast+tiny"][10]) > 0  # latency p50 (ms), alone fps
    seen = re.search(r"fast\+tiny: \d+ frames delivered of \d+ requested; (\d+)/(\d+) controller moves", r.stdout)
    assert seen and int(seen[1]) >= 1, r.stdout


@pytest.mark.slow
@needs_model
def test_steer_build_writes_a_token_vector_that_render_and_sweep_use_at_the_colour_word(tmp_path):
    vector = tmp_path / "red_blue.safetensors"
    build = ("steer", "build", "--toward", "fg=red", "--from", "blue", "--pairs", "8", "--target", "text")
    r = bb(*build, "--broadcast", "token", "--out", str(vector))
    assert r.returncode == 0, r.stderr
    assert "text: (1, 2, 128)" in r.stdout
    prompt = ("--prompt", "a large blue circle on a white background", "--seed", "3")
    bend = f"steer:vector={vector}:alpha=1.5@text:word=blue:at=up_blocks.1:branch=cond"
    assert bb("render", *prompt, "--out", str(tmp_path / "plain.png")).returncode == 0
    r = bb("render", *prompt, "--bend", bend, "--out", str(tmp_path / "steered.png"))
    assert r.returncode == 0, r.stderr
    plain, steered = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=int) for n in ("plain", "steered"))
    assert np.abs(steered - plain).mean() > 1.0
    words = "orange|yellow|green|cyan|blue|purple|pink|white|black|brown|gray"
    sweep = f"steer:vector={vector}@text:word={words}:branch=cond"
    r = bb("steer", "sweep", "--bend", sweep, "--values", "0,1", "--watch", "fg=red", "--prompts", "2",
           "--seeds", "1", "--out", str(tmp_path / "curve.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "alpha=0: P(fg=red)=" in r.stdout and (tmp_path / "curve.json").exists()
