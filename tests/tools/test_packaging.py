"""The wheel installs one import package, ``bendbridge``, holding every module and data file of the
top-level folders, and only the render side depends on torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("protocol", "bridge", "plugin_stub", "server", "tools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the source tree (setuptools builds in place, so not here)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".pytest_cache")
    )
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    (path,) = work.glob("bendbridge-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"bendbridge"}
    top_level = next(n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["bendbridge"]


@pytest.mark.slow
def test_every_module_and_data_file_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            linked = any((ROOT / parent).is_symlink() for parent in path.relative_to(ROOT).parents)
            if (
                path.is_file()
                and not linked  # the fast model's links to the embedded model's parts (loaded from there)
                and "__pycache__" not in path.parts
                and (path.suffix in (".py", ".toml", ".json") or "model" in path.parts)
            ):
                assert f"bendbridge/{path.relative_to(ROOT).as_posix()}" in names, path
    assert "bendbridge/bridge/demo.toml" in names
    for source in (
        "bendbridge.c",
        "bb_wire.c",
        "bb_wire.h",
        "bb_ring.h",
        "bb_bench_host.c",
        "manifest.ttl",
        "bendbridge.ttl",
    ):
        assert f"bendbridge/plugin_stub/lv2/{source}" in names  # 'bendbridge plugin build' compiles these
    assert "bendbridge/server/embedded/model/unet/diffusion_pytorch_model.safetensors" in names
    if (ROOT / "server" / "embedded" / "fast").exists():
        assert "bendbridge/server/embedded/fast/unet/diffusion_pytorch_model.safetensors" in names
        assert not any(n.startswith("bendbridge/server/embedded/fast/vae/") for n in names)  # not copied twice


def test_only_the_server_extra_needs_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    render_side = ("torch", "diffusers", "transformers", "safetensors")
    assert not [d for d in project["dependencies"] if d.split("=")[0].split(">")[0].strip() in render_side]
    server = project["optional-dependencies"]["server"]
    assert {d.split("=")[0].split(">")[0] for d in server} >= set(render_side) and "torch==2.13.0" in server
    assert "bendbridge[server]" in project["optional-dependencies"]["dev"]  # the README's commands install everything


def test_every_folder_with_modules_is_a_listed_package():
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "bendbridge." + ".".join(p.parent.relative_to(ROOT).parts)
        for f in FOLDERS
        for p in (ROOT / f).rglob("__init__.py")
    }
    assert found == packages
