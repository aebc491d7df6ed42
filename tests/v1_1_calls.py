"""What the v1.1 classic and events call tests share: an emulator whose clock never moves, so sent
messages have the same created_at on every run, and readers of what the gateway asked of v2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from gateway.emulator import EmulatorServer, EmulatorState, default_seed

NOW = 1_700_000_000.0  # Tue Nov 14 22:13:20 +0000 2023


@asynccontextmanager
async def frozen_emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator on its seed, with a clock that never moves."""
    async with EmulatorServer(EmulatorState.from_seed(default_seed(), clock=lambda: NOW)) as server:
        yield server


def calls(emulator: EmulatorServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


def list_requests(emulator: EmulatorServer) -> list[dict[str, str]]:
    """The query of every ``GET /2/dm_events`` the gateway made, in order."""
    return [r.query for r in emulator.state.requests if (r.method, r.path) == ("GET", "/2/dm_events")]


def posts(emulator: EmulatorServer) -> list[str]:
    return [r.path for r in emulator.state.requests if r.method == "POST"]


def error_body(code: int, message: str) -> bytes:
    return orjson.dumps({"errors": [{"code": code, "message": message}]})
