"""/connect in a real browser: the distribution's headless Chromium, driven by Selenium through its chromedriver,
clicks "Sign in with X", approves at the emulator, fills the form and sees the result; then an unmodified
StatusNet-style call works with the new password. A PNG of each page is kept for review, under the directory
in DMGW_SCREENSHOTS (else the test's tmp_path).

Outside CI the test skips when Chromium or chromedriver is missing; under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.emulator import EmulatorServer
from gateway.keys import STORE_KEY
from tests.conftest import GatewayTestServer, _in_ci
from tests.test_connect import PASSWORD, connect_config, free_port, list_dms

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=420,900",
    ):  # fmt: skip
        options.add_argument(flag)
    # The chromedriver path given: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("DMGW_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def test_connect_in_a_browser(
    browser: Any, aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    client = await aiohttp_client(
        GatewayTestServer(create_app(connect_config(emulator, port)), host="127.0.0.1", port=port)
    )
    shots = _screenshots(tmp_path)

    async def step(name: str, action: Any) -> None:
        """One browser action, off the event loop that serves the gateway and the emulator, then a PNG."""
        await asyncio.to_thread(action)
        assert await asyncio.to_thread(browser.save_screenshot, str(shots / f"connect-{name}.png"))

    await step("1-landing", lambda: browser.get(f"http://127.0.0.1:{port}/connect"))
    assert browser.title.startswith("Connect your X account")
    await step("2-consent", lambda: browser.find_element(By.ID, "sign-in").click())
    assert browser.current_url.startswith(emulator.url + "/i/oauth2/authorize?")

    def approve() -> None:
        name = browser.find_element(By.ID, "screen_name")
        name.clear()
        name.send_keys("theSeanCook")
        browser.find_element(By.ID, "allow").click()

    await step("3-form", approve)
    assert browser.current_url.startswith(f"http://127.0.0.1:{port}/connect/callback?")
    assert browser.find_element(By.ID, "username").get_attribute("value") == "theSeanCook"

    def fill_in() -> None:
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "password_confirm").send_keys(PASSWORD)
        browser.find_element(By.ID, "finish").click()

    await step("4-done", fill_in)
    assert browser.find_element(By.ID, "server-url").text == f"http://127.0.0.1:{port}/api"
    assert browser.find_element(By.ID, "username").text == "theSeanCook"
    user = await client.server.app[STORE_KEY].get_user("theSeanCook")
    assert user is not None and user.grant.access_token not in browser.page_source
    assert {p.name for p in shots.glob("connect-*.png")} >= {"connect-1-landing.png", "connect-4-done.png"}
    answer = await list_dms(client, "theSeanCook", PASSWORD)
    assert answer.status == 200 and await answer.json()
