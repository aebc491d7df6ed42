"""A headless Chromium driven by Selenium, for tests that look at pages the way a person does.

The browser is the distribution's (``apt-get install chromium chromium-driver``, which .ci/run does): Selenium
is pointed at /usr/bin/chromium and /usr/bin/chromedriver, so Selenium Manager never downloads a browser or a
driver. Without them a browser test skips, saying why; under CI=true it fails instead, so CI never passes by
skipping. Use the ``browser`` fixture (import it into a test module: ``from tests.browser import browser``)
and keep a picture of what was seen with ``screenshot(driver, request, "name")``: PNG files go to
$DMGW_SCREENSHOTS when set (kept as the run's artifacts for review), else to the test's tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _in_ci

CHROMIUM = os.environ.get("DMGW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DMGW_CHROMEDRIVER", "/usr/bin/chromedriver")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,900",
)


def _missing() -> str | None:
    """Why no browser test can run here, or None when Chromium, its driver and Selenium are all present."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser() -> Iterator[object]:
    """A fresh headless Chromium WebDriver with a profile of its own, quit at the end of the test."""
    reason = _missing()
    if reason:
        if _in_ci():
            pytest.fail(f"CI is set but no browser test can run: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dmgw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, request: pytest.FixtureRequest, name: str) -> Path:
    """Save what ``driver`` shows as ``<test name>-<name>.png`` under $DMGW_SCREENSHOTS or the test's
    tmp_path, and return the file's path."""
    folder = os.environ.get("DMGW_SCREENSHOTS")
    if folder:
        directory = Path(folder)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = request.getfixturevalue("tmp_path")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{request.node.name}-{name}")
    path = directory / f"{stem}.png"
    if not driver.save_screenshot(str(path)):  # type: ignore[attr-defined]
        pytest.fail(f"the browser could not save a screenshot to {path}")
    return path
