"""Shared fixtures: a real emulator on a loopback port, and gateways built on it through aiohttp_client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import STORE_KEY, create_app
from gateway.config import Config, load_config
from gateway.emulator import EmulatorServer
from gateway.store.base import MessageStore

# Seeded by gateway/emulator/seed.json.
SEAN_TOKEN = "emulator-token-theSeanCook"
MICK_TOKEN = "emulator-token-s0c1alm3dia"
MARCOS_TOKEN = "emulator-token-marcosgdf"
XDEV_TOKEN = "emulator-token-XDevelopers"

SEED_002_ID = "240251665733795841"  # v1.1 docs example: s0c1alm3dia -> theSeanCook
SEED_003_XML_ID = "39"  # StatusNet docs examples: marcosgdf to self
SEED_003_JSON_ID = "38"
ENTITIES_ID = "1583890000000000001"  # XDevelopers -> theSeanCook, hashtag, url and mention
HOSTILE_TEXT_ID = "1583890000000000002"  # theSeanCook -> XDevelopers, markup, quotes and a BEL
PLAIN_IDS = ("1583890000000000003", "1583890000000000004")  # theSeanCook <-> s0c1alm3dia
GROUP_ID = "1583890000000000005"
JOIN_EVENT_ID = "1583890000000000006"
VANISHED_SENDER_ID = "1583890000000000007"

GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer() as server:
        yield server


def gateway_config(emulator: EmulatorServer, *, store_url: str = "memory", **sections: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "upstream": {"base_url": emulator.url, "bearer_token": SEAN_TOKEN, "timeout": 2.0},
        "store": {"url": store_url},
        "auth": {"sidecar": True},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(env={}, overrides=overrides)


@pytest.fixture
def make_gateway(aiohttp_client: Any, emulator: EmulatorServer) -> GatewayFactory:
    """Build a gateway in front of the emulator: ``await make_gateway(store=..., upstream={...})``."""

    async def make(*, store: MessageStore | None = None, store_url: str = "memory", **sections: Any) -> TestClient:
        config = gateway_config(emulator, store_url=store_url, **sections)
        return await aiohttp_client(create_app(config, store=store))

    return make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, tmp_path: Any) -> TestClient:
    """The gateway on its embedded default store, SQLite, in a fresh file."""
    return await make_gateway(store_url=f"sqlite:///{tmp_path}/gateway.sqlite3")


def store_of(client: TestClient) -> MessageStore:
    return client.server.app[STORE_KEY]
