"""Build the native LV2 plugin (``plugin_stub/lv2``) into an installable ``bendbridge.lv2`` bundle.

The plugin is C11 with one dependency, libzmq; it is compiled on the user's machine with the
system C compiler, so it matches the host's architecture and libzmq. ``bendbridge plugin build``
calls :func:`build_bundle`; ``--install`` puts the bundle in ``~/.lv2``, where LV2 hosts (Ardour,
Carla, Qtractor, …) look for user plugins.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from bendbridge.protocol.errors import BendbridgeError

__all__ = ["BUNDLE", "PLUGIN_URI", "SOURCES", "build_bench_host", "build_bundle", "user_lv2_dir"]

SOURCE_DIR = Path(__file__).with_name("lv2")
SOURCES = ("bendbridge.c", "bb_wire.c")
TURTLE = ("manifest.ttl", "bendbridge.ttl")
BUNDLE = "bendbridge.lv2"
PLUGIN_URI = "urn:bendbridge:link"
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-fPIC", "-shared", "-fvisibility=hidden"]


class BuildError(BendbridgeError):
    """The native plugin could not be built."""


def user_lv2_dir() -> Path:
    """Where LV2 hosts look for a user's plugins (the first entry of LV2_PATH's default on Linux)."""
    return Path.home() / ".lv2"


def _compiler() -> str:
    named = os.environ.get("CC")
    if named:
        if not shutil.which(named):
            raise BuildError("CC", f"the C compiler {named!r} named by $CC was not found")
        return named
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise BuildError("cc", "no C compiler found; install one (Debian/Ubuntu: apt install gcc)")
    return cc


def _zmq_flags() -> list[str]:
    """Compiler and linker flags for libzmq, from pkg-config."""
    if not shutil.which("pkg-config"):
        raise BuildError("pkg-config", "pkg-config is missing; install it (Debian/Ubuntu: apt install pkg-config)")
    r = subprocess.run(["pkg-config", "--cflags", "--libs", "libzmq"], capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError("libzmq", "the libzmq development files are missing (Debian/Ubuntu: apt install libzmq3-dev)")
    return shlex.split(r.stdout)


def _compile(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        first = next((x for x in lines if "error" in x), lines[0] if lines else f"exit status {r.returncode}")
        hint = " (the LV2 headers are missing: apt install lv2-dev)" if "lv2/" in r.stderr else ""
        raise BuildError("cc", f"compiling failed{hint}: {first}")


def build_bundle(out: Path) -> Path:
    """Compile the plugin into ``out/bendbridge.lv2`` (created or replaced); return the bundle path.

    The LV2 headers must be installed (Debian/Ubuntu: ``lv2-dev``)."""
    out = Path(out)
    bundle = out / BUNDLE
    bundle.mkdir(parents=True, exist_ok=True)
    library = bundle / "bendbridge.so"
    cmd = [_compiler(), *CFLAGS, "-o", str(library), *(str(SOURCE_DIR / s) for s in SOURCES)]
    cmd += [*_zmq_flags(), "-lpthread", "-lm"]
    _compile(cmd)
    for name in TURTLE:
        shutil.copyfile(SOURCE_DIR / name, bundle / name)
    return bundle


def build_bench_host(out: Path) -> Path:
    """Compile the minimal C host that times the plugin's run() (``bb_bench_host``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "bb_bench_host"
    src = str(SOURCE_DIR / "bb_bench_host.c")
    _compile([_compiler(), "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-o", str(exe), src, "-ldl", "-lm"])
    return exe
