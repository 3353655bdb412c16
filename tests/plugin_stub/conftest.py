"""The native LV2 plugin, built once per test run, and the system tools its tests need.

Where a tool is missing (a C compiler, the LV2 or libzmq headers, Ardour) the tests that need it
are skipped with the install line; with BENDBRIDGE_REQUIRE_NATIVE=1 (set by CI, which installs
them) they fail instead, so a broken install cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bendbridge.protocol.errors import BendbridgeError


def missing(what: str) -> None:
    """Skip (or, in CI, fail) a test whose system tool is missing."""
    if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
        pytest.fail(f"{what} (BENDBRIDGE_REQUIRE_NATIVE=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def native_build(tmp_path_factory) -> dict[str, Path]:
    """The plugin bundle and the C bench host, compiled into a temporary folder."""
    from bendbridge.plugin_stub.lv2_build import build_bench_host, build_bundle

    out = tmp_path_factory.mktemp("lv2")
    try:
        bundle = build_bundle(out / "plugins")  # LV2_PATH: only bundles in it
        host = build_bench_host(out / "bin")
    except BendbridgeError as e:
        missing(f"the native plugin cannot be built here: {e}")
    return {"lv2_path": out / "plugins", "bundle": bundle, "library": bundle / "bendbridge.so", "host": host}


@pytest.fixture(scope="session")
def ardour_lua() -> str:
    """The headless Ardour 7 Lua host."""
    exe = shutil.which("ardour7-lua")
    if not exe:
        missing("headless Ardour 7 is not installed (apt install ardour)")
    return exe
