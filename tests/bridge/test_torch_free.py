"""The bridge side needs no torch: every bridge, protocol and plugin module imports, and a whole
bounce runs against a render server in another process, in an interpreter where importing torch,
diffusers, transformers or safetensors fails."""

from __future__ import annotations

import os
import subprocess
import sys

import av
import pytest

# Run before anything else in the child: the render side's packages cannot be imported there.
BLOCK_RENDER_SIDE = """
import sys
class _NoRenderSide:
    BLOCKED = {"torch", "diffusers", "transformers", "safetensors", "accelerate"}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the bridge must not need it)", name=name)
        return None
sys.meta_path.insert(0, _NoRenderSide())
"""

IMPORT_EVERY_BRIDGE_MODULE = """
import importlib, pkgutil
import bendbridge.bridge, bendbridge.plugin_stub, bendbridge.protocol
names = []
for package in (bendbridge.protocol, bendbridge.bridge, bendbridge.plugin_stub):
    names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
commands = ("bounce", "engine", "server", "live", "plugin", "bench")
names += ["bendbridge.tools.cli"] + [f"bendbridge.tools.cmd_{n}" for n in commands]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in _NoRenderSide.BLOCKED)
print(len(names), "modules;", "render side loaded:", loaded)
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_without_render_side(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_RENDER_SIDE + code, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def test_the_block_really_stops_torch():
    r = run_without_render_side("import torch")
    assert r.returncode != 0 and "blocked: the bridge must not need it" in r.stderr


def test_every_bridge_protocol_and_plugin_module_imports_without_torch():
    r = run_without_render_side(IMPORT_EVERY_BRIDGE_MODULE)
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.split()[0])
    assert n >= 30 and "render side loaded: []" in r.stdout


def test_importing_the_mapping_loads_no_torch_at_all():
    """As ``python -X importtime -c "import bendbridge.bridge.mapping"`` shows: no torch among the imports."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import bendbridge.bridge.mapping"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "bendbridge.bridge.mapping" in imported and not {m for m in imported if m.split(".")[0] == "torch"}


CLI = "from bendbridge.tools.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def demo_song(demo) -> list[str]:
    return ["--audio", str(demo["audio"]), "--midi", str(demo["midi"]), "--config", str(demo["config"])]


@pytest.mark.slow
def test_a_bounce_runs_without_torch_against_a_server_in_another_process(
    demo, saved_tiny_model, tmp_path, server_process
):
    server = server_process(saved_tiny_model, tmp_path / "server_root", "--max-batch", "4")
    out = tmp_path / "v.mp4"
    args = ["bounce", *demo_song(demo), "--end", "1", "--steps", "4", "--server", server.url, "--out", str(out)]
    r = run_without_render_side(CLI, *args)
    assert r.returncode == 0, r.stderr
    assert "bounced 24 frames (24 rendered, 0 resumed)" in r.stdout
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 24


def test_without_the_render_side_a_bounce_asks_for_a_server(demo, tmp_path):
    r = run_without_render_side(CLI, "bounce", *demo_song(demo), "--end", "1", "--out", str(tmp_path / "v.mp4"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert (
        "--server: this installation renders only on a render server" in r.stderr and "bendbridge[server]" in r.stderr
    )
