"""The admin listener: liveness, readiness that follows the store down and back up, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.admin import create_admin_app
from gateway.app import create_app
from gateway.emulator import EmulatorServer
from gateway.keys import SERVICE_KEY
from gateway.store.base import StoreError
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from tests.conftest import PLAIN_IDS, SEAN_TOKEN, SEED_002_ID, gateway_config
from tests.relay import TcpRelay, relayed_redis_store
from tests.test_cli import CLI, free_port

DESTROY = "/1.1/direct_messages/destroy.json?id={}"


@pytest.fixture
async def relayed_redis(redis_url: str) -> AsyncIterator[tuple[TcpRelay, RedisStore]]:
    async with relayed_redis_store(redis_url, socket_timeout=0.5) as (store, relay):
        yield relay, store


async def gateway_and_admin(
    aiohttp_client: Any, emulator: EmulatorServer, **options: Any
) -> tuple[TestClient, TestClient]:
    app = create_app(gateway_config(emulator, store_url=options.pop("store_url", "memory")), **options)
    gateway = await aiohttp_client(app)
    admin = await aiohttp_client(create_admin_app(app, ping_timeout=1.0))
    return gateway, admin


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series == name and not labels:
            return float(value)
        if series.startswith(name + "{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return None


async def metrics_text(admin: TestClient) -> str:
    response = await admin.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return await response.text()


async def test_healthz_answers_ok(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    _, admin = await gateway_and_admin(aiohttp_client, emulator)
    response = await admin.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_readyz_is_ready_when_the_store_answers(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Any, backend: str
) -> None:
    store_url = "memory" if backend == "memory" else f"sqlite:///{tmp_path}/ready.sqlite3"
    _, admin = await gateway_and_admin(aiohttp_client, emulator, store_url=store_url)
    response = await admin.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "store": "up", "breaker": "closed"}
    assert sample(await metrics_text(admin), "dmgw_store_up") == 1.0


async def test_readyz_is_degraded_while_redis_is_cut_off_and_ready_again_after(
    aiohttp_client: Any, emulator: EmulatorServer, relayed_redis: tuple[TcpRelay, RedisStore]
) -> None:
    relay, store = relayed_redis
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, store=store)
    assert (await admin.get("/readyz")).status == 200

    relay.cut()
    response = await admin.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "degraded" and body["store"] == "down"
    assert "redis" in body["detail"]
    assert sample(await metrics_text(admin), "dmgw_store_up") == 0.0

    # Degraded, not down: a destroy still succeeds from upstream, and every swallowed store failure counts.
    reply = await gateway.post(DESTROY.format(SEED_002_ID))
    assert reply.status == 200
    assert (await reply.json())["id_str"] == SEED_002_ID
    await gateway.server.app[SERVICE_KEY].drain()  # the deletion is recorded after the answer
    text = await metrics_text(admin)
    assert (sample(text, "dmgw_store_errors_total", operation="get_message") or 0) >= 1
    assert (sample(text, "dmgw_store_errors_total", operation="mark_deleted") or 0) >= 1

    relay.restore()  # the same port again: no restart, no reconfiguration
    response = await admin.get("/readyz")
    assert response.status == 200, await response.text()
    assert await response.json() == {"status": "ready", "store": "up", "breaker": "closed"}
    assert sample(await metrics_text(admin), "dmgw_store_up") == 1.0


async def test_readyz_is_degraded_when_the_sqlite_worker_cannot_answer_in_time(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Any
) -> None:
    store = await SQLiteStore.open(str(tmp_path / "busy.sqlite3"))
    try:
        _, admin = await gateway_and_admin(aiohttp_client, emulator, store=store)
        # The store's one worker thread is stuck (a long disk stall, say): pings queue behind it.
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        stuck = loop.run_in_executor(
            store._worker._executor, lambda: asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        )
        response = await admin.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body == {
            "status": "degraded",
            "store": "down",
            "breaker": "closed",
            "detail": "store did not answer within 1s",
        }
        release.set()
        await stuck
        response = await admin.get("/readyz")
        assert response.status == 200
    finally:
        await store.close()


async def test_every_backend_pings_and_a_closed_one_raises(tmp_path: Any, redis_url: str) -> None:
    from gateway.store.factory import open_store

    sqlite = await open_store(f"sqlite:///{tmp_path}/p.sqlite3")
    await sqlite.ping()
    await sqlite.close()
    with pytest.raises(StoreError):
        await sqlite.ping()
    redis = await open_store(redis_url)
    await redis.ping()
    await redis.close()
    with pytest.raises(StoreError):
        await redis.ping()
    memory = await open_store("memory")
    await memory.ping()


async def test_metrics_count_requests_by_dialect_route_and_status(
    aiohttp_client: Any, emulator: EmulatorServer
) -> None:
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator)
    assert (await gateway.post(DESTROY.format(PLAIN_IDS[0]))).status == 200
    assert (await gateway.post(DESTROY.format("1"))).status == 404
    assert (
        await gateway.delete(f"/2/dm_events/{PLAIN_IDS[1]}", headers={"Authorization": f"Bearer {SEAN_TOKEN}"})
    ).status == 200
    text = await metrics_text(admin)
    route = "/1.1/direct_messages/destroy.json"
    assert sample(text, "dmgw_requests_total", dialect="twitter_v1", route=route, status="200") == 1.0
    assert sample(text, "dmgw_requests_total", dialect="twitter_v1", route=route, status="404") == 1.0
    assert sample(text, "dmgw_requests_total", dialect="v2", route="/2/{tail}", status="200") == 1.0
    for secret in (SEAN_TOKEN, PLAIN_IDS[0], PLAIN_IDS[1]):
        assert secret not in text
    # No store failure happened, so nothing was counted.
    assert sample(text, "dmgw_store_errors_total") is None


async def test_admin_routes_are_not_on_the_public_listener(aiohttp_client: Any, emulator: EmulatorServer) -> None:
    gateway, _ = await gateway_and_admin(aiohttp_client, emulator)
    for path in ("/metrics", "/healthz", "/readyz"):
        response = await gateway.get(path)
        assert response.status == 404, path
        text = await response.text()
        assert "dmgw_" not in text and '"status"' not in text
        assert "Sorry, that page does not exist." in text  # the legacy not-found


async def test_serve_answers_healthz_on_the_admin_port_and_metrics_keep_no_secrets(
    emulator: EmulatorServer, tmp_path: Any
) -> None:
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "DMGW_UPSTREAM_BEARER": SEAN_TOKEN}
    config = tmp_path / "sidecar.toml"
    config.write_text("[auth]\nsidecar = true\n")
    process = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--config", str(config), "--port", str(port), "--admin-port", str(admin_port),
        "--upstream", emulator.url, "--store", f"sqlite:///{tmp_path}/serve.sqlite3",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{admin_port}/healthz") as response:
                        assert response.status == 200
                        assert await response.json() == {"status": "ok"}
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the admin listener never answered")
            async with session.post(f"http://127.0.0.1:{port}{DESTROY.format(SEED_002_ID)}") as response:
                assert response.status == 200
                message_text = (await response.json())["text"]
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
                metrics = await response.text()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, stderr
    assert (
        'dmgw_requests_total{dialect="twitter_v1",route="/1.1/direct_messages/destroy.json",status="200"} 1.0'
        in metrics
    )
    assert "dmgw_store_up 1.0" in metrics
    assert message_text and message_text not in metrics
    assert SEAN_TOKEN not in metrics and SEED_002_ID not in metrics
    log = stderr.decode()
    assert f"admin listener on http://127.0.0.1:{admin_port}" in log
    assert "not loopback" not in log
