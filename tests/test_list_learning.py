"""What a list learns: every message of v2's page goes into the store once, and again only when v2 shows it
changed, when its attachment is expanded otherwise, when the store refused it, or once it was learned too long
ago. The users v2's answers name likewise, and again once the store turns out to have lost them."""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.emulator import FaultRule
from gateway.keys import ROUTER_KEY
from gateway.model import DirectMessage, User
from gateway.service import Learned, json_digest
from gateway.store.base import StoreError
from tests.conftest import SEED_002_ID, store_of

RECEIVED = "/1.1/direct_messages.json"
KEY = "3_1583890000000000100"


def test_something_is_known_only_as_it_was_learned_and_while_recent() -> None:
    learned: Learned[str] = Learned(size=10, max_age=60)
    assert learned.known("7", json_digest(event()), now=0) is None
    learned.remember([("7", json_digest(event()), "message")], now=0)
    assert learned.known("7", json_digest(event()), now=59) == ("message",)
    assert learned.known("7", json_digest(event("edited")), now=1) is None
    assert learned.known("7", json_digest(event()), now=60) is None


def test_what_is_no_message_is_known_as_none() -> None:
    learned: Learned[None] = Learned(size=10, max_age=60)
    learned.remember([("7", json_digest(event()), None)], now=0)
    assert learned.known("7", json_digest(event()), now=1) == (None,)


def test_the_least_recently_learned_are_forgotten_first_and_what_is_lost_at_once() -> None:
    learned: Learned[None] = Learned(size=2, max_age=60)
    for number in ("1", "2", "3"):
        learned.remember([(number, json_digest(event()), None)], now=0)
    assert learned.known("1", json_digest(event()), now=0) is None
    assert learned.known("3", json_digest(event()), now=0) == (None,)
    learned.forget(["3"])
    assert learned.known("3", json_digest(event()), now=0) is None


def test_what_is_kept_of_a_long_message_is_far_smaller_than_its_json() -> None:
    learned: Learned[None] = Learned(size=1_000, max_age=60)
    events = [{**event("x" * 10_000), "id": str(number)} for number in range(1_000)]  # 10 KB of JSON each
    tracemalloc.start()
    try:
        learned.remember([(e["id"], json_digest(e), None) for e in events], now=0)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 1_000 * 1_000  # under 1 KB an event


def event(text: str = "hi") -> dict[str, Any]:
    return {"id": "7", "text": text, "sender_id": "1", "dm_conversation_id": "1-2"}


def count_puts(store: Any, fail: list[bool], method: str = "put_messages") -> list[list[str]]:
    """Each call's ids of the store's ``method`` (``put_messages`` or ``put_users``); while ``fail[0]``, the
    call fails as a store that cannot answer."""
    puts: list[list[str]] = []
    real = getattr(store, method)

    async def put(items: Iterable[DirectMessage | User]) -> None:
        batch = list(items)
        puts.append([item.id for item in batch])
        if fail[0]:
            raise StoreError("the store is away")
        await real(batch)

    setattr(store, method, put)
    return puts


async def test_a_listed_attachment_expanded_otherwise_is_learned_again(gateway, emulator) -> None:
    emulator.state.events[SEED_002_ID]["attachments"] = {"media_keys": [KEY]}
    puts = count_puts(store_of(gateway), [False])
    first = await (await gateway.get(RECEIVED)).read()
    assert await (await gateway.get(RECEIVED)).read() == first
    assert len(puts) == 1
    emulator.state.media[KEY.rpartition("_")[2]]["alt_text"] = "described on v2"
    assert b"described on v2" in await (await gateway.get(RECEIVED)).read()
    assert puts[-1] == [SEED_002_ID]


async def test_a_list_learns_only_what_changed_since_the_last(gateway, emulator) -> None:
    fail = [True]
    puts = count_puts(store_of(gateway), fail)
    first = await (await gateway.get(RECEIVED)).read()
    assert len(puts) == 1 and SEED_002_ID in puts[0]
    fail[0] = False
    assert await (await gateway.get(RECEIVED)).read() == first
    assert len(puts) == 2 and puts[1] == puts[0]  # the store refused them the first time: learned again
    assert await (await gateway.get(RECEIVED)).read() == first
    assert len(puts) == 2  # nothing new: nothing put
    emulator.state.events[SEED_002_ID]["text"] = "edited on v2"
    assert b"edited on v2" in await (await gateway.get(RECEIVED)).read()
    assert puts[-1] == [SEED_002_ID]
    stored = await store_of(gateway).get_message(SEED_002_ID)
    assert stored is not None and stored.text == "edited on v2"


async def test_a_page_read_again_byte_for_byte_is_not_taken_apart_again(gateway, emulator, monkeypatch) -> None:
    """A client polling its inbox reads v2's same page again and again: the second time, no event or user of it
    is digested, converted or put in the store; a page that changed is taken apart again."""
    from gateway import service

    digests: list[int] = []

    def counted(data: dict[str, Any]) -> int:
        digests.append(1)
        return json_digest(data)

    monkeypatch.setattr(service, "json_digest", counted)
    puts = count_puts(store_of(gateway), [False])
    first = await (await gateway.get(RECEIVED)).read()
    assert digests and len(puts) == 1
    del digests[:]
    assert await (await gateway.get(RECEIVED)).read() == first
    assert digests == [] and len(puts) == 1
    emulator.state.events[SEED_002_ID]["text"] = "edited on v2"
    assert b"edited on v2" in await (await gateway.get(RECEIVED)).read()
    assert digests and puts[-1] == [SEED_002_ID]


async def test_a_page_read_again_is_written_from_the_messages_rendered_the_first_time(gateway, emulator) -> None:
    """The service hands over the very messages and users of a page it learned as it is, so the dialect's
    renderer gives their kept renders (``Renderer.render_kept``): nothing of the list is rendered again, and the
    body is the one written the first time, also in StatusNet's XML."""
    router = gateway.server.app[ROUTER_KEY]
    for path in (RECEIVED, "/api/direct_messages.xml"):
        dialect = router.for_path(path)
        renderer = dialect.mapping.xml if path.endswith(".xml") else dialect.mapping.json
        first = await (await gateway.get(path)).read()
        kept = dict(renderer._kept)
        assert kept, path
        assert await (await gateway.get(path)).read() == first
        assert renderer._kept == kept and all(renderer._kept[key][1] is kept[key][1] for key in kept)
    emulator.state.events[SEED_002_ID]["text"] = "edited on v2"
    assert b"edited on v2" in await (await gateway.get(RECEIVED)).read()


# The users v2's answers name -----------------------------------------------------------------------------

MICK_ID = "776627022"
SHOW = f"/1.1/direct_messages/show.json?id={SEED_002_ID}"
DESTROY = f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}"


async def test_a_user_v2_describes_as_before_is_put_in_the_store_once(gateway, emulator) -> None:
    fail = [True]
    puts = count_puts(store_of(gateway), fail, "put_users")

    def of_mick() -> list[list[str]]:
        return [put for put in puts if MICK_ID in put]

    first = await (await gateway.get(SHOW)).read()
    assert len(of_mick()) == 1
    fail[0] = False
    assert await (await gateway.get(SHOW)).read() == first
    assert len(of_mick()) == 2  # the store refused them the first time: learned again
    assert await (await gateway.get(SHOW)).read() == first
    assert len(of_mick()) == 2  # nothing new: nothing put
    emulator.state.users[MICK_ID]["name"] = "Renamed on v2"
    assert orjson.loads(await (await gateway.get(SHOW)).read())["sender"]["name"] == "Renamed on v2"
    assert len(of_mick()) == 3
    stored = await store_of(gateway).get_users([MICK_ID])
    assert stored[MICK_ID].name == "Renamed on v2"


async def test_a_user_the_store_lost_is_learned_again_when_next_named(gateway, emulator, tmp_path) -> None:
    puts = count_puts(store_of(gateway), [False], "put_users")
    assert (await gateway.get(SHOW)).status == 200
    assert [MICK_ID] in puts
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as db:  # as another process's purge would
        db.execute("DELETE FROM users WHERE id = ?", (MICK_ID,))
    emulator.state.faults.append(FaultRule(method="DELETE", action="status", status=404, times=1))
    assert (await gateway.post(DESTROY)).status == 404  # a store hit without its sender: v2 is asked for them
    assert puts[-1] == [MICK_ID]
    del puts[:]
    assert (await gateway.get(SHOW)).status == 200
    assert puts == [[MICK_ID]]


async def test_a_recipient_v2_describes_as_before_is_put_in_the_store_once(gateway, emulator) -> None:
    """Senders write to the same few people: the recipient v2's lookup describes as before is not put in the
    store again, send after send, nor when another answer of v2's includes the same user."""
    puts = count_puts(store_of(gateway), [False], "put_users")

    async def send(text: str) -> dict[str, Any]:
        response = await gateway.post("/1.1/direct_messages/new.json", data={"user_id": MICK_ID, "text": text})
        assert response.status == 200
        answer: dict[str, Any] = orjson.loads(await response.read())
        return answer

    def of_mick() -> int:
        return len([put for put in puts if MICK_ID in put])

    emulator.state.users[MICK_ID]["receives_your_dm"] = True  # asked of the lookup only: no change to the user
    await send("one")
    learned = of_mick()
    assert (await gateway.get(SHOW)).status == 200  # Mick sent it: v2's includes describe him too
    await send("two")
    await send("three")
    assert of_mick() == learned
    emulator.state.users[MICK_ID]["name"] = "Renamed on v2"
    assert (await send("four"))["recipient"]["name"] == "Renamed on v2"
    assert of_mick() > learned
    stored = await store_of(gateway).get_users([MICK_ID])
    assert stored[MICK_ID].name == "Renamed on v2"
