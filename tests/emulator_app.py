"""The emulator as an in-process application on a clock the test moves: fixtures for the emulator's own tests.

Import the fixtures into a test module (``from tests.emulator_app import client, clock, state``) to get
``clock`` (real time plus an offset the test sets), ``state`` (the default seed on that clock) and
``client`` (an ``aiohttp_client`` on the emulator's app for that state).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.emulator import EmulatorState, create_app, default_seed


class SkewedClock:
    """Real time plus ``offset``: signing clients stamp requests with the real clock, the emulator reads this."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> SkewedClock:
    return SkewedClock()


@pytest.fixture
def state(clock: SkewedClock) -> EmulatorState:
    return EmulatorState.from_seed(default_seed(), clock=clock)


@pytest.fixture
async def client(aiohttp_client: Any, state: EmulatorState) -> Any:
    return await aiohttp_client(create_app(state))
