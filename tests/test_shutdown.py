"""Graceful shutdown of a real `dm-gateway serve`: SIGTERM with a request in flight.

The emulator holds the upstream DELETE (a delay fault rule), so the gateway's request is still running
when the signal arrives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.emulator import EmulatorServer
from gateway.emulator.faults import FaultRule
from tests.conftest import PLAIN_IDS, SEAN_TOKEN
from tests.test_cli import CLI, free_port

DESTROY = "/1.1/direct_messages/destroy.json?id={}"


async def start_serve(
    emulator: EmulatorServer, tmp_path: Path, *extra: str, server: str = ""
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f"[server]\n{server}\n[auth]\nsidecar = true\n")
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--config", str(config), "--port", str(port), "--admin-port", "0", "--upstream", emulator.url,
        "--store", f"sqlite:///{tmp_path}/serve.sqlite3", *extra,
        env={**os.environ, "DMGW_UPSTREAM_BEARER": SEAN_TOKEN},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await wait_until_serving(port, process)
    return process, port


async def wait_until_serving(port: int, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            if process.returncode is not None:
                pytest.fail(f"dm-gateway serve exited with {process.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/1.1/nothing-here.json") as response:
                    assert response.status == 404
                    return
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.1)
    pytest.fail("dm-gateway serve never answered")


async def wait_for_upstream_call(emulator: EmulatorServer, method: str) -> None:
    for _ in range(100):
        if any(sent.method == method for sent in emulator.state.requests):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the gateway never sent {method} upstream")


async def connection_refused(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        await asyncio.sleep(0.05)
    return False


async def destroy(port: int, message_id: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}{DESTROY.format(message_id)}") as response,
    ):
        return response.status, await response.json()


async def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    process, port = await start_serve(emulator, tmp_path)
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", action="delay", delay=1.5))
    in_flight = asyncio.create_task(destroy(port, PLAIN_IDS[0]))
    try:
        await wait_for_upstream_call(emulator, "DELETE")
        process.send_signal(signal.SIGTERM)
        assert await connection_refused(port, within=1.0)  # no longer accepting, while the request still runs
        assert not in_flight.done()
        status, body = await asyncio.wait_for(in_flight, 10)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (status, body["id_str"]) == (200, PLAIN_IDS[0])
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], "38895958")
    assert process.returncode == 0, stderr
    assert "stopping: finishing requests in flight (at most 30s)" in stderr.decode()


async def test_a_request_still_running_after_shutdown_timeout_is_cut(emulator: EmulatorServer, tmp_path: Path) -> None:
    process, port = await start_serve(emulator, tmp_path, server="shutdown_timeout = 0.5")
    emulator.state.faults.append(FaultRule(method="DELETE", path="/2/dm_events/*", action="delay", delay=8))
    in_flight = asyncio.create_task(destroy(port, PLAIN_IDS[0]))
    try:
        await wait_for_upstream_call(emulator, "DELETE")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        stopped_after = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr
    assert stopped_after < 5, stopped_after  # not the 8 s the upstream call would have taken
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(in_flight, 5)
