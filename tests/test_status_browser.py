"""The admin status page in a real browser (headless Chromium): after traffic through the gateway, the numbers
it shows are the traffic's, and a screenshot of it is kept for review."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.emulator import EmulatorServer
from tests.browser import browser, screenshot  # noqa: F401  (browser is a fixture)
from tests.test_status_page import DESTROY, gateway_and_admin, send_traffic

ALL_UPSTREAM = '#upstream tr[data-endpoint="all"]'


def cell(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def counts(driver: Any, route: str, span: str) -> dict[str, int]:
    row = f'#requests tr[data-route="{route}"]'
    return {c: int(cell(driver, f'{row} td[data-span="{span}"][data-class="{c}"]')) for c in ("2xx", "4xx", "5xx")}


async def test_the_status_page_shows_the_traffic_just_sent(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path, browser: Any, request: pytest.FixtureRequest
) -> None:
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, tmp_path)
    await send_traffic(gateway)
    upstream_calls = len(emulator.state.requests)

    # The driver blocks: it runs in a thread so that this loop can serve the page it asks for.
    await asyncio.to_thread(browser.get, str(admin.make_url("/")))
    seen = await asyncio.to_thread(
        lambda: {
            "title": browser.title,
            "destroy": counts(browser, DESTROY, "last_5m"),
            "destroy since start": counts(browser, DESTROY, "since_start"),
            "unknown": counts(browser, "unmatched", "since_start"),
            "readiness": cell(browser, "#readiness"),
            "attempts": cell(browser, f"{ALL_UPSTREAM} td[data-span=since_start][data-field=attempts]"),
            "messages": cell(browser, "#store-messages"),
            "workers": cell(browser, "#workers"),
        }
    )
    picture = await asyncio.to_thread(screenshot, browser, request, "status")
    assert picture.stat().st_size > 0

    status = await (await admin.get("/status.json")).json()
    assert seen["title"] == "dm-gateway status"
    assert seen["destroy"] == seen["destroy since start"] == {"2xx": 2, "4xx": 1, "5xx": 0}
    assert seen["unknown"] == {"2xx": 0, "4xx": 3, "5xx": 0}
    assert seen["readiness"] == "ready"
    assert int(seen["attempts"]) == upstream_calls
    assert int(seen["messages"]) == status["store"]["messages"] >= 2
    assert seen["workers"] == "1"

    # On a phone-sized window the page still fits: only the wide tables scroll, inside their own boxes.
    await asyncio.to_thread(browser.set_window_size, 390, 844)
    await asyncio.to_thread(browser.refresh)
    width = await asyncio.to_thread(browser.execute_script, "return document.documentElement.scrollWidth")
    inner = await asyncio.to_thread(browser.execute_script, "return window.innerWidth")
    await asyncio.to_thread(screenshot, browser, request, "status-phone")
    assert width <= inner, (width, inner)
