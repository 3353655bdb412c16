"""Headless Chromium for the tests: bendbridge.tools.chromium, skipped (or failed in CI) without it."""

from __future__ import annotations

import os

import pytest

from bendbridge.tools.chromium import Browser as _Browser
from bendbridge.tools.chromium import find_chromium

__all__ = ["Browser"]


def Browser(width: int = 640, height: int = 480) -> _Browser:  # noqa: N802 (stands in for the class)
    if find_chromium() is None:
        if os.environ.get("BENDBRIDGE_REQUIRE_NATIVE") == "1":
            pytest.fail("Chromium is required (apt install chromium) and was not found")
        pytest.skip("no Chromium on this machine (apt install chromium)")
    return _Browser(width, height)
