"""The admin status page and its JSON twin: numbers that match the traffic just sent, a window that forgets
old traffic, store sizes from every backend, no secret anywhere, admin-only, and summed over --workers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import html5lib
import pytest
from aiohttp.test_utils import TestClient

from gateway.admin import SAMPLER_KEY, create_admin_app
from gateway.app import create_app
from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token, hash_password
from gateway.emulator import EmulatorServer
from gateway.keys import STORE_KEY
from gateway.model import DirectMessage, User
from gateway.store.base import Store, StoreSize
from tests.conftest import PLAIN_IDS, GatewayTestServer, gateway_config, opened_store
from tests.test_workers import start_workers

DESTROY = "/1.1/direct_messages/destroy.json"
DESTROY_URL = DESTROY + "?id={}"
UNKNOWN_CALL = "/1.1/no-such-call.json"
CREATED = datetime(2020, 1, 1, tzinfo=UTC)

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_KEY = "<img src=x onerror=alert(2)>"

# Credentials with secrets the page must never show.
SECRETS = {
    "consumer secret": "consumer-secret-Zq81",
    "token": "token-value-Hx52",
    "token secret": "token-secret-Pw93",
    "password": "basic-password-Lm04",
    "access token": "grant-access-Vb65",
    "refresh token": "grant-refresh-Ty76",
    "other access token": "grant-access-Nc87",
}


class Clock:
    """Monotonic seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def gateway_and_admin(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path, clock: Clock | None = None
) -> tuple[TestClient, TestClient]:
    app = create_app(gateway_config(emulator, store_url=f"sqlite:///{tmp_path}/status.sqlite3"))
    gateway = await aiohttp_client(GatewayTestServer(app))
    admin = await aiohttp_client(create_admin_app(app, clock=clock or time.monotonic))
    return gateway, admin


async def send_traffic(gateway: TestClient) -> None:
    """Two destroys that succeed, one of an unknown message and three calls that exist nowhere."""
    for message_id in PLAIN_IDS:
        assert (await gateway.post(DESTROY_URL.format(message_id))).status == 200
    assert (await gateway.post(DESTROY_URL.format("1"))).status == 404
    for _ in range(3):
        assert (await gateway.get(UNKNOWN_CALL)).status == 404


def row(status: dict[str, Any], route: str) -> dict[str, Any]:
    [found] = [r for r in status["requests"]["rows"] if r["route"] == route]
    return found


def classes(two: int = 0, three: int = 0, four: int = 0, five: int = 0) -> dict[str, int]:
    return {"2xx": two, "3xx": three, "4xx": four, "5xx": five}


def assert_valid_html(text: str) -> None:
    html5lib.HTMLParser(strict=True).parse(text)  # raises on any parse error


async def test_the_json_twin_counts_the_traffic_just_sent(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path
) -> None:
    clock = Clock()
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, tmp_path, clock)
    await send_traffic(gateway)
    upstream_calls = len(emulator.state.requests)
    assert upstream_calls > 0

    response = await admin.get("/status.json")
    assert response.status == 200
    status = await response.json()
    assert row(status, DESTROY)["since_start"] == row(status, DESTROY)["last_5m"] == classes(two=2, four=1)
    assert row(status, "unmatched")["since_start"] == classes(four=3)
    assert status["requests"]["total"]["since_start"] == classes(two=2, four=4)
    everything = status["upstream"][0]
    assert everything["endpoint"] == "all"
    assert everything["since_start"]["attempts"] == upstream_calls
    assert everything["since_start"]["retries"] == 0
    assert 0 < everything["since_start"]["p50_seconds"] <= everything["since_start"]["p99_seconds"]
    by_endpoint = {r["endpoint"]: r["since_start"]["attempts"] for r in status["upstream"][1:]}
    assert by_endpoint["DELETE /2/dm_events/:id"] == 2
    assert sum(by_endpoint.values()) == upstream_calls
    assert status["readiness"] == (await (await admin.get("/readyz")).json())
    assert (status["workers"], status["version"]) == (1, "0.1.0")
    size = await gateway.server.app[STORE_KEY].size()
    assert status["store"] == {"messages": size.messages, "users": size.users}
    assert size.messages >= 2

    # Five minutes later, the window holds only what came after; since start holds everything.
    admin.server.app[SAMPLER_KEY].sample()
    clock.now += 301
    assert (await gateway.get(UNKNOWN_CALL)).status == 404
    status = await (await admin.get("/status.json")).json()
    assert row(status, DESTROY)["last_5m"] == classes()
    assert row(status, DESTROY)["since_start"] == classes(two=2, four=1)
    assert row(status, "unmatched")["last_5m"] == classes(four=1)
    assert row(status, "unmatched")["since_start"] == classes(four=4)
    assert status["upstream"][0]["last_5m"] == {"attempts": 0, "retries": 0, "p50_seconds": None, "p99_seconds": None}
    assert status["uptime_seconds"] == 301


async def test_the_page_shows_counts_and_keys_never_a_secret(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path
) -> None:
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, tmp_path)
    store: Store = gateway.server.app[STORE_KEY]
    soon, later = time.time() + 3600, time.time() + 7 * 86400
    await store.put_consumer(Consumer("legacy-app-key", SECRETS["consumer secret"]))
    await store.put_token(Token(SECRETS["token"], "legacy-app-key", SECRETS["token secret"]))
    password_hash = hash_password(SECRETS["password"])
    grant = OAuth2Grant(SECRETS["access token"], SECRETS["refresh token"], soon)
    await store.put_user(BasicUser("expiring-user", password_hash, grant))
    steady = OAuth2Grant(SECRETS["other access token"], None, later)
    await store.put_user(BasicUser("steady-user", password_hash, steady))
    # Names are chosen by whoever registers: markup in them is shown as text.
    await store.put_consumer(Consumer(HOSTILE_KEY, "x"))
    await store.put_user(BasicUser(HOSTILE_NAME, password_hash, OAuth2Grant("x", None, soon)))
    await send_traffic(gateway)
    texts = [m.text for m in [await store.get_message(i) for i in PLAIN_IDS] if m is not None]
    assert texts  # the destroyed messages' text is in the store, and must not reach the page

    page = await admin.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert_valid_html(html)
    assert '<meta http-equiv="refresh" content="10">' in html
    status = await (await admin.get("/status.json")).json()
    assert status["credentials"] == {
        "consumers": 2,
        "tokens": 1,
        "basic_users": 3,
        "grants_expiring_within_a_day": 2,
        "consumer_keys": sorted([HOSTILE_KEY, "legacy-app-key"]),
        "expiring_usernames": sorted([HOSTILE_NAME, "expiring-user"]),
    }
    assert 'id="expiring">2<' in html and "legacy-app-key" in html and "expiring-user" in html
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    raw_json = await (await admin.get("/status.json")).text()
    for what, secret in [*SECRETS.items(), ("password hash", password_hash), *(("DM text", t) for t in texts)]:
        assert secret not in html, what
        assert secret not in raw_json, what


async def test_the_status_page_is_on_the_admin_listener_only(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path
) -> None:
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, tmp_path)
    for path in ("/", "/status.json"):
        response = await gateway.get(path)
        assert response.status == 404, path
        assert "dm-gateway status" not in await response.text()
        assert (await admin.get(path)).status == 200
    assert not emulator.state.requests  # the public 404s asked nothing upstream


async def test_a_store_it_cannot_read_is_shown_not_a_500(
    aiohttp_client: Any, emulator: EmulatorServer, tmp_path: Path
) -> None:
    gateway, admin = await gateway_and_admin(aiohttp_client, emulator, tmp_path)
    await gateway.server.app[STORE_KEY].close()
    page = await admin.get("/")
    assert page.status == 200
    html = await page.text()
    assert_valid_html(html)
    assert 'id="readiness" class="degraded"' in html
    status = await (await admin.get("/status.json")).json()
    assert status["readiness"]["status"] == "degraded"
    assert status["store"] == {"error": "sqlite store is closed"}
    assert "error" in status["credentials"]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
async def test_store_size_counts_live_messages_and_users(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    clock = Clock()
    async with opened_store(backend, request, tmp_path, clock=clock) as store:
        assert await store.size() == StoreSize(messages=0, users=0)
        messages = [
            DirectMessage(id=str(n), text=f"text {n}", created_at=CREATED, sender_id="1", recipient_id="2")
            for n in range(1, 4)
        ]
        await store.put_messages(messages)
        await store.put_messages(messages[:1])  # learned again: still one message
        await store.put_users([User(id="1", username="one", name="One"), User(id="2", username="two", name="Two")])
        assert await store.size() == StoreSize(messages=3, users=2)
        clock.now += 8 * 86400  # past the default user max age (7 days), within message retention (30 days)
        assert await store.size() == StoreSize(messages=3, users=0)
        clock.now += 30 * 86400
        assert await store.size() == StoreSize(messages=0, users=0)


async def test_under_workers_the_page_sums_every_worker(emulator: EmulatorServer, tmp_path: Path) -> None:
    process, port, admin_port = await start_workers(emulator, tmp_path, 2)
    requests = 20
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(requests):
                async with session.get(f"http://127.0.0.1:{port}{UNKNOWN_CALL}") as response:
                    assert response.status == 404
            async with session.get(f"http://127.0.0.1:{port}/status.json") as response:
                assert response.status == 404
            async with session.get(f"http://127.0.0.1:{admin_port}/status.json") as response:
                status = await response.json()
            async with session.get(f"http://127.0.0.1:{admin_port}/") as response:
                html = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    served_by = {entry["pid"] for entry in access if entry["path"] == UNKNOWN_CALL}
    assert len(served_by) == 2, log  # both workers answered some, and the page adds them up
    assert status["workers"] == 2
    # The unknown calls, and the public listener's 404 for /status.json.
    assert row(status, "unmatched")["since_start"] == row(status, "unmatched")["last_5m"] == classes(four=requests + 1)
    assert status["readiness"]["status"] == "ready"
    assert_valid_html(html)
    assert '<td id="workers">' not in html and 'id="workers">2<' in html
