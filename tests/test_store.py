"""One contract for every store backend (messages, then credentials), then what only SQLite, only memory or
only Redis promises."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from gateway.app import create_app
from gateway.auth.credentials import BasicUser, Consumer, CredentialEntry, OAuth2Grant, Token
from gateway.config import StoreConfig
from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url, User
from gateway.store import codec
from gateway.store.base import Deletion, MessageStore, Store, StoreError
from gateway.store.factory import open_store, open_store_from_config
from gateway.store.memory import MemoryStore
from gateway.store.redis import INDEX_TRIM_INTERVAL, RedisStore
from gateway.store.sqlite import SCHEMA_VERSION, SQLiteStore
from gateway.store.sqlite import schema as sqlite_schema
from gateway.store.sqlite import store as sqlite_store
from tests.conftest import SEED_002_ID, gateway_config, opened_store, redis_namespace, settled, store_of


def make_message(message_id: str = "1001", **changes: object) -> DirectMessage:
    values: dict[str, object] = {
        "id": message_id,
        "text": 'hello #legacy https://t.co/abc @someone <b>&amp; "quotes" \x07 ünïcödé 😀',
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


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_store(request.param, request, tmp_path) as opened:
        classes = {"memory": MemoryStore, "sqlite": SQLiteStore, "redis": RedisStore, "redis-cluster": RedisStore}
        expected = classes[request.param]
        assert isinstance(opened, expected)
        yield opened


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


@pytest.mark.parametrize(
    "entities",
    [
        Entities(hashtags=(Hashtag("a", 0, 2),)),
        Entities(urls=(Url("https://t.co/a", None, None, 0, 14),)),
        Entities(mentions=(Mention("ann", "7", 0, 4),)),
    ],
    ids=["hashtags", "urls", "mentions"],
)
async def test_a_message_with_one_kind_of_entity_keeps_it(store: MessageStore, entities: Entities) -> None:
    message = make_message("1004", entities=entities)
    await store.put_messages([message])
    assert await store.get_message("1004") == message


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


async def test_mark_deleted_many_records_each_and_skips_unknown_ids(store: MessageStore) -> None:
    await store.put_messages([make_message("1001"), make_message("1002"), make_message("1003")])
    before = time.time()
    await store.mark_deleted_many([("1001", "11"), ("404", "11"), ("1003", None)])
    await store.mark_deleted_many([])
    after = time.time()
    first, second, third = [await store.get_deletion(i) for i in ("1001", "1002", "1003")]
    assert first is not None and first.by == "11" and before - 1 <= first.at <= after + 1
    assert second is None
    assert third is not None and third.by is None
    assert await store.get_deletion("404") is None and await store.get_message("404") is None
    assert await store.get_message("1001") == make_message("1001")  # the data is kept


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


async def test_each_deleter_keeps_its_own_deletion(store: MessageStore) -> None:
    await store.put_messages([make_message("1001")])
    await store.mark_deleted("1001", "basic:alice")
    first = await store.get_deletion("1001")
    await asyncio.sleep(0.01)
    await store.mark_deleted_many([("1001", "bearer:mick"), ("1001", None)])
    deletions = await store.get_deletions("1001")
    assert next(d.by for d in deletions) == "basic:alice" and deletions[0] == first
    assert {d.by for d in deletions} == {"basic:alice", "bearer:mick", None}
    # A deleter's second deletion replaces its own record only.
    await asyncio.sleep(0.01)
    await store.mark_deleted("1001", "basic:alice")
    again = await store.get_deletions("1001")
    assert len(again) == 3 and again[-1].by == "basic:alice" and again[-1].at > first.at  # type: ignore[union-attr]
    assert await store.get_deletion("1001") == again[-1]
    await store.put_messages([make_message("1001", text="learned again")])
    assert await store.get_deletions("1001") == again
    assert await store.get_deletions("404") == ()


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


# The credential contract -------------------------------------------------------------------------------

# Every secret below contains "SECRET", so a listing can be searched for any of them at once.
GRANT = OAuth2Grant(access_token="v2-access-SECRET", refresh_token="v2-refresh-SECRET", expires_at=1893456000.0)


def make_basic_user(username: str = "alice", grant: OAuth2Grant = GRANT) -> BasicUser:
    return BasicUser(username=username, password_hash="scrypt$16384$8$1$SECRET$SECRET", grant=grant)


async def test_unknown_credentials_are_none(store: Store) -> None:
    assert await store.get_consumer("nobody") is None
    assert await store.get_token("nothing") is None
    assert await store.get_user("nobody") is None
    assert await store.list_credentials() == []


async def test_consumer_round_trips_and_is_replaced(store: Store) -> None:
    await store.put_consumer(Consumer("ck", "first-SECRET"))
    assert await store.get_consumer("ck") == Consumer("ck", "first-SECRET")
    await store.put_consumer(Consumer("ck", "second-SECRET"))
    assert await store.get_consumer("ck") == Consumer("ck", "second-SECRET")
    assert await store.get_consumer("CK") is None  # keys are exact, not case-folded


async def test_token_round_trips_and_is_replaced(store: Store) -> None:
    await store.put_consumer(Consumer("ck1", "c1-SECRET"))
    await store.put_consumer(Consumer("ck2", "c2-SECRET"))
    await store.put_token(Token("tk", "ck1", "t1-SECRET"))
    assert await store.get_token("tk") == Token("tk", "ck1", "t1-SECRET")
    await store.put_token(Token("tk", "ck2", "t2-SECRET"))
    assert await store.get_token("tk") == Token("tk", "ck2", "t2-SECRET")


async def test_token_needs_an_existing_consumer(store: Store) -> None:
    with pytest.raises(ValueError, match="ghost"):
        await store.put_token(Token("tk", "ghost", "t-SECRET"))
    assert await store.get_token("tk") is None
    assert await store.list_credentials() == []


async def test_replacing_a_consumer_keeps_its_tokens(store: Store) -> None:
    await store.put_consumer(Consumer("ck", "old-SECRET"))
    await store.put_token(Token("tk", "ck", "t-SECRET"))
    await store.put_consumer(Consumer("ck", "new-SECRET"))
    assert await store.get_token("tk") == Token("tk", "ck", "t-SECRET")


async def test_removing_a_consumer_removes_its_tokens_only(store: Store) -> None:
    await store.put_consumer(Consumer("ck1", "c1-SECRET"))
    await store.put_consumer(Consumer("ck2", "c2-SECRET"))
    await store.put_token(Token("tk1a", "ck1", "SECRET"))
    await store.put_token(Token("tk1b", "ck1", "SECRET"))
    await store.put_token(Token("tk2", "ck2", "SECRET"))

    assert await store.remove_credential("consumer", "ck1") is True

    assert await store.get_consumer("ck1") is None
    assert await store.get_token("tk1a") is None
    assert await store.get_token("tk1b") is None
    assert await store.get_token("tk2") == Token("tk2", "ck2", "SECRET")
    assert await store.get_consumer("ck2") is not None


async def test_remove_reports_whether_something_was_removed(store: Store) -> None:
    await store.put_consumer(Consumer("ck", "SECRET"))
    await store.put_token(Token("tk", "ck", "SECRET"))
    await store.put_user(make_basic_user("alice"))
    for kind, key in (("token", "tk"), ("user", "alice"), ("consumer", "ck")):
        assert await store.remove_credential(kind, key) is True, kind  # type: ignore[arg-type]
        assert await store.remove_credential(kind, key) is False, kind  # type: ignore[arg-type]
    assert await store.list_credentials() == []


async def test_remove_looks_only_at_its_own_kind(store: Store) -> None:
    await store.put_consumer(Consumer("same", "SECRET"))
    await store.put_user(make_basic_user("same"))
    assert await store.remove_credential("token", "same") is False
    assert await store.remove_credential("user", "same") is True
    assert await store.get_consumer("same") is not None


async def test_remove_refuses_an_unknown_kind(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.remove_credential("password", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "grant",
    [GRANT, OAuth2Grant(access_token="only-SECRET"), OAuth2Grant("a-SECRET", None, 1234567890.5)],
    ids=["full", "bare", "expiring"],
)
async def test_user_round_trips_with_its_grant(store: Store, grant: OAuth2Grant) -> None:
    user = make_basic_user("ünïcødé", grant)
    await store.put_user(user)
    assert await store.get_user("ünïcødé") == user


async def test_put_user_replaces_hash_and_grant(store: Store) -> None:
    await store.put_user(make_basic_user("alice"))
    replacement = BasicUser("alice", "scrypt$other", OAuth2Grant("new-SECRET"))
    await store.put_user(replacement)
    assert await store.get_user("alice") == replacement


async def test_put_grant_replaces_only_the_grant(store: Store) -> None:
    await store.put_user(make_basic_user("alice"))
    await store.put_user(make_basic_user("bob"))
    refreshed = OAuth2Grant("refreshed-SECRET", "next-refresh-SECRET", 1900000000.0)
    await store.put_grant("alice", refreshed)
    alice = await store.get_user("alice")
    assert alice is not None
    assert alice.grant == refreshed
    assert alice.password_hash == make_basic_user().password_hash
    assert await store.get_user("bob") == make_basic_user("bob")


async def test_put_grant_for_an_unknown_user_is_a_no_op(store: Store) -> None:
    await store.put_grant("nobody", GRANT)
    assert await store.get_user("nobody") is None
    assert await store.list_credentials() == []


async def test_list_credentials_names_everything_and_no_secret(store: Store) -> None:
    await store.put_consumer(Consumer("emulator-consumer", "consumer-SECRET"))
    await store.put_consumer(Consumer("another", "another-SECRET"))
    await store.put_token(Token("tok-b", "emulator-consumer", "token-SECRET"))
    await store.put_token(Token("tok-a", "emulator-consumer", "token-SECRET"))
    await store.put_user(make_basic_user("zed", OAuth2Grant("bare-SECRET")))
    await store.put_user(make_basic_user("alice"))

    entries = await store.list_credentials()

    assert entries == [
        CredentialEntry("consumer", "another", "0 tokens"),
        CredentialEntry("consumer", "emulator-consumer", "2 tokens"),
        CredentialEntry("token", "tok-a", "consumer emulator-consumer"),
        CredentialEntry("token", "tok-b", "consumer emulator-consumer"),
        CredentialEntry("user", "alice", "upstream grant, refreshable, expires 2030-01-01T00:00:00Z"),
        CredentialEntry("user", "zed", "upstream grant"),
    ]
    assert "SECRET" not in repr(entries)


async def test_nonce_is_accepted_once(store: Store) -> None:
    until = time.time() + 300
    assert await store.remember_nonce("ck:tk", "n1", until) is True
    assert await store.remember_nonce("ck:tk", "n1", until) is False
    assert await store.remember_nonce("ck:tk", "n1", until + 300) is False  # a replay does not renew it
    assert await store.remember_nonce("ck:tk", "n2", until) is True
    assert await store.remember_nonce("ck:other", "n1", until) is True  # scopes are separate


async def test_expired_nonce_counts_as_new(store: Store) -> None:
    now = time.time()
    assert await store.remember_nonce("s", "n", now - 1) is True
    assert await store.remember_nonce("s", "n", now + 300) is True  # the old row had expired: replaced
    assert await store.remember_nonce("s", "n", now + 300) is False  # and the new one holds


async def test_concurrent_uses_of_one_nonce_accept_exactly_one(store: Store) -> None:
    until = time.time() + 300
    results = await asyncio.gather(*(store.remember_nonce("s", "same", until) for _ in range(50)))
    assert results.count(True) == 1


async def test_credentials_and_messages_share_one_store(store: Store) -> None:
    await store.put_messages([make_message()])
    await store.put_users([make_user("alice")])  # a v2 user cache entry, not a Basic user
    await store.put_user(make_basic_user("alice"))
    assert await store.get_message("1001") == make_message()
    assert await store.get_users(["alice"]) == {"alice": make_user("alice")}
    assert await store.get_user("alice") == make_basic_user("alice")


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


async def test_sqlite_refuses_a_missing_directory_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.sqlite3"
    with pytest.raises(StoreError, match="does not exist"):
        await open_store(f"sqlite:///{path}")
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - one small listing


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
            rows = conn.execute("SELECT id, json_extract(deletions, '$.11') FROM messages ORDER BY id").fetchall()
        finally:
            conn.close()
        assert rows[0] == (1, None) and rows[1][0] == 2 and isinstance(rows[1][1], float)  # ids kept as integers
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


async def test_sqlite_credentials_survive_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    first = await open_store(url)
    await first.put_consumer(Consumer("ck", "SECRET"))
    await first.put_token(Token("tk", "ck", "SECRET"))
    await first.put_user(make_basic_user("alice"))
    assert await first.remember_nonce("s", "n", time.time() + 300) is True
    await first.close()

    second = await open_store(url)
    try:
        assert await second.get_consumer("ck") == Consumer("ck", "SECRET")
        assert await second.get_token("tk") == Token("tk", "ck", "SECRET")
        assert await second.get_user("alice") == make_basic_user("alice")
        assert await second.remember_nonce("s", "n", time.time() + 300) is False
    finally:
        await second.close()


async def test_sqlite_nonce_replay_is_refused_across_stores_on_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    first, second = await open_store(url), await open_store(url)
    try:
        until = time.time() + 300
        assert await first.remember_nonce("s", "n1", until) is True
        assert await second.remember_nonce("s", "n1", until) is False
        # Both connections racing for one nonce, each from its own worker thread: still exactly one winner.
        racers = [first.remember_nonce("s", "n2", until) if i % 2 else second.remember_nonce("s", "n2", until)
                  for i in range(40)]  # fmt: skip
        assert (await asyncio.gather(*racers)).count(True) == 1
    finally:
        await first.close()
        await second.close()


async def test_sqlite_token_of_a_consumer_removed_elsewhere_goes_too(tmp_path: Path) -> None:
    """The cascade is the schema's (a foreign key), not only this process's bookkeeping."""
    path = tmp_path / "s.sqlite3"
    store = await open_store(f"sqlite:///{path}")
    try:
        await store.put_consumer(Consumer("ck", "SECRET"))
        await store.put_token(Token("tk", "ck", "SECRET"))
        other = await open_store(f"sqlite:///{path}")
        try:
            assert await other.remove_credential("consumer", "ck") is True
        finally:
            await other.close()
        assert await store.get_token("tk") is None
    finally:
        await store.close()


async def test_sqlite_purges_expired_nonces_now_and_then(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await SQLiteStore.open(str(path))
    store.nonce_purge_interval = 10
    try:
        now = time.time()
        live = [f"live{i}" for i in range(5)]
        for nonce in live:
            assert await store.remember_nonce("s", nonce, now + 300) is True
        for i in range(100):
            assert await store.remember_nonce("s", f"old{i}", now - 1) is True
        conn = sqlite3.connect(path)
        try:
            (rows,) = conn.execute("SELECT count(*) FROM nonce_digests").fetchone()
        finally:
            conn.close()
        assert rows <= len(live) + store.nonce_purge_interval
        for nonce in live:  # purging never forgets a nonce that is still live
            assert await store.remember_nonce("s", nonce, now + 300) is False
    finally:
        await store.close()


async def test_sqlite_migrates_a_version_1_file_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    now = time.time()
    deletion = Deletion(at=now - 1, by="11")
    conn = sqlite3.connect(path, isolation_level=None)  # the file as a version-1 gateway left it
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in sqlite_schema.MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
            [
                ("1", codec.dumps(codec.message_to_record(make_message("1"), None)), now, None, None),
                (
                    "2",
                    codec.dumps(codec.message_to_record(make_message("2", text="deleted later"), None)),
                    now,
                    deletion.at,
                    deletion.by,
                ),
            ],
        )
        conn.execute(
            "INSERT INTO users VALUES (?, ?, ?)", ("11", codec.dumps(codec.user_to_record(make_user("11"))), now)
        )
    finally:
        conn.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'consumers'").fetchone() is None
    finally:
        conn.close()

    store = await open_store(f"sqlite:///{path}")
    try:
        assert await store.get_message("1") == make_message("1")
        assert await store.get_message("2") == make_message("2", text="deleted later")
        assert await store.get_deletion("2") == deletion
        assert await store.get_users(["11"]) == {"11": make_user("11")}
        await store.put_consumer(Consumer("ck", "SECRET"))
        await store.put_token(Token("tk", "ck", "SECRET"))
        assert await store.get_token("tk") == Token("tk", "ck", "SECRET")
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
    finally:
        conn.close()


def write_old_file(path: Path, version: int, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """A file as a gateway of schema ``version`` left it, holding the ``rows`` of one ``insert``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for step in range(1, version + 1):
            for statement in sqlite_schema.MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.executemany(insert, rows)
    finally:
        conn.close()


def write_version_2_file(path: Path, rows: list[tuple[str, bytes, float, float | None, str | None]]) -> None:
    """A file as a schema-2 gateway left it: messages keyed by their ids as text."""
    write_old_file(path, 2, "INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)


async def test_sqlite_schema_3_keys_messages_by_their_ids_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    now = time.time()
    kept = ["1", "2", "9223372036854775807"]
    # None of these is an id a legacy call can name (gateway.ids), so none can be kept under an integer key.
    odd = ["0", "0123", "9223372036854775808", "12345678901234567890", "abc", "12a", "", "-5", "1e3"]
    rows = [
        (i, codec.dumps(codec.message_to_record(make_message(i or "x"), None)), now, None, None) for i in kept + odd
    ]
    rows[1] = (*rows[1][:3], now - 5, "11")  # "2" was deleted by user 11
    write_version_2_file(path, rows)

    store = await open_store(f"sqlite:///{path}")
    try:
        for message_id in kept:
            assert await store.get_message(message_id) == make_message(message_id)
        assert await store.get_deletion("2") == Deletion(at=now - 5, by="11")
        assert await store.get_deletion("1") is None
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        assert [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id")] == [int(i) for i in kept]
        columns = {row[1]: (row[2], row[5]) for row in conn.execute("PRAGMA table_info(messages)")}
        assert columns["id"] == ("INTEGER", 1)  # the rowid itself: one B-tree, no separate index
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_store._SELECT_MESSAGE, (1, 0.0)))
        assert "INTEGER PRIMARY KEY" in plan, plan
    finally:
        conn.close()


@pytest.mark.parametrize("odd", ["abc", "0", "0123", "9223372036854775808", "12a", " 5", "٣"])
async def test_sqlite_keeps_no_message_whose_id_no_legacy_call_can_name(tmp_path: Path, odd: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = await SQLiteStore.open(str(path))
    try:
        await store.put_messages([make_message(odd), make_message("5")])  # its neighbour is still kept
        assert await store.get_message(odd) is None
        assert await store.get_message_with_users(odd) == (None, {})
        await store.mark_deleted(odd, "11")
        assert await store.get_deletion(odd) is None
        assert await store.get_message("5") == make_message("5")
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT id FROM messages").fetchall() == [(5,)]
        finally:
            conn.close()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_message("1"),
        lambda s: s.put_messages([make_message()]),
        lambda s: s.get_users(["11"]),
        lambda s: s.put_users([make_user()]),
        lambda s: s.mark_deleted("1", None),
        lambda s: s.mark_deleted_many([("1", None)]),
        lambda s: s.get_deletion("1"),
        lambda s: s.put_consumer(Consumer("ck", "cs")),
        lambda s: s.get_token("tk"),
        lambda s: s.put_grant("alice", GRANT),
        lambda s: s.list_credentials(),
        lambda s: s.remember_nonce("s", "n", time.time() + 60),
    ],
    ids=[
        "get_message", "put_messages", "get_users", "put_users", "mark_deleted", "mark_deleted_many", "get_deletion",
        "put_consumer", "get_token", "put_grant", "list_credentials", "remember_nonce",
    ],
)  # fmt: skip
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


async def test_memory_evicts_the_message_learned_least_recently() -> None:
    store = MemoryStore(max_entries=3)
    await store.put_messages([make_message("1"), make_message("2"), make_message("3")])
    assert await store.get_message("1") is not None  # read to be destroyed: not a reason to keep it
    await store.mark_deleted("1", "11")
    await store.put_messages([make_message("4")])
    assert await store.get_message("1") is None and await store.get_deletion("1") is None
    for kept in ("2", "3", "4"):
        assert await store.get_message(kept) is not None


async def test_memory_keeps_a_user_that_is_read_while_messages_come_and_go() -> None:
    store = MemoryStore(max_entries=3)
    await store.put_users([make_user("11")])
    for i in range(1, 10):
        await store.put_messages([make_message(str(i))])
        assert set(await store.get_users(["11"])) == {"11"}
    assert [i for i in range(1, 10) if await store.get_message(str(i)) is not None] == [8, 9]


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


async def test_memory_never_evicts_credentials() -> None:
    store = MemoryStore(max_entries=2)
    for i in range(10):
        await store.put_consumer(Consumer(f"ck{i}", "SECRET"))
        await store.put_user(make_basic_user(f"user{i}"))
        await store.put_messages([make_message(str(i))])
    for i in range(10):
        assert await store.get_consumer(f"ck{i}") is not None
        assert await store.get_user(f"user{i}") is not None


async def test_memory_messages_are_out_of_the_garbage_collectors_sight() -> None:
    """Held as objects, every message was four containers the collector walks on each full collection."""
    store = MemoryStore(max_entries=10_000)
    await store.put_messages([make_message("0")])  # whatever a first call sets up is not what is measured
    await store.mark_deleted("0", "11")
    assert await store.get_message("0") is not None and await store.get_deletion("0") is not None
    gc.collect()
    before = len(gc.get_objects())
    await store.put_messages(make_message(str(i)) for i in range(1, 5001))
    await store.mark_deleted_many([(str(i), "11") for i in range(1, 2501)])
    gc.collect()  # a tuple leaves the collector's view once it has seen the tuples inside it leave
    gc.collect()
    assert len(gc.get_objects()) - before < 1000  # for 5,000 messages, 2,500 of them deleted
    assert await store.get_message("5000") == make_message("5000")
    assert await store.get_deletion("1") is not None


async def test_memory_hands_out_a_user_as_the_same_object_while_unchanged() -> None:
    store = MemoryStore()
    await store.put_users([make_user("11")])
    first = (await store.get_users(["11"]))["11"]
    assert (await store.get_users(["11"]))["11"] is first
    _, users = await store.get_message_with_users("1001")
    await store.put_messages([make_message("1001")])
    _, users = await store.get_message_with_users("1001")
    assert users["11"] is first


async def test_memory_message_reads_are_copies_that_cannot_change_the_store() -> None:
    store = MemoryStore()
    await store.put_messages([make_message("1")])
    got = await store.get_message("1")
    assert got == make_message("1") and got is not await store.get_message("1")


async def test_memory_drops_expired_nonces_as_new_ones_come() -> None:
    store = MemoryStore()
    now = time.time()
    assert await store.remember_nonce("s", "live", now + 300, now=now) is True
    for i in range(100):
        assert await store.remember_nonce("s", f"short{i}", now + 1 + i / 1000, now=now + 1 + i / 1000) is True
    # Each new nonce came after every earlier short-lived one had expired: only the newest and the live one stay.
    assert set(store._nonces) == {("s", "live"), ("s", "short99")}
    assert await store.remember_nonce("s", "live", now + 300, now=now + 2) is False


async def test_memory_short_lived_records_outlive_a_nonce_put_again_with_a_later_expiry() -> None:
    """A nonce accepted again after it expired keeps its new life when its first expiry comes round."""
    store = MemoryStore()
    now = time.time()
    assert await store.remember_nonce("s", "n", now + 10, now=now) is True
    assert await store.remember_nonce("s", "n", now + 40, now=now + 11) is True
    assert await store.remember_nonce("s", "other", now + 50, now=now + 20) is True
    assert await store.remember_nonce("s", "n", now + 60, now=now + 30) is False  # still live
    assert await store.remember_nonce("s", "n", now + 90, now=now + 41) is True


async def test_sqlite_schema_4_keeps_the_one_deletion_of_a_schema_3_file(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for version in (1, 2, 3):
            for statement in sqlite_schema.MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        record = codec.dumps(codec.message_to_record(make_message("1"), None))
        conn.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
            [(1, record, now, None, None), (2, record, now, now - 5, "basic:o'\"x"), (3, record, now, now - 7, None)],
        )
    finally:
        conn.close()
    store = await open_store(f"sqlite:///{path}")
    try:
        assert await store.get_deletions("1") == ()
        assert await store.get_deletions("2") == (Deletion(at=now - 5, by="basic:o'\"x"),)
        assert await store.get_deletions("3") == (Deletion(at=now - 7, by=None),)
        await store.mark_deleted("2", "bearer:b")
        assert [d.by for d in await store.get_deletions("2")] == ["basic:o'\"x", "bearer:b"]
    finally:
        await store.close()


# Redis only --------------------------------------------------------------------------------------------


async def _raw_redis(url: str):  # type: ignore[no-untyped-def]
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, socket_timeout=5)


async def test_redis_store_url_opens_a_redis_store_with_the_default_prefix(redis_url: str) -> None:
    store = await open_store(redis_url)
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == "dmgw:v1:"
        assert await store.get_message("dmgw-test-never-written") is None  # a read only: nothing is left behind
    finally:
        await store.close()


async def test_redis_reads_and_keeps_a_deletion_recorded_before_deleters_were_kept_apart(
    redis_store: RedisStore, redis_url: str
) -> None:
    await redis_store.put_messages([make_message("1001"), make_message("1002")])
    raw = await _raw_redis(redis_url)
    try:  # one deletion per message, as a JSON string
        await raw.set(f"{redis_store.prefix}del:1001", codec.dumps({"v": 1, "at": 1796584446.7013452, "by": "11"}))
        await raw.set(f"{redis_store.prefix}del:1002", codec.dumps({"v": 1, "at": 1796584446.5, "by": None}))
        assert await redis_store.get_deletions("1001") == (Deletion(at=1796584446.7013452, by="11"),)
        assert await redis_store.get_deletions("1002") == (Deletion(at=1796584446.5, by=None),)
        await redis_store.mark_deleted_many([("1001", "22"), ("1002", "22")])
        assert (await raw.type(f"{redis_store.prefix}del:1001")) == b"hash"
        assert 0 < await raw.ttl(f"{redis_store.prefix}del:1001") <= redis_store.deletion_ttl
    finally:
        await raw.aclose()
    first, second = await redis_store.get_deletions("1001"), await redis_store.get_deletions("1002")
    assert [d.by for d in first] == ["11", "22"] and first[0].at == 1796584446.7013452
    assert [d.by for d in second] == [None, "22"] and second[0].at == 1796584446.5


async def test_redis_keys_carry_the_prefix_and_only_cached_data_expires(
    redis_store: RedisStore, redis_url: str
) -> None:
    await redis_store.put_messages([make_message("1001")])
    await redis_store.put_users([make_user("11")])
    await redis_store.mark_deleted("1001", "11")
    await redis_store.put_consumer(Consumer("ck", "SECRET"))
    await redis_store.put_token(Token("tk", "ck", "SECRET"))
    await redis_store.put_user(make_basic_user("alice"))
    assert await redis_store.remember_nonce("oauth1:ck:tk", "n:1", time.time() + 300) is True

    p = redis_store.prefix
    assert p.endswith(":v1:")
    raw = await _raw_redis(redis_url)
    try:
        found = {key.decode() async for key in raw.scan_iter(match=f"{p}*", count=1000)}
        assert found == {
            f"{p}msg:1001", f"{p}user:11", f"{p}del:1001",
            f"{p}consumer:ck", f"{p}token:tk", f"{p}consumer_tokens:ck", f"{p}basic:alice",
            f"{p}nonce:oauth1:ck:tk:n%3A1", f"{p}index:msg", f"{p}index:user",
        }  # fmt: skip
        day = 24 * 3600
        cached = (("msg:1001", 30 * day), ("user:11", 7 * day), ("del:1001", 30 * day))
        for key, ttl in cached:
            assert ttl - 60 <= await raw.ttl(p + key) <= ttl, key
        for key, ttl in (("index:msg", 30 * day), ("index:user", 7 * day)):  # outlives its records, not by much
            assert ttl <= await raw.ttl(p + key) <= ttl + INDEX_TRIM_INTERVAL, key
        for key in ("consumer:ck", "token:tk", "consumer_tokens:ck", "basic:alice"):
            assert await raw.ttl(p + key) == -1, key  # exists, never expires
        # A nonce's life is decided on the gateway's clock; Redis's TTL only cleans up, a minute after.
        assert 300_000 < await raw.pttl(f"{p}nonce:oauth1:ck:tk:n%3A1") <= 360_000
    finally:
        await raw.aclose()


async def test_redis_index_sets_drop_expired_records_within_a_minute(redis_url: str) -> None:
    now = [1_800_000_000.0]
    async with redis_namespace(redis_url) as prefix:
        store = await RedisStore.open(redis_url, prefix=prefix, message_ttl=100, clock=lambda: now[0])
        raw = await _raw_redis(redis_url)
        try:
            await store.put_messages([make_message("1"), make_message("2")])
            now[0] += 101  # both expired
            await store.put_messages([make_message("3")])
            assert await raw.zrange(f"{prefix}index:msg", 0, -1) == [b"3"]
            assert (await store.size()).messages == 1
        finally:
            await raw.aclose()
            await store.close()


async def test_redis_ttls_are_the_ones_given(redis_url: str) -> None:
    async with redis_namespace(redis_url) as prefix:
        store = await RedisStore.open(redis_url, prefix=prefix, message_ttl=100, user_ttl=50, deletion_ttl=200)
        raw = await _raw_redis(redis_url)
        try:
            await store.put_messages([make_message("1")])
            await store.put_users([make_user("11")])
            await store.mark_deleted("1", None)
            assert 90 <= await raw.ttl(f"{prefix}msg:1") <= 100
            assert 40 <= await raw.ttl(f"{prefix}user:11") <= 50
            assert 190 <= await raw.ttl(f"{prefix}del:1") <= 200
            # Learning the message again renews its deletion record too, so the deletion is not forgotten first.
            await raw.expire(f"{prefix}del:1", 5)
            await store.put_messages([make_message("1", text="again")])
            assert 190 <= await raw.ttl(f"{prefix}del:1") <= 200
        finally:
            await raw.aclose()
            await store.close()


def test_redis_refuses_a_ttl_under_a_second() -> None:
    with pytest.raises(ValueError, match="message_ttl"):
        RedisStore("redis://127.0.0.1:1/0", message_ttl=0)


async def test_redis_nonce_replay_is_refused_across_stores(redis_url: str) -> None:
    async with redis_namespace(redis_url) as prefix:
        first = await RedisStore.open(redis_url, prefix=prefix)
        second = await RedisStore.open(redis_url, prefix=prefix)
        try:
            until = time.time() + 300
            assert await first.remember_nonce("s", "n1", until) is True
            assert await second.remember_nonce("s", "n1", until) is False
            racers = [(first if i % 2 else second).remember_nonce("s", "n2", until) for i in range(40)]
            assert (await asyncio.gather(*racers)).count(True) == 1
            # A nonce whose scope ends where another's nonce begins is still a different nonce.
            assert await first.remember_nonce("s:a", "b", until) is True
            assert await second.remember_nonce("s", "a:b", until) is True
        finally:
            await first.close()
            await second.close()


async def test_redis_token_of_a_consumer_removed_elsewhere_goes_too(redis_url: str) -> None:
    async with redis_namespace(redis_url) as prefix:
        one = await RedisStore.open(redis_url, prefix=prefix)
        other = await RedisStore.open(redis_url, prefix=prefix)
        try:
            await one.put_consumer(Consumer("ck", "SECRET"))
            await one.put_token(Token("tk", "ck", "SECRET"))
            assert await other.remove_credential("consumer", "ck") is True
            assert await one.get_token("tk") is None
            assert await one.list_credentials() == []
        finally:
            await one.close()
            await other.close()


async def test_redis_moving_a_token_to_another_consumer_leaves_it_out_of_the_first(redis_store: RedisStore) -> None:
    await redis_store.put_consumer(Consumer("ck1", "SECRET"))
    await redis_store.put_consumer(Consumer("ck2", "SECRET"))
    await redis_store.put_token(Token("tk", "ck1", "SECRET"))
    await redis_store.put_token(Token("tk", "ck2", "SECRET"))
    assert await redis_store.remove_credential("consumer", "ck1") is True
    assert await redis_store.get_token("tk") == Token("tk", "ck2", "SECRET")
    assert await redis_store.list_credentials() == [
        CredentialEntry("consumer", "ck2", "1 token"),
        CredentialEntry("token", "tk", "consumer ck2"),
    ]


async def test_redis_prefixes_keep_stores_apart(redis_url: str, redis_store: RedisStore) -> None:
    async with redis_namespace(redis_url) as prefix:
        neighbour = await RedisStore.open(redis_url, prefix=prefix)
        try:
            await neighbour.put_messages([make_message()])
            await neighbour.put_consumer(Consumer("ck", "SECRET"))
            assert await redis_store.get_message("1001") is None
            assert await redis_store.list_credentials() == []
        finally:
            await neighbour.close()


class MgetCount:
    """Counts the MGETs a Redis store sends, by the kind of key they read (``msg`` or ``user``)."""

    def __init__(self, store: RedisStore) -> None:
        self.kinds: list[str] = []
        mget = store._client.mget

        async def counted(keys: list[str]) -> list[bytes | None]:
            self.kinds.append(keys[0][len(store.prefix) :].split(":")[0])
            return await mget(keys)  # type: ignore[no-any-return]

        store._client.mget = counted


async def test_redis_messages_asked_for_in_one_turn_of_the_loop_are_read_together(redis_store: RedisStore) -> None:
    other_pair = make_message("1003", sender_id="22", recipient_id="33")
    await redis_store.put_messages([make_message("1001"), other_pair])
    await redis_store.put_users([make_user("11"), make_user("22"), make_user("33")])
    reads = MgetCount(redis_store)

    results = await asyncio.gather(*(redis_store.get_message_with_users(i) for i in ("1001", "404", "1003", "1001")))

    both = {"11": make_user("11"), "22": make_user("22")}
    assert results == [
        (make_message("1001"), both),
        (None, {}),
        (other_pair, {"22": make_user("22"), "33": make_user("33")}),
        (make_message("1001"), both),
    ]
    assert reads.kinds == ["msg", "user"]  # one round trip for the four messages, one for all their users
    assert await redis_store.get_message_with_users("1003") == results[2]  # a later turn reads on its own
    assert reads.kinds == ["msg", "user"] * 2


async def test_redis_opening_a_store_loads_the_script_that_writes_learned_messages(redis_url: str) -> None:
    raw = await _raw_redis(redis_url)
    try:
        await raw.script_flush()  # as after a restart of the server
        async with redis_namespace(redis_url) as prefix:
            store = await RedisStore.open(redis_url, prefix=prefix)
            try:
                assert await raw.script_exists(store._learn.sha) == [True]
            finally:
                await store.close()
    finally:
        await raw.aclose()


async def test_redis_learning_several_messages_is_one_command(redis_store: RedisStore) -> None:
    """The messages, their deletions' renewal and the index: one script, not a pipeline of a few per message;
    loaded when the store opened, so even the first write is that one command."""
    sent: list[str] = []
    execute = redis_store._client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **options)

    def no_pipeline(*args: Any, **options: Any) -> Any:
        raise AssertionError("put_messages made a pipeline")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redis_store._client, "execute_command", counted)
        patch.setattr(redis_store._client, "pipeline", no_pipeline)
        await redis_store.put_messages([make_message(str(1001 + i)) for i in range(5)])
    assert sent == ["EVALSHA"]
    assert [await redis_store.get_message(str(1001 + i)) for i in range(5)] == [
        make_message(str(1001 + i)) for i in range(5)
    ]
    assert (await redis_store.size()).messages == 5


async def test_redis_a_record_that_cannot_be_read_fails_its_own_caller_only(
    redis_store: RedisStore, redis_url: str
) -> None:
    await redis_store.put_messages([make_message("1001"), make_message("1002"), make_message("1003", sender_id="99")])
    await redis_store.put_users([make_user("11"), make_user("22")])
    raw = await _raw_redis(redis_url)
    try:
        await raw.set(f"{redis_store.prefix}msg:1002", b"not json")
        await raw.set(f"{redis_store.prefix}user:99", b"[]")
    finally:
        await raw.aclose()
    good, bad_message, bad_user, missing = await asyncio.gather(
        *(redis_store.get_message_with_users(i) for i in ("1001", "1002", "1003", "404")), return_exceptions=True
    )
    assert good == (make_message("1001"), {"11": make_user("11"), "22": make_user("22")})
    assert isinstance(bad_message, StoreError) and isinstance(bad_user, StoreError)
    assert missing == (None, {})
    with pytest.raises(StoreError):  # as a read of that user alone
        await redis_store.get_users(["22", "99"])


async def test_redis_a_caller_gone_before_the_read_is_not_read_for(redis_store: RedisStore) -> None:
    await redis_store.put_messages([make_message("1001"), make_message("1002")])
    await redis_store.put_users([make_user("11"), make_user("22")])
    reads = MgetCount(redis_store)
    gone = asyncio.ensure_future(redis_store.get_message_with_users("1002"))
    stays = asyncio.ensure_future(redis_store.get_message_with_users("1001"))
    await asyncio.sleep(0)  # both are waiting for the read at the end of this turn
    gone.cancel()
    assert (await stays)[0] == make_message("1001")
    assert gone.cancelled()
    assert reads.kinds == ["msg", "user"]


async def test_redis_failing_fails_every_caller_of_the_read(redis_store: RedisStore) -> None:
    await redis_store.put_messages([make_message("1001")])

    async def refused(keys: list[str]) -> list[bytes | None]:
        raise ConnectionError("Connection refused")

    redis_store._client.mget = refused
    results = await asyncio.gather(
        *(redis_store.get_message_with_users(i) for i in ("1001", "1002")), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) and "Connection refused" in str(r) for r in results)
    assert results[0] is not results[1]


async def test_redis_a_closed_store_refuses_the_read_of_a_message_with_its_users(redis_url: str) -> None:
    async with redis_namespace(redis_url) as prefix:
        closed = await RedisStore.open(redis_url, prefix=prefix)
        await closed.close()
        with pytest.raises(StoreError, match="closed"):
            await closed.get_message_with_users("1001")


async def test_redis_an_unreadable_record_is_a_store_error(redis_store: RedisStore, redis_url: str) -> None:
    raw = await _raw_redis(redis_url)
    try:
        await raw.set(f"{redis_store.prefix}msg:1", b"not json")
    finally:
        await raw.aclose()
    with pytest.raises(StoreError):
        await redis_store.get_message("1")


async def test_redis_unreachable_at_start_up_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError):
        await open_store("redis://127.0.0.1:1/0")
    assert time.monotonic() - started < 5


_REDIS_CALLS = [
    lambda s: s.get_message("1"),
    lambda s: s.put_messages([make_message()]),
    lambda s: s.get_users(["11"]),
    lambda s: s.put_users([make_user()]),
    lambda s: s.mark_deleted("1", None),
    lambda s: s.get_deletion("1"),
    lambda s: s.put_consumer(Consumer("ck", "cs")),
    lambda s: s.get_consumer("ck"),
    lambda s: s.put_token(Token("tk", "ck", "ts")),
    lambda s: s.get_token("tk"),
    lambda s: s.put_user(make_basic_user()),
    lambda s: s.get_user("alice"),
    lambda s: s.put_grant("alice", GRANT),
    lambda s: s.remove_credential("consumer", "ck"),
    lambda s: s.list_credentials(),
    lambda s: s.remember_nonce("s", "n", time.time() + 60),
]


async def test_redis_a_server_that_goes_away_makes_every_call_a_store_error(redis_url: str) -> None:
    from tests.relay import relayed_redis_store

    async with relayed_redis_store(redis_url, socket_timeout=1) as (store, relay):
        await store.put_messages([make_message("1")])
        assert await store.get_message("1") == make_message("1")
        relay.cut()
        for call in _REDIS_CALLS:
            with pytest.raises(StoreError):
                await call(store)


async def test_redis_a_server_that_stops_answering_fails_each_call_within_its_bound(redis_url: str) -> None:
    """``socket_timeout`` bounds a whole call (connecting, sending, every reply), and a call cut short leaves
    nothing behind for the next one to read."""
    from tests.relay import relayed_redis_store

    bound = 0.3
    async with relayed_redis_store(redis_url, socket_timeout=bound) as (store, relay):
        await store.put_messages([make_message("1")])
        relay.stall()
        for call in _REDIS_CALLS:
            # Not redis-py's own five seconds, nor forever (which fails here with asyncio's TimeoutError).
            with pytest.raises(StoreError, match=f"no answer within {bound}s"):
                await asyncio.wait_for(call(store), bound + 2)
        relay.restore()
        assert await store.get_message("1") == make_message("1")
        assert await store.get_users(["11"]) == {}


async def test_redis_operations_after_close_raise_store_error(redis_store: RedisStore) -> None:
    await redis_store.close()
    for call in _REDIS_CALLS:
        with pytest.raises(StoreError, match="closed"):
            await call(redis_store)


# Retention: every backend, with an injected clock --------------------------------------------------------

RETENTION = 1000
USER_MAX_AGE = 100


class FakeClock:
    """Stands in for time.time: moves only when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def aging_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    settings = StoreConfig(message_retention=RETENTION, user_max_age=USER_MAX_AGE)
    async with opened_store(request.param, request, tmp_path, settings=settings, clock=clock) as opened:
        yield opened


async def test_a_message_within_retention_is_a_hit(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_messages([make_message("1")])
    await aging_store.mark_deleted("1", "11")
    clock.advance(RETENTION - 1)
    assert await aging_store.get_message("1") == make_message("1")
    deletion = await aging_store.get_deletion("1")
    assert deletion is not None and deletion.by == "11"


async def test_a_message_past_retention_is_a_miss(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_messages([make_message("1")])
    clock.advance(RETENTION - 10)
    await aging_store.put_messages([make_message("2")])  # learned later: still within retention
    clock.advance(10)
    assert await aging_store.get_message("1") is None
    assert await aging_store.get_message("2") == make_message("2")


async def test_learning_a_message_again_restarts_its_retention(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_messages([make_message("1")])
    clock.advance(RETENTION - 1)
    await aging_store.put_messages([make_message("1", text="again")])
    clock.advance(RETENTION - 1)
    got = await aging_store.get_message("1")
    assert got is not None and got.text == "again"


async def test_a_deletion_expires_with_its_message(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_messages([make_message("1")])
    await aging_store.mark_deleted("1", "11")
    clock.advance(RETENTION)
    assert await aging_store.get_message("1") is None
    if isinstance(aging_store, RedisStore):
        return  # the deletion key expires on the server: see test_redis_ttls_come_from_the_store_config
    assert await aging_store.get_deletion("1") is None


async def test_a_user_past_max_age_is_a_miss(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_users([make_user("11")])
    clock.advance(USER_MAX_AGE - 10)
    await aging_store.put_users([make_user("22")])
    clock.advance(9)
    assert set(await aging_store.get_users(["11", "22"])) == {"11", "22"}
    clock.advance(1)
    assert set(await aging_store.get_users(["11", "22"])) == {"22"}  # fetched from v2 again by the service
    await aging_store.put_users([make_user("11")])
    assert set(await aging_store.get_users(["11", "22"])) == {"11", "22"}


async def test_sqlite_purges_expired_rows_now_and_then(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.sqlite3"
    store = await SQLiteStore.open(str(path), message_retention=RETENTION, user_max_age=USER_MAX_AGE, clock=clock)
    store.purge_interval = 3
    try:
        await store.put_messages([make_message("100")])  # the first write purges (nothing yet)
        await store.put_users([make_user("11")])
        await store.mark_deleted("100", "11")
        clock.advance(RETENTION)
        await store.put_messages([make_message("200")])  # third cached write: no purge yet
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
            await store.put_users([make_user("22")])  # the fourth: purges
            assert [row[0] for row in conn.execute("SELECT id FROM messages")] == [200]
            assert [row[0] for row in conn.execute("SELECT id FROM users")] == ["22"]
        finally:
            conn.close()
    finally:
        await store.close()


async def test_sqlite_an_expired_unpurged_message_learned_again_forgets_its_deletion(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = await SQLiteStore.open(str(tmp_path / "s.sqlite3"), message_retention=RETENTION, clock=clock)
    store.purge_interval = 1000
    try:
        await store.put_messages([make_message("1")])
        await store.mark_deleted("1", "11")
        clock.advance(RETENTION + 1)
        await store.put_messages([make_message("1")])  # the old row is still there, but forgotten
        assert await store.get_message("1") == make_message("1")
        assert await store.get_deletion("1") is None
    finally:
        await store.close()


async def test_memory_drops_an_expired_message_when_read(clock: FakeClock) -> None:
    store = MemoryStore(message_retention=RETENTION, clock=clock)
    await store.put_messages([make_message("1")])
    used = store.cached_bytes
    assert used > 0
    clock.advance(RETENTION)
    assert await store.get_message("1") is None
    assert store.cached_bytes == 0


async def test_redis_ttls_come_from_the_store_config(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    settings = StoreConfig(message_retention=4321, user_max_age=321)
    async with opened_store("redis", request, tmp_path, settings=settings) as store:
        assert isinstance(store, RedisStore)
        raw = await _raw_redis(request.getfixturevalue("redis_url"))
        try:
            await store.put_messages([make_message("1")])
            await store.put_users([make_user("11")])
            await store.mark_deleted("1", None)
            assert 4311 <= await raw.ttl(f"{store.prefix}msg:1") <= 4321
            assert 4311 <= await raw.ttl(f"{store.prefix}del:1") <= 4321
            assert 311 <= await raw.ttl(f"{store.prefix}user:11") <= 321
        finally:
            await raw.aclose()


async def test_open_store_takes_retention_from_the_settings(redis_url: str) -> None:
    settings = StoreConfig(message_retention=4321, user_max_age=321, encryption_key=KEY)
    store = await open_store(redis_url, settings=settings)
    try:
        assert isinstance(store, RedisStore)
        assert (store.message_ttl, store.deletion_ttl, store.user_ttl) == (4321, 4321, 321)
    finally:
        await store.close()


async def test_open_store_from_config_passes_every_setting(tmp_path: Path, clock: FakeClock) -> None:
    config = StoreConfig(url=f"sqlite:///{tmp_path}/c.sqlite3", message_retention=RETENTION, user_max_age=50)
    store = await open_store_from_config(config, clock=clock)
    try:
        assert isinstance(store, SQLiteStore)
        assert (store.message_retention, store.user_max_age) == (RETENTION, 50)
        memory = await open_store_from_config(StoreConfig(url="memory", memory_max_entries=1), clock=clock)
        await memory.put_messages([make_message("1"), make_message("2")])
        assert await memory.get_message("1") is None
    finally:
        await store.close()


# Memory: bounded by bytes as well as entries -------------------------------------------------------------


def _message_size(message: DirectMessage) -> int:
    return len(message.id) + len(codec.dumps(codec.message_to_record(message)))


async def test_memory_evicts_the_least_recently_learned_when_over_its_bytes() -> None:
    messages = [make_message(str(i), text="x" * 1000) for i in range(1, 5)]
    size = _message_size(messages[0])
    store = MemoryStore(max_entries=100, max_bytes=3 * size + size // 2)  # room for three
    await store.put_messages(messages[:3])
    await store.put_messages(messages[:1])  # learned again: now the most recent
    await store.put_messages([messages[3]])
    assert await store.get_message("2") is None
    for kept in ("1", "3", "4"):
        assert await store.get_message(kept) is not None
    assert store.cached_bytes <= 3 * size + size // 2


async def test_memory_bytes_count_users_and_messages_together() -> None:
    user = make_user("11")
    message = make_message("1")
    size = _message_size(message)
    store = MemoryStore(max_bytes=size + 10)
    await store.put_messages([message])
    await store.put_users([user])  # together they exceed the bytes: the message, used least recently, goes
    assert await store.get_message("1") is None
    assert set(await store.get_users(["11"])) == {"11"}


async def test_memory_a_larger_rewrite_counts_its_new_size() -> None:
    small = make_message("1", text="s")
    store = MemoryStore(max_bytes=_message_size(small) * 3)
    await store.put_messages([small, make_message("2", text="s")])
    before = store.cached_bytes
    await store.put_messages([make_message("1", text="s" * 10)])
    assert store.cached_bytes == before + 9
    await store.put_messages([make_message("2", text="L" * 10_000)])  # larger than the whole budget: not kept
    assert await store.get_message("2") is None
    assert store.cached_bytes <= _message_size(small) * 3


async def test_memory_many_big_messages_stay_within_the_bytes() -> None:
    store = MemoryStore(max_bytes=50_000)
    for i in range(200):
        await store.put_messages([make_message(str(i), text="y" * 2000)])
        assert store.cached_bytes <= 50_000
    assert await store.get_message("199") is not None
    assert await store.get_message("0") is None


# Encryption at rest ------------------------------------------------------------------------------------

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()
PLAINTEXT = "meet me at the old pier at 23:45, bring the ledger"


@asynccontextmanager
async def at_rest(backend: str, request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Yields ``(open_with, raw_record)``: stores on one SQLite file or Redis prefix, each with a key of its own,
    and a reader of a message's bytes as stored."""
    opened: list[Store] = []
    if backend == "sqlite":
        path = tmp_path / "enc.sqlite3"

        async def open_with(key: str | None) -> Store:
            store = await SQLiteStore.open(str(path), encryption_key=key)
            opened.append(store)
            return store

        async def raw_record(message_id: str) -> bytes:
            conn = sqlite3.connect(path)
            try:
                return bytes(conn.execute("SELECT record FROM messages WHERE id = ?", (message_id,)).fetchone()[0])
            finally:
                conn.close()

        try:
            yield open_with, raw_record
        finally:
            for store in opened:
                await store.close()
        return
    url = request.getfixturevalue("redis_url")
    async with redis_namespace(url) as prefix:

        async def open_with(key: str | None) -> Store:
            store = await RedisStore.open(url, prefix=prefix, encryption_key=key)
            opened.append(store)
            return store

        async def raw_record(message_id: str) -> bytes:
            raw = await _raw_redis(url)
            try:
                return await raw.get(f"{prefix}msg:{message_id}")
            finally:
                await raw.aclose()

        try:
            yield open_with, raw_record
        finally:
            for store in opened:
                await store.close()


@pytest.fixture(params=["sqlite", "redis"])
async def encrypted(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with at_rest(request.param, request, tmp_path) as pair:
        yield pair


async def test_with_a_key_the_stored_text_is_not_plaintext(encrypted) -> None:  # type: ignore[no-untyped-def]
    open_with, raw_record = encrypted
    store = await open_with(KEY)
    message = make_message("1", text=PLAINTEXT)
    await store.put_messages([message])
    raw = await raw_record("1")
    assert PLAINTEXT.encode() not in raw
    assert b"pier" not in raw
    record = codec.loads(raw)
    assert "text" not in record and "text_enc" in record
    assert record["sender_id"] == "11"  # only the text is encrypted
    assert await store.get_message("1") == message


async def test_turning_the_key_on_still_reads_plaintext_records(encrypted) -> None:  # type: ignore[no-untyped-def]
    open_with, raw_record = encrypted
    before = await open_with(None)
    await before.put_messages([make_message("1", text=PLAINTEXT)])
    assert PLAINTEXT.encode() in await raw_record("1")
    after = await open_with(KEY)
    assert await after.get_message("1") == make_message("1", text=PLAINTEXT)
    await after.put_messages([make_message("2", text=PLAINTEXT)])
    assert PLAINTEXT.encode() not in await raw_record("2")
    assert await after.get_message("2") == make_message("2", text=PLAINTEXT)


async def test_a_record_the_key_cannot_open_is_a_logged_miss(
    encrypted,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    open_with, _ = encrypted
    writer = await open_with(KEY)
    await writer.put_messages([make_message("1", text=PLAINTEXT)])
    await writer.mark_deleted("1", "11")
    caplog.set_level(logging.WARNING, logger="gateway.store")
    assert await (await open_with(OTHER_KEY)).get_message("1") is None
    assert await (await open_with(None)).get_message("1") is None  # encrypted, and no key at all
    warnings = [r for r in caplog.records if r.name == "gateway.store"]
    assert len(warnings) == 2 and all("1" in r.getMessage() for r in warnings)
    assert not any(PLAINTEXT in r.getMessage() or KEY in r.getMessage() for r in caplog.records)
    assert await writer.get_message("1") == make_message("1", text=PLAINTEXT)  # the right key still reads it


async def test_a_tampered_ciphertext_is_a_miss(encrypted) -> None:  # type: ignore[no-untyped-def]
    open_with, raw_record = encrypted
    store = await open_with(KEY)
    await store.put_messages([make_message("1", text=PLAINTEXT)])
    record = codec.loads(await raw_record("1"))
    token = record["text_enc"]
    record["text_enc"] = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    forged = make_message("1", text="forged")
    assert codec.read_message(record, codec.TextCipher(KEY)) is None
    assert codec.read_message(codec.message_to_record(forged, codec.TextCipher(KEY)), codec.TextCipher(KEY)) == forged


def test_each_encryption_is_fresh_and_the_cipher_hides_its_key() -> None:
    cipher = codec.TextCipher(KEY)
    assert cipher.encrypt(PLAINTEXT) != cipher.encrypt(PLAINTEXT)  # random IV: equal texts do not show
    assert KEY not in repr(cipher)
    with pytest.raises(ValueError):
        codec.TextCipher("not a key")


async def test_the_gateway_opens_its_store_with_the_configured_key_and_retention(
    aiohttp_client,
    emulator,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "gw.sqlite3"
    store_settings = {"encryption_key": KEY, "message_retention": 4321, "user_max_age": 321}
    config = gateway_config(emulator, store_url=f"sqlite:///{path}", store=store_settings)
    client = await aiohttp_client(create_app(config))
    store = store_of(client)
    assert isinstance(store, SQLiteStore)
    assert (store.message_retention, store.user_max_age) == (4321, 321)
    response = await client.post(f"/1.1/direct_messages/destroy.json?id={SEED_002_ID}")
    assert response.status == 200
    await settled(client)  # the message v2 described is stored after the answer
    conn = sqlite3.connect(path)
    try:
        (raw,) = conn.execute("SELECT record FROM messages WHERE id = ?", (SEED_002_ID,)).fetchone()
    finally:
        conn.close()
    assert b"tworld" not in bytes(raw) and b"text_enc" in bytes(raw)
    got = await store.get_message(SEED_002_ID)
    assert got is not None and got.text == "hello, tworld."


# --- A message with its users in one call ---------------------------------------------------------------


async def test_a_message_comes_with_both_its_users(store: Store) -> None:
    await store.put_messages([make_message("1", sender_id="11", recipient_id="22"), make_message("2")])
    await store.put_users([make_user("11"), make_user("22"), make_user("33")])
    assert await store.get_message_with_users("1") == (
        make_message("1", sender_id="11", recipient_id="22"),
        {"11": make_user("11"), "22": make_user("22")},
    )


async def test_a_message_whose_users_are_unknown_comes_alone(store: Store) -> None:
    await store.put_messages([make_message("1", sender_id="44", recipient_id="55")])
    await store.put_users([make_user("44")])
    assert await store.get_message_with_users("1") == (
        make_message("1", sender_id="44", recipient_id="55"),
        {"44": make_user("44")},
    )


async def test_a_note_to_self_comes_with_its_one_user(store: Store) -> None:
    await store.put_messages([make_message("1", sender_id="11", recipient_id="11", conversation_id="11-11")])
    await store.put_users([make_user("11")])
    message, users = await store.get_message_with_users("1")
    assert message is not None and users == {"11": make_user("11")}


async def test_an_unknown_message_comes_with_no_users(store: Store) -> None:
    await store.put_users([make_user("11"), make_user("22")])
    assert await store.get_message_with_users("404") == (None, {})


async def test_with_users_follows_retention_and_user_age(aging_store: Store, clock: FakeClock) -> None:
    await aging_store.put_messages([make_message("1")])
    await aging_store.put_users([make_user("11"), make_user("22")])
    clock.advance(USER_MAX_AGE)
    message, users = await aging_store.get_message_with_users("1")
    assert message == make_message("1")
    if not isinstance(aging_store, RedisStore):  # Redis ages users on the server, not by this clock
        assert users == {}
    clock.advance(RETENTION)
    assert await aging_store.get_message_with_users("1") == (None, {})
