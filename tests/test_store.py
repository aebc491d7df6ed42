"""One contract for every message store backend, then what only SQLite or only memory promises."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url, User
from gateway.store.base import Deletion, MessageStore, StoreError, open_store
from gateway.store.memory import MemoryStore
from gateway.store.sqlite import SCHEMA_VERSION, SQLiteStore

UTC = timezone.utc


def make_message(message_id: str = "1001", **changes: object) -> DirectMessage:
    values: dict[str, object] = {
        "id": message_id,
        "text": "hello #legacy https://t.co/abc @someone <b>&amp; \"quotes\" \x07 ünïcödé 😀",
        "created_at": datetime(2012, 9, 7, 5, 4, 3, 123456, tzinfo=UTC),
        "sender_id": "11",
        "recipient_id": "22",
        "conversation_id": "11-22",
        "entities": Entities(
            hashtags=(Hashtag("legacy", 6, 13),),
            urls=(
                Url("https://t.co/abc", "https://example.com/a/long/path", "example.com/a/long…", 14, 30),
                Url("https://t.co/def", None, None, 31, 47),
            ),
            mentions=(Mention("someone", "33", 48, 56), Mention("ghost", None, 57, 63)),
        ),
    }
    values.update(changes)
    return DirectMessage(**values)  # type: ignore[arg-type]


def make_user(user_id: str = "11", **changes: object) -> User:
    values: dict[str, object] = {
        "id": user_id,
        "username": f"user{user_id}",
        "name": "Ünïcode Name 😀",
        "description": "line one\nline two",
        "location": "Here",
        "url": "https://example.com/",
        "protected": True,
        "verified": True,
        "created_at": datetime(2009, 3, 1, 12, 0, 0, tzinfo=UTC),
        "profile_image_url": "https://pbs.twimg.com/profile_images/1/a_normal.jpg",
        "followers_count": 10,
        "following_count": 0,
        "tweet_count": 12345678901,
        "listed_count": 3,
        "like_count": 7,
    }
    values.update(changes)
    return User(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    url = "memory" if request.param == "memory" else f"sqlite:///{tmp_path}/s.sqlite3"
    opened = await open_store(url)
    expected = MemoryStore if request.param == "memory" else SQLiteStore
    assert isinstance(opened, expected)
    try:
        yield opened
    finally:
        await opened.close()


# The contract ------------------------------------------------------------------------------------------


async def test_unknown_message_is_none(store: MessageStore) -> None:
    assert await store.get_message("404") is None
    assert await store.get_deletion("404") is None


async def test_message_round_trips_every_field(store: MessageStore) -> None:
    message = make_message()
    await store.put_messages([message])
    got = await store.get_message(message.id)
    assert got == message
    assert got is not None
    assert got.entities.urls[1].expanded_url is None
    assert got.entities.mentions[1].user_id is None
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.microsecond == 123456


async def test_message_keeps_a_non_utc_offset(store: MessageStore) -> None:
    offset = timezone(timedelta(hours=-5, minutes=-30))
    message = make_message("1002", created_at=datetime(2020, 2, 29, 23, 59, 59, tzinfo=offset))
    await store.put_messages([message])
    got = await store.get_message("1002")
    assert got is not None
    assert got.created_at == message.created_at
    assert got.created_at.utcoffset() == timedelta(hours=-5, minutes=-30)


async def test_message_without_entities_or_conversation(store: MessageStore) -> None:
    message = make_message("1003", text="", conversation_id=None, entities=Entities())
    await store.put_messages([message])
    assert await store.get_message("1003") == message


async def test_several_messages_at_once(store: MessageStore) -> None:
    messages = [make_message(str(i), text=f"message {i}") for i in range(1, 6)]
    await store.put_messages(messages)
    for message in messages:
        assert await store.get_message(message.id) == message


async def test_put_nothing_is_fine(store: MessageStore) -> None:
    await store.put_messages([])
    await store.put_users([])
    assert await store.get_users([]) == {}


async def test_messages_accept_any_iterable(store: MessageStore) -> None:
    await store.put_messages(make_message(str(i)) for i in (7, 8))
    assert await store.get_message("7") is not None
    assert await store.get_message("8") is not None


async def test_users_round_trip_every_field(store: MessageStore) -> None:
    full = make_user("11")
    placeholder = User(id="99")
    await store.put_users([full, placeholder])
    got = await store.get_users(["11", "99"])
    assert got == {"11": full, "99": placeholder}
    assert got["11"].created_at is not None and got["11"].created_at.utcoffset() == timedelta(0)
    assert got["99"].known is False


async def test_get_users_returns_only_known_ids(store: MessageStore) -> None:
    await store.put_users([make_user("11"), make_user("22")])
    assert await store.get_users(["11", "33", "44"]) == {"11": make_user("11")}
    assert await store.get_users(["55"]) == {}
    assert await store.get_users(iter(["22", "22", "11"])) == {"22": make_user("22"), "11": make_user("11")}


async def test_user_is_updated_in_place(store: MessageStore) -> None:
    await store.put_users([make_user("11", name="Old")])
    await store.put_users([make_user("11", name="New", followers_count=None)])
    assert await store.get_users(["11"]) == {"11": make_user("11", name="New", followers_count=None)}


async def test_mark_deleted_records_who_and_when(store: MessageStore) -> None:
    await store.put_messages([make_message("1001"), make_message("1002")])
    before = time.time()
    await store.mark_deleted("1001", "11")
    await store.mark_deleted("1002", None)
    after = time.time()
    first = await store.get_deletion("1001")
    second = await store.get_deletion("1002")
    assert isinstance(first, Deletion)
    assert first.by == "11"
    assert before - 1 <= first.at <= after + 1
    assert second is not None and second.by is None


async def test_deletion_keeps_the_message_data(store: MessageStore) -> None:
    message = make_message()
    await store.put_messages([message])
    await store.mark_deleted(message.id, "11")
    assert await store.get_message(message.id) == message


async def test_undeleted_message_has_no_deletion(store: MessageStore) -> None:
    await store.put_messages([make_message()])
    assert await store.get_deletion("1001") is None


async def test_relearning_updates_data_but_keeps_the_deletion(store: MessageStore) -> None:
    await store.put_messages([make_message(text="first")])
    await store.mark_deleted("1001", "22")
    deletion = await store.get_deletion("1001")
    assert deletion is not None

    await store.put_messages([make_message(text="second", entities=Entities())])

    got = await store.get_message("1001")
    assert got is not None and got.text == "second" and got.entities == Entities()
    assert await store.get_deletion("1001") == deletion


async def test_mark_deleted_on_unknown_id_is_a_no_op(store: MessageStore) -> None:
    await store.mark_deleted("404", "11")
    assert await store.get_deletion("404") is None
    assert await store.get_message("404") is None
    # Learning the message later does not resurrect a deletion that was never recorded.
    await store.put_messages([make_message("404")])
    assert await store.get_deletion("404") is None


async def test_close_twice_is_harmless(store: MessageStore) -> None:
    await store.close()
    await store.close()


# SQLite only -------------------------------------------------------------------------------------------


async def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    first = await open_store(url)
    await first.put_messages([make_message()])
    await first.put_users([make_user("11"), make_user("22")])
    await first.mark_deleted("1001", "11")
    deletion = await first.get_deletion("1001")
    await first.close()

    second = await open_store(url)
    try:
        assert await second.get_message("1001") == make_message()
        assert await second.get_users(["11", "22"]) == {"11": make_user("11"), "22": make_user("22")}
        assert await second.get_deletion("1001") == deletion
    finally:
        await second.close()


async def test_sqlite_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.sqlite3"
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    assert path.is_file()


async def test_sqlite_file_uses_wal_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await open_store(f"sqlite:///{path}")
    try:
        await store.put_messages([make_message()])
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        finally:
            conn.close()
    finally:
        await store.close()


async def test_sqlite_acknowledged_write_is_visible_to_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await open_store(f"sqlite:///{path}")
    try:
        await store.put_messages([make_message("1"), make_message("2")])
        await store.mark_deleted("2", "11")
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT id, deleted_by FROM messages ORDER BY id").fetchall()
        finally:
            conn.close()
        assert rows == [("1", None), ("2", "11")]
    finally:
        await store.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=str(SCHEMA_VERSION + 1)):
        await open_store(f"sqlite:///{path}")
    # The file is left as it was: the gateway did not downgrade it.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    finally:
        conn.close()


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not an SQLite file at all" * 100)
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{path}")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_message("1"),
        lambda s: s.put_messages([make_message()]),
        lambda s: s.get_users(["11"]),
        lambda s: s.put_users([make_user()]),
        lambda s: s.mark_deleted("1", None),
        lambda s: s.get_deletion("1"),
    ],
    ids=["get_message", "put_messages", "get_users", "put_users", "mark_deleted", "get_deletion"],
)
async def test_sqlite_operations_after_close_raise_store_error(tmp_path: Path, call: object) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/s.sqlite3")
    await store.close()
    with pytest.raises(StoreError):
        await call(store)  # type: ignore[operator]


async def test_sqlite_many_concurrent_calls_are_consistent(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/s.sqlite3")
    try:
        count = 200

        async def learn_then_read(i: int) -> DirectMessage | None:
            message = make_message(str(i), text=f"message {i}", sender_id=str(i % 7 + 1))
            await store.put_messages([message])
            await store.put_users([make_user(str(i))])
            if i % 3 == 0:
                await store.mark_deleted(str(i), str(i % 7 + 1))
            return await store.get_message(str(i))

        results = await asyncio.gather(*(learn_then_read(i) for i in range(1, count + 1)))
        for i, got in enumerate(results, start=1):
            assert got == make_message(str(i), text=f"message {i}", sender_id=str(i % 7 + 1))

        reads = await asyncio.gather(*(store.get_message(str(i)) for i in range(1, count + 1)))
        assert [m.id if m else None for m in reads] == [str(i) for i in range(1, count + 1)]
        deletions = await asyncio.gather(*(store.get_deletion(str(i)) for i in range(1, count + 1)))
        for i, deletion in enumerate(deletions, start=1):
            if i % 3 == 0:
                assert deletion is not None and deletion.by == str(i % 7 + 1)
            else:
                assert deletion is None
        users = await store.get_users(str(i) for i in range(1, count + 1))
        assert len(users) == count
    finally:
        await store.close()


# Memory only -------------------------------------------------------------------------------------------


async def test_memory_evicts_the_least_recently_used_message() -> None:
    store = MemoryStore(max_entries=3)
    await store.put_messages([make_message("1"), make_message("2"), make_message("3")])
    assert await store.get_message("1") is not None  # "1" is now the most recently used
    await store.put_messages([make_message("4")])
    assert await store.get_message("2") is None
    for kept in ("1", "3", "4"):
        assert await store.get_message(kept) is not None


async def test_memory_rewriting_a_message_counts_as_use() -> None:
    store = MemoryStore(max_entries=2)
    await store.put_messages([make_message("1"), make_message("2")])
    await store.put_messages([make_message("1", text="again")])
    await store.put_messages([make_message("3")])
    assert await store.get_message("2") is None
    got = await store.get_message("1")
    assert got is not None and got.text == "again"


async def test_memory_evicts_users_by_recent_use() -> None:
    store = MemoryStore(max_entries=2)
    await store.put_users([make_user("1"), make_user("2")])
    assert set(await store.get_users(["1"])) == {"1"}
    await store.put_users([make_user("3")])
    assert set(await store.get_users(["1", "2", "3"])) == {"1", "3"}


async def test_memory_never_holds_more_than_max_entries() -> None:
    store = MemoryStore(max_entries=5)
    await store.put_messages(make_message(str(i)) for i in range(1, 101))
    present = [i for i in range(1, 101) if await store.get_message(str(i)) is not None]
    assert present == [96, 97, 98, 99, 100]
