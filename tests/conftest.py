"""Shared fixtures: a real emulator on a loopback port, and gateways built on it through aiohttp_client."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Config, StoreConfig, load_config
from gateway.edge import GatewayRunner
from gateway.emulator import EmulatorServer
from gateway.keys import SERVICE_KEY, STORE_KEY
from gateway.store.base import MessageStore, Store
from gateway.store.factory import open_store

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


# The emulator as an in-process app on a movable clock (fixtures clock, state, client) for its own tests.
pytest_plugins = ("tests.emulator_app",)


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer() as server:
        yield server


def gateway_config(emulator: EmulatorServer, *, store_url: str = "memory", **sections: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        # Retries back off for a few milliseconds only, to keep the suite fast.
        "upstream": {"base_url": emulator.url, "bearer_token": SEAN_TOKEN, "timeout": 2.0, "retry_backoff": 0.002},
        "store": {"url": store_url},
        "auth": {"sidecar": True},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(env={}, overrides=overrides)


class GatewayTestServer(TestServer):
    """aiohttp's test server on the runner ``dm-gateway serve`` uses, so that tests meet the gateway's own
    answers to requests that do not parse."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
def make_gateway(aiohttp_client: Any, emulator: EmulatorServer) -> GatewayFactory:
    """Build a gateway in front of the emulator: ``await make_gateway(store=..., upstream={...})``."""

    async def make(*, store: MessageStore | None = None, store_url: str = "memory", **sections: Any) -> TestClient:
        config = gateway_config(emulator, store_url=store_url, **sections)
        return await aiohttp_client(GatewayTestServer(create_app(config, store=store)))

    return make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, tmp_path: Any) -> TestClient:
    """The gateway on its embedded default store, SQLite, in a fresh file."""
    return await make_gateway(store_url=f"sqlite:///{tmp_path}/gateway.sqlite3")


def store_of(client: TestClient) -> MessageStore:
    return client.server.app[STORE_KEY]


async def settled(client: TestClient) -> MessageStore:
    """The gateway's store once what destroys leave to be written after their answers (the deletion record,
    a store miss's message) is in it."""
    await client.server.app[SERVICE_KEY].drain()
    return store_of(client)


# Redis -------------------------------------------------------------------------------------------------
# The Redis tests use the server at DMGW_TEST_REDIS_URL (default: the local one CI starts). In CI they must
# run; elsewhere they skip, saying why, when no Redis answers. Each test writes under its own key prefix and
# deletes exactly those keys afterwards: the server may be shared, so nothing here flushes a database.

REDIS_URL = os.environ.get("DMGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL; skips (fails in CI) when it does not answer a PING."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if _in_ci():
            pytest.fail(f"CI is set but Redis at {REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({exc}); start one or set DMGW_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


def _free_cluster_ports(count: int) -> list[int]:
    """Loopback ports free now, each with its cluster bus port (port + 10000) free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 55535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-primary Redis Cluster on loopback ports, started once per session and stopped at its end:
    ``redis+cluster://`` naming its nodes. Skips (fails in CI) without redis-server and redis-cli."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not (server and cli):
        if _in_ci():
            pytest.fail("CI is set but redis-server or redis-cli is not installed (the cluster tests need both)")
        pytest.skip("redis-server or redis-cli is not installed: the Redis Cluster tests need both")
    directory = tmp_path_factory.mktemp("redis-cluster")
    ports = _free_cluster_ports(3)
    processes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / f"nodes-{port}.conf"),
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            _wait_for(lambda port=port: _redis_cli(cli, port, "ping") == "PONG", f"redis-server on port {port}")
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            _wait_for(
                lambda port=port: "cluster_state:ok" in _redis_cli(cli, port, "cluster", "info"),
                f"the cluster as seen from port {port}",
            )
        yield "redis+cluster://" + ",".join(nodes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def _redis_cli(cli: str, port: int, *command: str) -> str:
    done = subprocess.run([cli, "-p", str(port), *command], capture_output=True, text=True, timeout=5)
    return done.stdout.strip()


def _wait_for(ready: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout} seconds")
        time.sleep(0.05)


@asynccontextmanager
async def redis_namespace(url: str) -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted at the end (on every primary of a
    cluster)."""
    from gateway.store.redis import redis_client

    prefix = f"dmgw-test:{uuid.uuid4().hex}:v1:"
    try:
        yield prefix
    finally:
        client = redis_client(url, socket_timeout=5)
        try:
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@asynccontextmanager
async def opened_store(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Any,
    *,
    settings: StoreConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Store]:
    """A fresh store of ``backend`` (memory, sqlite, redis or redis-cluster), closed (and its Redis keys
    deleted) at exit. ``settings`` gives retention, key and bounds (its url is ignored); ``clock`` replaces
    time.time."""
    settings = settings or StoreConfig()
    if backend in ("redis", "redis-cluster"):
        from gateway.store.redis import RedisStore

        url = request.getfixturevalue("redis_url" if backend == "redis" else "redis_cluster_url")
        async with redis_namespace(url) as prefix:
            store: Store = await RedisStore.open(
                url,
                prefix=prefix,
                message_ttl=settings.message_retention,
                deletion_ttl=settings.message_retention,
                user_ttl=settings.user_max_age,
                encryption_key=settings.encryption_key,
                clock=clock,
            )
            try:
                yield store
            finally:
                await store.close()
        return
    url = "memory" if backend == "memory" else f"sqlite:///{tmp_path}/{backend}.sqlite3"
    store = await open_store(url, settings=settings, clock=clock)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def redis_store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    """A RedisStore on the test server, under a prefix of its own."""
    async with opened_store("redis", request, tmp_path) as store:
        yield store


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Store]:
    """One store for several gateway replicas: a SQLite file, a Redis server, then a Redis Cluster."""
    async with opened_store(request.param, request, tmp_path) as store:
        yield store
