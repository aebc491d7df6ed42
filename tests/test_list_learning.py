"""What a list learns: every message of v2's page goes into the store once, and again only when v2 shows it
changed, when its attachment is expanded otherwise, when the store refused it, or once it was learned too long
ago. The users v2's answers name likewise, and again once the store turns out to have lost them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.emulator import FaultRule
from gateway.model import DirectMessage, Media, User
from gateway.service import LearnedEvents
from gateway.store.base import StoreError
from tests.conftest import SEED_002_ID, store_of

RECEIVED = "/1.1/direct_messages.json"
KEY = "3_1583890000000000100"


def message(attachment: Media | None = None) -> DirectMessage:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return DirectMessage(id="7", text="hi", created_at=created, sender_id="1", recipient_id="2", attachment=attachment)


def event(text: str = "hi") -> dict[str, Any]:
    return {"id": "7", "text": text, "sender_id": "1", "dm_conversation_id": "1-2"}


def test_an_event_is_known_only_as_it_was_learned_and_while_recent() -> None:
    learned = LearnedEvents(size=10, max_age=60)
    assert learned.known(event(), {}, now=0) is None
    learned.remember([(event(), message())], now=0)
    assert learned.known(event(), {}, now=59) == (message(),)
    assert learned.known(event("edited"), {}, now=1) is None
    assert learned.known(event(), {}, now=60) is None


def test_what_is_no_message_is_known_as_none() -> None:
    learned = LearnedEvents(size=10, max_age=60)
    learned.remember([(event(), None)], now=0)
    assert learned.known(event(), {}, now=1) == (None,)


def test_an_attachment_is_known_only_expanded_as_before() -> None:
    expanded = Media(id="1583890000000000100", key=KEY, type="photo", url="https://example.com/a.png")
    learned = LearnedEvents(size=10, max_age=60)
    learned.remember([(event(), message(expanded))], now=0)
    assert learned.known(event(), {KEY: expanded}, now=1) == (message(expanded),)
    assert learned.known(event(), {}, now=1) is None
    assert learned.known(event(), {KEY: Media(id=expanded.id, key=KEY)}, now=1) is None


def test_the_least_recently_learned_events_are_forgotten_first() -> None:
    learned = LearnedEvents(size=2, max_age=60)
    for number in ("1", "2", "3"):
        learned.remember([({**event(), "id": number}, None)], now=0)
    assert learned.known({**event(), "id": "1"}, {}, now=0) is None
    assert learned.known({**event(), "id": "3"}, {}, now=0) == (None,)


def count_puts(store: Any, fail: list[bool]) -> list[list[str]]:
    """Each put_messages call's ids; while ``fail[0]``, the call fails as a store that cannot answer."""
    puts: list[list[str]] = []
    real = store.put_messages

    async def put_messages(messages: Iterable[DirectMessage]) -> None:
        batch = list(messages)
        puts.append([m.id for m in batch])
        if fail[0]:
            raise StoreError("the store is away")
        await real(batch)

    store.put_messages = put_messages
    return puts


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


# The users v2's answers name -----------------------------------------------------------------------------

MICK_ID = "776627022"
SHOW = f"/1.1/direct_messages/show.json?id={SEED_002_ID}"
DESTROY = f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}"


def count_user_puts(store: Any, fail: list[bool]) -> list[list[str]]:
    """Each put_users call's ids; while ``fail[0]``, the call fails as a store that cannot answer."""
    puts: list[list[str]] = []
    real = store.put_users

    async def put_users(users: Iterable[User]) -> None:
        batch = list(users)
        puts.append([u.id for u in batch])
        if fail[0]:
            raise StoreError("the store is away")
        await real(batch)

    store.put_users = put_users
    return puts


async def test_a_user_v2_describes_as_before_is_put_in_the_store_once(gateway, emulator) -> None:
    fail = [True]
    puts = count_user_puts(store_of(gateway), fail)

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
    puts = count_user_puts(store_of(gateway), [False])
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
