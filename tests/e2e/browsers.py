"""Headless Chromium for the end-to-end tests that load pages the way a person's browser does."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("JEPA_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(name="browser")
def chromium() -> Iterator[Any]:
    """A Playwright browser on the system's Chromium; the test is skipped without one, except in CI."""
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is required in CI and missing at {CHROMIUM} (.ci/run installs Debian's)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
