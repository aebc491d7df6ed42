"""One contract for every store backend (messages, then credentials), then what only SQLite, only memory or
only Redis promises."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.auth.credentials import BasicUser, Consumer, CredentialEntry, OAuth2Grant, Token
from gateway.model import DirectMessage, Entities, Hashtag, Mention, Url, User
from gateway.store import sqlite as sqlite_module
from gateway.store.base import Deletion, MessageStore, Store, StoreError, open_store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.conftest import opened_store, redis_namespace

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


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_store(request.param, request, tmp_path) as opened:
        expected = {"memory": MemoryStore, "sqlite": SQLiteStore, "redis": RedisStore}[request.param]
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
            (rows,) = conn.execute("SELECT count(*) FROM nonces").fetchone()
        finally:
            conn.close()
        assert rows <= len(live) + store.nonce_purge_interval
        for nonce in live:  # purging never forgets a nonce that is still live
            assert await store.remember_nonce("s", nonce, now + 300) is False
    finally:
        await store.close()


async def test_sqlite_migrates_a_version_1_file_and_keeps_its_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.sqlite3"
    with monkeypatch.context() as patch:  # write the file as a version-1 gateway did
        patch.setattr(sqlite_module, "SCHEMA_VERSION", 1)
        old = await SQLiteStore.open(str(path))
        await old.put_messages([make_message("1"), make_message("2", text="deleted later")])
        await old.put_users([make_user("11")])
        await old.mark_deleted("2", "11")
        deletion = await old.get_deletion("2")
        await old.close()
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    finally:
        conn.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_message("1"),
        lambda s: s.put_messages([make_message()]),
        lambda s: s.get_users(["11"]),
        lambda s: s.put_users([make_user()]),
        lambda s: s.mark_deleted("1", None),
        lambda s: s.get_deletion("1"),
        lambda s: s.put_consumer(Consumer("ck", "cs")),
        lambda s: s.get_token("tk"),
        lambda s: s.put_grant("alice", GRANT),
        lambda s: s.list_credentials(),
        lambda s: s.remember_nonce("s", "n", time.time() + 60),
    ],
    ids=[
        "get_message", "put_messages", "get_users", "put_users", "mark_deleted", "get_deletion",
        "put_consumer", "get_token", "put_grant", "list_credentials", "remember_nonce",
    ],  # fmt: skip
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


async def test_memory_never_evicts_credentials() -> None:
    store = MemoryStore(max_entries=2)
    for i in range(10):
        await store.put_consumer(Consumer(f"ck{i}", "SECRET"))
        await store.put_user(make_basic_user(f"user{i}"))
        await store.put_messages([make_message(str(i))])
    for i in range(10):
        assert await store.get_consumer(f"ck{i}") is not None
        assert await store.get_user(f"user{i}") is not None


async def test_memory_purges_expired_nonces_now_and_then() -> None:
    store = MemoryStore()
    store.nonce_purge_interval = 10
    now = time.time()
    assert await store.remember_nonce("s", "live", now + 300) is True
    for i in range(100):
        assert await store.remember_nonce("s", f"old{i}", now - 1) is True
    assert len(store._nonces) <= 1 + store.nonce_purge_interval
    assert await store.remember_nonce("s", "live", now + 300) is False


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
            f"{p}nonce:oauth1:ck:tk:n%3A1",
        }  # fmt: skip
        day = 24 * 3600
        for key, ttl in (("msg:1001", 30 * day), ("user:11", 7 * day), ("del:1001", 30 * day)):
            assert ttl - 60 <= await raw.ttl(p + key) <= ttl, key
        for key in ("consumer:ck", "token:tk", "consumer_tokens:ck", "basic:alice"):
            assert await raw.ttl(p + key) == -1, key  # exists, never expires
        assert 0 < await raw.pttl(f"{p}nonce:oauth1:ck:tk:n%3A1") <= 300_000
    finally:
        await raw.aclose()


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


class _Relay:
    """A TCP relay to the real Redis that can be cut, as a server that goes away would be."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def test_redis_a_server_that_goes_away_makes_every_call_a_store_error(redis_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    relay = _Relay(parts.hostname or "127.0.0.1", parts.port or 6379)
    await relay.start()
    async with redis_namespace(redis_url) as prefix:
        store = await RedisStore.open(f"redis://127.0.0.1:{relay.port}{parts.path}", prefix=prefix, socket_timeout=1)
        try:
            await store.put_messages([make_message("1")])
            assert await store.get_message("1") == make_message("1")
            await relay.cut()
            for call in _REDIS_CALLS:
                with pytest.raises(StoreError):
                    await call(store)
        finally:
            await store.close()


async def test_redis_operations_after_close_raise_store_error(redis_store: RedisStore) -> None:
    await redis_store.close()
    for call in _REDIS_CALLS:
        with pytest.raises(StoreError, match="closed"):
            await call(redis_store)
