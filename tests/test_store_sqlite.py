"""How the SQLite store spends its threads: point reads on the event loop's read-only connection, the worker
thread only when that connection reports an error.
The contract itself is in test_store.py, which runs over every backend."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth.credentials import BasicUser, Consumer, OAuth2Grant, Token
from gateway.store.base import Deletion, StoreError
from gateway.store.sqlite import SQLiteStore
from tests.test_store import make_message, make_user

GRANT = OAuth2Grant(access_token="at", refresh_token="rt", expires_at=2_000_000_000.0)


class Submissions:
    """Counts the calls a store hands to its worker thread."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        submit = store._executor.submit

        def counting(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            self.count += 1
            return submit(fn, *args, **kwargs)

        monkeypatch.setattr(store._executor, "submit", counting)


class Watched:
    """Stands in for a store connection: records the thread of every statement, and raises ``error`` (as
    sqlite3 would) for every statement while it is set."""

    def __init__(self, real: sqlite3.Connection, error: sqlite3.Error | None = None) -> None:
        self.real = real
        self.error = error
        self.threads: set[int] = set()
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.threads.add(threading.get_ident())
        self.statements.append(sql)
        if self.error is not None:
            raise self.error
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.threads.add(threading.get_ident())
        self.statements.append(sql)
        if self.error is not None:
            raise self.error
        return self.real.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def close(self) -> None:
        self.real.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        yield opened
    finally:
        await opened.close()


async def fill(store: SQLiteStore) -> None:
    """A message with both its users, a deletion, and one credential of each kind."""
    await store.put_messages([make_message("1001"), make_message("1002")])
    await store.put_users([make_user("11"), make_user("22")])
    await store.mark_deleted("1002", "22")
    await store.put_consumer(Consumer(key="ck", secret="cs"))
    await store.put_token(Token(token="tk", consumer_key="ck", secret="ts"))
    await store.put_user(BasicUser(username="alice", password_hash="hash", grant=GRANT))


def hot_reads(store: SQLiteStore) -> list[Callable[[], Awaitable[object]]]:
    """Every point read the gateway makes per request, each for something there and something not."""
    return [
        lambda: store.get_message("1001"),
        lambda: store.get_message("404"),
        lambda: store.get_message_with_users("1001"),
        lambda: store.get_message_with_users("404"),
        lambda: store.get_users(["11", "22", "404"]),
        lambda: store.get_deletion("1002"),
        lambda: store.get_deletion("1001"),
        lambda: store.get_consumer("ck"),
        lambda: store.get_consumer("nope"),
        lambda: store.get_token("tk"),
        lambda: store.get_token("nope"),
        lambda: store.get_user("alice"),
        lambda: store.get_user("nope"),
    ]


EXPECTED = [
    make_message("1001"),
    None,
    (make_message("1001"), {"11": make_user("11"), "22": make_user("22")}),
    (None, {}),
    {"11": make_user("11"), "22": make_user("22")},
    "deleted by 22",
    None,
    Consumer(key="ck", secret="cs"),
    None,
    Token(token="tk", consumer_key="ck", secret="ts"),
    None,
    BasicUser(username="alice", password_hash="hash", grant=GRANT),
    None,
]


def comparable(result: object) -> object:
    return f"deleted by {result.by}" if isinstance(result, Deletion) else result


# 1. Point reads stay on the event loop ----------------------------------------------------------------


async def test_point_reads_run_on_the_event_loop_without_the_worker(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store)
    assert store._reader is not None
    watched = Watched(store._reader)
    store._reader = watched  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)

    results = [comparable(await read()) for read in hot_reads(store)]

    assert results == EXPECTED
    assert submissions.count == 0
    assert watched.threads == {threading.get_ident()}
    await store.mark_deleted("1001", "11")  # a write does go to the worker
    assert submissions.count == 1


async def test_the_loop_connection_is_read_only(store: SQLiteStore) -> None:
    assert store._reader is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        store._reader.execute("DELETE FROM messages")
    assert store._reader.execute("PRAGMA busy_timeout").fetchone() == (0,)
    assert store._reader.execute("PRAGMA query_only").fetchone() == (1,)


async def test_a_memory_database_reads_on_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """``:memory:`` cannot be opened by a second connection: every call goes to the one that has it."""
    store = await SQLiteStore.open(":memory:")
    try:
        assert store._reader is None
        await fill(store)
        submissions = Submissions(store, monkeypatch)
        results = [comparable(await read()) for read in hot_reads(store)]
        assert results == EXPECTED
        assert submissions.count == len(results)
        assert await store.remember_nonce("scope", "n", 2_000_000_000) is True
        assert await store.remember_nonce("scope", "n", 2_000_000_000) is False
    finally:
        await store.close()


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database is busy"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.DatabaseError("database disk image is malformed"),
    ],
    ids=["locked", "busy", "io", "malformed"],
)
async def test_a_loop_read_that_fails_is_answered_by_the_worker(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, error: sqlite3.Error
) -> None:
    await fill(store)
    assert store._reader is not None
    refusing = Watched(store._reader, error)
    store._reader = refusing  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)

    results = [comparable(await read()) for read in hot_reads(store)]

    assert results == EXPECTED
    assert submissions.count == len(results)  # each read tried the loop once, then crossed once
    assert len(refusing.statements) == len(results)


async def test_a_read_neither_connection_can_answer_is_a_store_error(store: SQLiteStore) -> None:
    await fill(store)
    assert store._reader is not None and store._conn is not None
    store._reader = Watched(store._reader, sqlite3.OperationalError("database is locked"))  # type: ignore[assignment]
    store._conn = Watched(store._conn, sqlite3.OperationalError("disk I/O error"))  # type: ignore[assignment]
    with pytest.raises(StoreError, match="disk I/O error"):
        await store.get_message_with_users("1001")


async def test_the_loop_reads_committed_data_while_a_writer_holds_the_file(store: SQLiteStore, tmp_path: Path) -> None:
    """A write in progress (here: one that stops halfway through its transaction) never makes a loop read
    wait, in this store or in another one on the same file; it sees the last commit."""
    await store.put_messages([make_message("1001")])
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    written, release = threading.Event(), threading.Event()

    def stalled(db: sqlite3.Connection) -> None:
        db.execute("UPDATE messages SET deleted_at = 1e12, deleted_by = 'x' WHERE id = '1001'")
        written.set()
        release.wait(10)

    try:
        write = asyncio.create_task(store._write(stalled))
        assert await asyncio.to_thread(written.wait, 10)
        for reader in (store, other):
            assert await reader.get_deletion("1001") is None
            assert await reader.get_message_with_users("1001") == (make_message("1001"), {})
        assert not write.done()
        release.set()
        await write
        for reader in (store, other):
            assert await reader.get_deletion("1001") == Deletion(at=1e12, by="x")
    finally:
        release.set()
        await other.close()


# 2. Read your writes, in one store and across two on one file ----------------------------------------------

# A round: writes run concurrently, at most one per message id, each through store 0 or 1.
ROUND = st.dictionaries(
    keys=st.sampled_from(["1", "2", "3", "4"]),
    values=st.tuples(st.sampled_from([0, 1]), st.sampled_from(["learn", "learn again", "delete"]), st.sampled_from(["11", "22"])),
    max_size=4,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(ROUND, min_size=1, max_size=6))
async def test_every_acknowledged_write_is_read_at_once_from_either_store(
    rounds: list[dict[str, tuple[int, str, str]]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "shared.sqlite3")
        stores = [await SQLiteStore.open(path), await SQLiteStore.open(path)]
        try:
            await stores[0].put_users([make_user("11"), make_user("22")])
            messages: dict[str, str] = {}  # id -> text, the model
            deleted_by: dict[str, str] = {}
            for writes in rounds:
                calls = []
                for message_id, (which, action, who) in writes.items():
                    if action == "delete":
                        calls.append(stores[which].mark_deleted(message_id, who))
                        if message_id in messages:
                            deleted_by[message_id] = who
                    else:
                        text = f"{action} by {which}"
                        calls.append(stores[which].put_messages([make_message(message_id, text=text)]))
                        messages[message_id] = text
                await asyncio.gather(*calls)
                for reader in stores:
                    for message_id in ["1", "2", "3", "4"]:
                        message, users = await reader.get_message_with_users(message_id)
                        deletion = await reader.get_deletion(message_id)
                        if message_id in messages:
                            assert message == make_message(message_id, text=messages[message_id])
                            assert set(users) == {"11", "22"}
                        else:
                            assert (message, users) == (None, {})
                        assert (deletion.by if deletion else None) == deleted_by.get(message_id)
        finally:
            for opened in stores:
                await opened.close()


async def test_loop_reads_equal_worker_reads(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same reads through the worker (the path ``:memory:`` and every fallback take) give the same answers."""
    await fill(store)
    on_loop = [comparable(await read()) for read in hot_reads(store)]
    monkeypatch.setattr(store, "_reader", None)
    on_worker = [comparable(await read()) for read in hot_reads(store)]
    assert on_loop == on_worker == EXPECTED
