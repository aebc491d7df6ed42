"""The Redis store on a Redis Cluster: URLs, key layout (one record, one hash slot), names that need escaping in
a hash tag, and two gateways on one cluster. The store's whole contract runs on the cluster in test_store.py."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.crc import key_slot

from gateway.app import create_app
from gateway.auth.credentials import Consumer, Token
from gateway.config import ConfigError, StoreConfig, store_location
from gateway.emulator import FaultRule
from gateway.store.base import StoreError
from gateway.store.factory import check_store, open_store
from gateway.store.redis import DEFAULT_PREFIX, RedisStore, redis_client
from tests.conftest import MARCOS_TOKEN, SEED_003_JSON_ID, gateway_config, opened_store
from tests.test_store import make_message, make_user

MARCOS = {"Authorization": f"Bearer {MARCOS_TOKEN}"}


@pytest.fixture
async def cluster_store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[RedisStore]:
    async with opened_store("redis-cluster", request, tmp_path) as store:
        assert isinstance(store, RedisStore) and store.cluster
        yield store


@pytest.fixture
async def raw(redis_cluster_url: str) -> AsyncIterator[Any]:
    client = redis_client(redis_cluster_url, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002",
        "rediss+cluster://user:secret@redis.internal:6380/0",
    ],
)
def test_cluster_urls_select_the_redis_store(url: str) -> None:
    assert store_location(url) == ("redis", url)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+cluster://127.0.0.1", "needs a host and a port"),
        ("redis+cluster://:secret@127.0.0.1:7000,:7001", "needs a host and a port"),
        ("redis+cluster://127.0.0.1:70000", "port is not a port number"),
        ("redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("redis+cluster://127.0.0.1:7000?ssl=1", "no query or fragment"),
        ("redis+clusters://127.0.0.1:7000", "store.url must be"),
    ],
)
def test_bad_cluster_urls_are_refused_without_repeating_a_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)) as raised:
        store_location(url)
    assert "secret" not in str(raised.value)


async def test_a_cluster_url_opens_a_cluster_store(redis_cluster_url: str) -> None:
    store = await open_store(redis_cluster_url, settings=StoreConfig(url=redis_cluster_url))
    try:
        assert isinstance(store, RedisStore) and store.cluster and store.prefix == DEFAULT_PREFIX
        await store.ping()
    finally:
        await store.close()


async def test_an_unreachable_cluster_is_a_store_error_at_start() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis+cluster://127.0.0.1:{port}"
    with pytest.raises(StoreError, match="RedisClusterUnreachableError"):
        await open_store(url)
    with pytest.raises(StoreError):
        await check_store(StoreConfig(url=url))


def test_a_cluster_store_refuses_a_prefix_with_braces(redis_cluster_url: str) -> None:
    with pytest.raises(ValueError, match="must not hold"):
        RedisStore(redis_cluster_url, prefix="dmgw:{v1}:")


async def test_a_message_and_its_deletions_share_a_slot_and_are_renewed_together(
    cluster_store: RedisStore, raw: Any
) -> None:
    ids = [str(1001 + i) for i in range(30)]
    await cluster_store.put_messages([make_message(i) for i in ids])
    await cluster_store.mark_deleted_many([(i, "u1") for i in ids])
    prefix = cluster_store.prefix
    for message_id in ids:
        message_key, deletions_key = f"{prefix}msg:{{{message_id}}}", f"{prefix}del:{{{message_id}}}"
        assert await raw.exists(message_key) == 1 and await raw.exists(deletions_key) == 1
        assert key_slot(message_key.encode()) == key_slot(deletions_key.encode())
        assert len(await cluster_store.get_deletions(message_id)) == 1  # every slot's script ran
    primaries = {raw.get_node_from_key(f"{prefix}msg:{{{i}}}").name for i in ids}
    assert len(primaries) == 3  # one record's keys together, the records over every primary
    assert (await cluster_store.size()).messages == 30

    # Learned again, each message renews its deletions (every slot's script its own), and counts once.
    for message_id in ids:
        await raw.expire(f"{prefix}del:{{{message_id}}}", 5)
    await cluster_store.put_messages([make_message(i, text="again") for i in ids])
    for message_id in ids:
        assert await raw.ttl(f"{prefix}del:{{{message_id}}}") > 5
        found = await cluster_store.get_message(message_id)
        assert found is not None and found.text == "again"
    assert (await cluster_store.size()).messages == 30


async def test_messages_of_one_turn_are_read_together_from_every_primary(cluster_store: RedisStore, raw: Any) -> None:
    ids = [str(1001 + i) for i in range(12)]
    messages = [make_message(i, sender_id=str(100 + n), recipient_id=str(200 + n)) for n, i in enumerate(ids)]
    await cluster_store.put_messages(messages)
    await cluster_store.put_users([make_user(str(k + n)) for n in range(12) for k in (100, 200)])
    await raw.initialize()
    assert len({raw.get_node_from_key(f"{cluster_store.prefix}msg:{{{i}}}").name for i in ids}) == 3

    results = await asyncio.gather(*(cluster_store.get_message_with_users(i) for i in [*ids, "404"]))

    assert results[-1] == (None, {})
    for message, (found, users) in zip(messages, results, strict=False):
        assert found == message
        assert users == {u: make_user(u) for u in (message.sender_id, message.recipient_id)}


async def test_names_that_need_escaping_in_a_hash_tag_round_trip(cluster_store: RedisStore, raw: Any) -> None:
    odd = ["we}ird", "%7D", "a%b", "{x}", "}"]
    for name in odd:
        await cluster_store.put_consumer(Consumer(key=name, secret=f"s-{name}"))
        await cluster_store.put_token(Token(token=f"t{name}", consumer_key=name, secret="ts"))
    entries = await cluster_store.list_credentials()
    assert sorted(entry.key for entry in entries if entry.kind == "consumer") == sorted(odd)
    assert sorted(entry.key for entry in entries if entry.kind == "token") == sorted(f"t{name}" for name in odd)
    for name in odd:
        assert (await cluster_store.get_consumer(name)) == Consumer(key=name, secret=f"s-{name}")
        tag = name.replace("%", "%25").replace("}", "%7D")
        consumer_key = f"{cluster_store.prefix}consumer:{{{tag}}}"
        assert await raw.exists(consumer_key) == 1
        assert await cluster_store.remove_credential("consumer", name)
        assert await cluster_store.get_token(f"t{name}") is None  # its token went with it, from another slot
    assert await cluster_store.list_credentials() == []


async def test_moving_a_token_to_another_consumer_leaves_the_first_ones_set(cluster_store: RedisStore) -> None:
    for key in ("c1", "c2"):
        await cluster_store.put_consumer(Consumer(key=key, secret="s"))
    await cluster_store.put_token(Token(token="t", consumer_key="c1", secret="ts"))
    await cluster_store.put_token(Token(token="t", consumer_key="c2", secret="ts2"))
    assert await cluster_store.remove_credential("consumer", "c1")
    assert (await cluster_store.get_token("t")) == Token(token="t", consumer_key="c2", secret="ts2")
    assert await cluster_store.remove_credential("token", "t")
    assert not await cluster_store.remove_credential("token", "t")


async def test_the_small_id_map_lives_in_one_slot(cluster_store: RedisStore, raw: Any) -> None:
    assert await cluster_store.small_ids(["1001", "1002", "1001"]) == [1, 2, 1]
    keys = [f"{cluster_store.prefix}small:{{map}}:{name}" for name in ("next", "by_id", "ids")]
    assert [await raw.exists(key) for key in keys] == [1, 1, 1]
    assert await cluster_store.v2_ids([2, 1, 3]) == {1: "1001", 2: "1002"}


async def test_plain_redis_keeps_its_key_names(redis_store: RedisStore, redis_url: str) -> None:
    assert not redis_store.cluster
    await redis_store.put_messages([make_message("1001")])
    await redis_store.mark_deleted("1001", "u1")
    await redis_store.put_consumer(Consumer(key="c1", secret="s"))
    await redis_store.small_ids(["1001"])
    client = redis_client(redis_url, socket_timeout=5)
    try:
        for key in ("msg:1001", "del:1001", "consumer:c1", "index:msg", "small:next", "small:by_id", "small:ids"):
            assert await client.exists(redis_store.prefix + key) == 1, key
    finally:
        await client.aclose()


async def test_two_gateways_on_one_cluster_share_what_they_learned(aiohttp_client, emulator, redis_cluster_url, raw):
    """Each gateway opens the cluster from its own URL, as two processes would: the message one learned
    before its delete failed upstream, the other answers from the cluster, and records the deletion."""
    config = gateway_config(emulator, store_url=redis_cluster_url)
    try:
        one = await aiohttp_client(create_app(config))
        other = await aiohttp_client(create_app(config))
        emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=3))
        assert (await one.post(f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=MARCOS)).status == 503
        emulator.state.requests.clear()
        response = await other.post(f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=MARCOS)
        assert response.status == 200
        body = orjson.loads(await response.read())
        assert (body["id"], body["text"], body["sender"]["screen_name"]) == (38, "abc", "marcosgdf")
        calls = [(r.method, r.path) for r in emulator.state.requests]
        assert calls == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{SEED_003_JSON_ID}")]
        assert await raw.hlen(f"{DEFAULT_PREFIX}del:{{{SEED_003_JSON_ID}}}") == 1
    finally:
        keys = [key async for key in raw.scan_iter(match=f"{DEFAULT_PREFIX}*", count=1000)]
        if keys:
            await raw.delete(*keys)
