"""Destroy round trips through the real app and the emulator: every route form, learning and persistence."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from gateway.app import create_app
from gateway.emulator import FaultRule
from gateway.keys import SERVICE_KEY
from gateway.model import User
from gateway.store.memory import MemoryStore
from tests.conftest import (
    ENTITIES_ID,
    GROUP_ID,
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEED_002_ID,
    SEED_003_JSON_ID,
    SEED_003_XML_ID,
    gateway_config,
    settled,
)

SEAN_ID = "38895958"
S0C1ALM3DIA_ID = "776627022"
MARCOS = {"Authorization": f"Bearer {MARCOS_TOKEN}"}


def upstream_calls(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.state.requests]


STATUSNET_FORMS = [
    ("POST", "/api/direct_messages/destroy/{id}.xml", None),
    ("DELETE", "/api/direct_messages/destroy/{id}.json", None),
    ("POST", "/1/direct_messages/destroy/{id}.json", None),
    ("DELETE", "/1/direct_messages/destroy/{id}.xml", None),
    ("POST", "/api/direct_messages/destroy.xml?id={id}", None),
    ("DELETE", "/1/direct_messages/destroy.json?id={id}", None),
    ("POST", "/api/direct_messages/destroy.json", "form"),
    ("DELETE", "/1/direct_messages/destroy.xml", "form"),
]


@pytest.mark.parametrize(("method", "template", "form"), STATUSNET_FORMS)
async def test_every_statusnet_form_deletes_once_upstream(gateway, emulator, method, template, form) -> None:
    data = {"id": SEED_003_XML_ID} if form else None
    response = await gateway.request(method, template.format(id=SEED_003_XML_ID), data=data, headers=MARCOS)
    assert response.status == 200, await response.text()
    body = await response.read()
    if template.split("?")[0].endswith(".xml"):
        assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<direct_message>\n <id>39</id>')
    else:
        assert orjson.loads(body)["id"] == 39
    deletes = [call for call in upstream_calls(emulator) if call[0] == "DELETE"]
    assert deletes == [("DELETE", f"/2/dm_events/{SEED_003_XML_ID}")]
    assert emulator.state.is_deleted_for(SEED_003_XML_ID, "1")


@pytest.mark.parametrize("where", ["query", "form"])
async def test_v1_1_classic_takes_the_id_from_query_or_form(gateway, emulator, where) -> None:
    if where == "query":
        response = await gateway.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    else:
        response = await gateway.post("/1.1/direct_messages/destroy.json", data={"id": SEED_002_ID})
    assert response.status == 200
    body = orjson.loads(await response.read())
    assert (body["id"], body["id_str"], body["text"]) == (240251665733795841, SEED_002_ID, "hello, tworld.")
    assert emulator.state.is_deleted_for(SEED_002_ID, SEAN_ID)


@pytest.mark.parametrize(("value", "has_entities"), [("false", False), ("0", False), ("f", False), ("FALSE", False),
                                                       ("true", True), ("1", True), ("banana", True)])  # fmt: skip
async def test_include_entities(gateway, value, has_entities) -> None:
    response = await gateway.post(f"/1.1/direct_messages/destroy.json?id={ENTITIES_ID}&include_entities={value}")
    body = orjson.loads(await response.read())
    assert ("entities" in body) is has_entities


# A delete that fails: the first attempt and the gateway's retries of it (upstream.retries, 2 by default).
FAIL_ONE_DELETE = 3


async def test_entities_become_legacy_entities_with_indices(gateway) -> None:
    response = await gateway.post(f"/1.1/direct_messages/destroy.json?id={ENTITIES_ID}")
    body = orjson.loads(await response.read())
    text, entities = body["text"], body["entities"]
    (hashtag,) = entities["hashtags"]
    assert text[slice(*hashtag["indices"])] == "#" + hashtag["text"] == "#v2"
    (url,) = entities["urls"]
    assert text[slice(*url["indices"])] == url["url"] == "https://t.co/abc123"
    assert url["expanded_url"] == "https://developer.x.com/en/docs/x-api"
    (mention,) = entities["user_mentions"]
    assert text[slice(*mention["indices"])] == "@theSeanCook"
    assert (mention["id"], mention["id_str"], mention["screen_name"]) == (38895958, SEAN_ID, "theSeanCook")


async def test_events_destroy_deletes_without_a_lookup(gateway, emulator) -> None:
    response = await gateway.delete(f"/1.1/direct_messages/events/destroy.json?id={PLAIN_IDS[0]}")
    assert response.status == 204
    assert upstream_calls(emulator) == [("DELETE", f"/2/dm_events/{PLAIN_IDS[0]}")]


async def test_events_destroy_takes_the_id_from_a_form_body(gateway, emulator) -> None:
    response = await gateway.delete("/1.1/direct_messages/events/destroy.json", data={"id": PLAIN_IDS[0]})
    assert response.status == 204
    assert emulator.state.is_deleted_for(PLAIN_IDS[0], SEAN_ID)


async def test_a_lookup_teaches_the_store_and_a_known_message_needs_no_lookup(gateway, emulator) -> None:
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    first = await gateway.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert first.status == 503
    store_now = await settled(gateway)
    stored = await store_now.get_message(SEED_002_ID)
    assert stored is not None and stored.text == "hello, tworld." and stored.recipient_id == SEAN_ID
    assert set(await store_now.get_users(["776627022", SEAN_ID])) == {"776627022", SEAN_ID}
    emulator.state.requests.clear()
    second = await gateway.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert second.status == 200
    # The store answers only a participant: whom the caller's credential acts for is asked once.
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{SEED_002_ID}")]
    store_now = await settled(gateway)
    assert (await store_now.get_deletion(SEED_002_ID)) is not None


class _HeldWrites(MemoryStore):
    """A memory store whose message writes wait until ``open`` is set, counting the store calls that write."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.writes: list[str] = []

    async def put_messages(self, messages) -> None:  # type: ignore[no-untyped-def]
        self.writes.append("put_messages")
        await self.open.wait()
        await super().put_messages(messages)

    async def mark_deleted_many(self, deletions) -> None:  # type: ignore[no-untyped-def]
        self.writes.append("mark_deleted_many")
        await super().mark_deleted_many(deletions)


async def test_a_store_miss_answers_before_its_message_is_stored_then_stores_it_with_its_deletion(
    make_gateway, emulator
) -> None:
    """A destroy whose message the store lacks answers from v2's lookup without waiting for the store; the
    message goes in after the answer, before its deletion record, in one pass for the destroys of a moment."""
    store = _HeldWrites()
    client = await make_gateway(store=store)
    async with asyncio.timeout(10):  # a destroy that waited for its message's write would never answer
        answers = await asyncio.gather(
            *(client.post(f"/1.1/direct_messages/destroy.json?id={message_id}") for message_id in PLAIN_IDS)
        )
    assert [answer.status for answer in answers] == [200, 200]  # while no message could be written
    assert await store.get_message(PLAIN_IDS[0]) is None
    store.open.set()
    await settled(client)
    for message_id in PLAIN_IDS:
        stored = await store.get_message(message_id)
        assert stored is not None and stored.id == message_id
        assert await store.get_deletion(message_id) is not None
    assert store.writes.count("put_messages") <= 2 and store.writes[-1] == "mark_deleted_many"


async def test_sqlite_store_survives_a_restart(aiohttp_client, emulator, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/restart.sqlite3"
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    first = await aiohttp_client(create_app(gateway_config(emulator, store_url=url)))
    assert (await first.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")).status == 503
    await first.close()

    emulator.state.requests.clear()
    second = await aiohttp_client(create_app(gateway_config(emulator, store_url=url)))
    response = await second.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert response.status == 200
    assert orjson.loads(await response.read())["sender"]["screen_name"] == "s0c1alm3dia"
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{SEED_002_ID}")]


async def test_two_gateways_sharing_a_store_share_what_they_learned(aiohttp_client, emulator, shared_store) -> None:
    """Run on a shared SQLite file and on a shared Redis: what one replica learned, the other answers from."""
    config = gateway_config(emulator)
    one = await aiohttp_client(create_app(config, store=shared_store))
    other = await aiohttp_client(create_app(config, store=shared_store))
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=503, times=FAIL_ONE_DELETE))
    assert (await one.post(f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=MARCOS)).status == 503
    emulator.state.requests.clear()
    response = await other.post(f"/api/direct_messages/destroy/{SEED_003_JSON_ID}.json", headers=MARCOS)
    assert response.status == 200
    body = orjson.loads(await response.read())
    assert (body["id"], body["text"], body["sender"]["screen_name"]) == (38, "abc", "marcosgdf")  # the full message
    assert upstream_calls(emulator) == [("GET", "/2/users/me"), ("DELETE", f"/2/dm_events/{SEED_003_JSON_ID}")]


async def test_a_group_message_is_not_a_legacy_dm_and_is_not_deleted(gateway, emulator) -> None:
    response = await gateway.post(f"/1.1/direct_messages/destroy.json?id={GROUP_ID}")
    assert response.status == 404
    assert orjson.loads(await response.read()) == {
        "errors": [{"code": 34, "message": "Sorry, that page does not exist."}]
    }
    assert not [call for call in upstream_calls(emulator) if call[0] == "DELETE"]


async def test_route_prefixes_are_configurable(make_gateway, emulator) -> None:
    client = await make_gateway(routes={"v1_1": [""], "statusnet": ["/gnusocial/api"]})
    response = await client.post(f"/direct_messages/destroy.json?id={SEED_002_ID}")
    assert response.status == 200
    response = await client.post(f"/gnusocial/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", headers=MARCOS)
    assert response.status == 200
    for gone in (
        f"/1.1/direct_messages/destroy.json?id={PLAIN_IDS[0]}",
        f"/api/direct_messages/destroy/{PLAIN_IDS[0]}.json",
    ):
        response = await client.post(gone)
        assert response.status == 404
        assert orjson.loads(await response.read())["errors"][0]["code"] == 34  # the root family's shape


async def test_unknown_path_under_a_statusnet_prefix_answers_in_statusnet_shape(make_gateway) -> None:
    client = await make_gateway(routes={"v1_1": [""], "statusnet": ["/api"]})
    response = await client.post("/api/direct_messages/nothing.xml")
    assert response.status == 404
    assert b"<hash>\n <error>API method not found.</error>" in await response.read()


async def test_rate_limit_headers_reach_v1_1_and_statusnet_clients(gateway) -> None:
    response = await gateway.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert int(response.headers["x-rate-limit-remaining"]) < int(response.headers["x-rate-limit-limit"])
    assert int(response.headers["x-rate-limit-reset"]) > 0
    response = await gateway.post(f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml", headers=MARCOS)
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(response.headers)


class SlowDeletionRecords(MemoryStore):
    """A store whose deletion records take until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.recorded: list[str] = []
        self.calls: list[list[str]] = []  # the message ids of every call, as it began

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        self.calls.append([message_id for message_id, _ in deletions])
        await self.release.wait()
        await super().mark_deleted_many(deletions)
        self.recorded.extend(message_id for message_id, _ in deletions)


async def test_the_answer_does_not_wait_for_the_deletion_record_and_shutdown_does(aiohttp_client, emulator) -> None:
    store = SlowDeletionRecords()
    app = create_app(gateway_config(emulator), store=store)
    gateway = await aiohttp_client(app)
    response = await asyncio.wait_for(gateway.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}"), 10)
    assert response.status == 200  # answered while the record is still being written
    assert store.recorded == []
    closing = asyncio.create_task(gateway.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # shutdown waits for the record...
    store.release.set()
    await asyncio.wait_for(closing, 10)
    assert store.recorded == [SEED_002_ID]  # ...which is then written
    assert await store.get_deletion(SEED_002_ID) is not None


async def test_deletions_made_while_a_record_is_written_go_to_the_store_together(aiohttp_client, emulator) -> None:
    store = SlowDeletionRecords()
    gateway = await aiohttp_client(create_app(gateway_config(emulator), store=store))
    for message_id in (SEED_002_ID, *PLAIN_IDS):
        assert (await gateway.post(f"/1.1/direct_messages/destroy.json?id={message_id}")).status == 200
    store.release.set()
    await gateway.server.app[SERVICE_KEY].drain()
    assert store.calls == [[SEED_002_ID], list(PLAIN_IDS)]  # one call for all that waited, none per destroy
    assert all([await store.get_deletion(i) for i in (SEED_002_ID, *PLAIN_IDS)])


async def test_a_retry_gets_its_tombstone_before_the_record_reaches_the_store(aiohttp_client, emulator) -> None:
    store = SlowDeletionRecords()
    gateway = await aiohttp_client(create_app(gateway_config(emulator), store=store))
    path = f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}"
    mick = {"Authorization": f"Bearer {MICK_TOKEN}"}
    try:
        first = await gateway.post(path)
        retry = await gateway.post(path)
        assert (first.status, retry.status) == (200, 200)
        assert await retry.read() == await first.read()
        assert await store.get_deletion(SEED_002_ID) is None  # still on its way
        # Mick, the other participant, deletes it for himself: his deletion is on its way beside the first
        # caller's, and each one's retry is answered as the first time.
        assert (await gateway.post(path, headers=mick)).status == 200
        assert (await gateway.post(path)).status == 200
        assert (await gateway.post(path, headers=mick)).status == 200
    finally:
        store.release.set()
    await gateway.server.app[SERVICE_KEY].drain()
    sidecar, mick_deletion = await store.get_deletions(SEED_002_ID)
    assert sidecar.by == "sidecar" and (mick_deletion.by or "").startswith("bearer:")


class _CountedUserReads(MemoryStore):
    """A memory store that records the ids of every ``get_users`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.user_reads: list[list[str]] = []

    async def get_users(self, user_ids):  # type: ignore[no-untyped-def]
        ids = sorted(user_ids)
        self.user_reads.append(ids)
        return await super().get_users(ids)


async def test_a_store_miss_takes_the_users_the_gateway_learned_lately_without_asking_the_store(
    make_gateway, emulator
) -> None:
    """v2's lookup of a message names its sender only; a recipient this gateway learned a moment ago is taken
    as learned, with no store read for it. The caller sends the first message (its recipient never seen: the
    store is asked, then v2) and receives the second (the caller, learned on the gateway's first call)."""
    store = _CountedUserReads()
    client = await make_gateway(store=store)
    reads = []
    for message_id in PLAIN_IDS:
        response = await client.post(f"/1.1/direct_messages/destroy.json?id={message_id}")
        assert response.status == 200
        body = orjson.loads(await response.read())
        assert {body["sender"]["screen_name"], body["recipient"]["screen_name"]} == {"theSeanCook", "s0c1alm3dia"}
        reads.append(store.user_reads[:])
    assert reads == [[[S0C1ALM3DIA_ID]], [[S0C1ALM3DIA_ID]]]


async def test_a_user_read_from_the_store_is_not_read_again_within_the_hour(make_gateway, emulator) -> None:
    """A recipient v2's lookup does not describe, once read from the store (put there by another gateway,
    say), is shown as read for the next calls: a round trip fewer on Redis for every such message."""
    store = _CountedUserReads()
    await store.put_users([User(id=S0C1ALM3DIA_ID, username="s0c1alm3dia", name="As another gateway stored it")])
    client = await make_gateway(store=store)
    shown = []
    for _ in range(3):  # the caller sent the message: v2's lookup includes the caller only
        response = await client.get("/1.1/direct_messages/show.json", params={"id": PLAIN_IDS[0]})
        assert response.status == 200
        shown.append(orjson.loads(await response.read())["recipient"]["name"])
        await settled(client)
    assert shown == ["As another gateway stored it"] * 3
    assert store.user_reads == [[S0C1ALM3DIA_ID]]
    # What this gateway learns of the user anew replaces what it read.
    emulator.state.users[S0C1ALM3DIA_ID]["name"] = "Renamed on v2"
    assert (await client.get("/1.1/users/show.json", params={"screen_name": "s0c1alm3dia"})).status == 200
    response = await client.get("/1.1/direct_messages/show.json", params={"id": PLAIN_IDS[0]})
    assert orjson.loads(await response.read())["recipient"]["name"] == "Renamed on v2"
    assert store.user_reads == [[S0C1ALM3DIA_ID]]
