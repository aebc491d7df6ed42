"""/connect in a real browser: the distribution's headless Chromium, driven by Selenium through its chromedriver,
clicks "Sign in with X", approves at the emulator, fills the form and sees the result; then an unmodified
StatusNet-style call works with the new password. A PNG of each page is kept for review, under the directory
in DMGW_SCREENSHOTS (else the test's tmp_path).

Outside CI the test skips when Chromium or chromedriver is missing; under CI=true it fails instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.emulator import EmulatorServer
from gateway.keys import STORE_KEY
from tests.browser import browser, screenshot  # noqa: F401  (browser is a fixture)
from tests.conftest import GatewayTestServer
from tests.test_connect import PASSWORD, connect_config, free_port, list_dms


async def test_connect_in_a_browser(
    browser: Any, aiohttp_client: Any, emulator: EmulatorServer, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    client = await aiohttp_client(
        GatewayTestServer(create_app(connect_config(emulator, port)), host="127.0.0.1", port=port)
    )
    await asyncio.to_thread(browser.set_window_size, 420, 900)  # a phone's width
    shots: list[Path] = []

    async def step(name: str, action: Any) -> None:
        """One browser action, off the event loop that serves the gateway and the emulator, then a PNG."""
        await asyncio.to_thread(action)
        shots.append(await asyncio.to_thread(screenshot, browser, request, name))

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
    assert all(shot.is_file() for shot in shots)
    assert {shot.name.split("-", 1)[1] for shot in shots} >= {"1-landing.png", "4-done.png"}
    answer = await list_dms(client, "theSeanCook", PASSWORD)
    assert answer.status == 200 and await answer.json()
