"""A destroy retried after a lost response gets the first answer again, and only for the caller who deleted."""

from __future__ import annotations

from gateway.app import create_app
from gateway.keys import SERVICE_KEY
from tests.conftest import (
    MARCOS_TOKEN,
    MICK_TOKEN,
    PLAIN_IDS,
    SEED_002_ID,
    SEED_003_XML_ID,
    gateway_config,
    settled,
)

CLASSIC = "/1.1/direct_messages/destroy.json"


def deletes(emulator) -> list[str]:
    return [r.path for r in emulator.state.requests if r.method == "DELETE"]


async def test_a_retried_classic_destroy_gets_the_same_body(gateway, emulator) -> None:
    first = await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")
    assert first.status == 200
    retry = await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")
    assert retry.status == 200
    assert await retry.read() == await first.read()
    assert deletes(emulator) == [f"/2/dm_events/{SEED_002_ID}"] * 2  # v2 was asked, and said 404


async def test_a_retried_statusnet_and_events_destroy_answer_as_the_first_time(gateway, emulator) -> None:
    marcos = {"Authorization": f"Bearer {MARCOS_TOKEN}"}
    path = f"/api/direct_messages/destroy/{SEED_003_XML_ID}.xml"
    first = await gateway.post(path, headers=marcos)
    retry = await gateway.post(path, headers=marcos)
    assert (first.status, retry.status) == (200, 200)
    assert await retry.read() == await first.read()
    # The events dialect answers 204 again, once the gateway knows the message.
    await gateway.post(f"{CLASSIC}?id={PLAIN_IDS[0]}")
    retry = await gateway.delete(f"/1.1/direct_messages/events/destroy.json?id={PLAIN_IDS[0]}")
    assert retry.status == 204


async def test_a_tombstone_answers_only_the_caller_who_deleted(gateway, emulator) -> None:
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")).status == 200  # the sidecar, as theSeanCook
    await gateway.server.app[SERVICE_KEY].drain()  # deletions are recorded after their answers
    store_now = await settled(gateway)
    deletion = await store_now.get_deletion(SEED_002_ID)
    assert deletion is not None and deletion.by == "sidecar"
    # Another participant still sees the message: v2 deletes it for them, a real delete.
    mick = {"Authorization": f"Bearer {MICK_TOKEN}"}
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}", headers=mick)).status == 200
    assert emulator.state.is_deleted_for(SEED_002_ID, "776627022")
    await gateway.server.app[SERVICE_KEY].drain()
    store_now = await settled(gateway)
    sidecar, mick_deletion = await store_now.get_deletions(SEED_002_ID)
    assert sidecar == deletion and mick_deletion.by.startswith("bearer:")  # type: ignore[union-attr]
    assert MICK_TOKEN not in mick_deletion.by  # type: ignore[operator]
    # Each deleter has a record of its own, so both retries are answered as the first calls were.
    first = await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")
    again = await gateway.post(f"{CLASSIC}?id={SEED_002_ID}", headers=mick)
    assert (first.status, again.status) == (200, 200)
    # Someone who never deleted it gets v2's answer.
    marcos = {"Authorization": f"Bearer {MARCOS_TOKEN}"}
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}", headers=marcos)).status in (403, 404)


async def test_a_tombstone_past_its_window_is_v2s_404(aiohttp_client, emulator) -> None:
    gateway = await aiohttp_client(create_app(gateway_config(emulator, store={"tombstone_window": 0})))
    assert gateway.server.app[SERVICE_KEY].tombstone_window == 0
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")).status == 200
    response = await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")
    assert response.status == 404
    assert await response.json() == {"errors": [{"code": 34, "message": "Sorry, that page does not exist."}]}


async def test_a_late_learned_body_does_not_resurrect_a_deleted_message(gateway, emulator) -> None:
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")).status == 200
    store = await settled(gateway)
    message = await store.get_message(SEED_002_ID)
    await store.put_messages([message])  # e.g. a pass-through body read before the delete, arriving after it
    assert await store.get_deletion(SEED_002_ID) is not None
    assert (await gateway.post(f"{CLASSIC}?id={SEED_002_ID}")).status == 200
