"""How the SQLite store spends its threads: point reads and batched writes on the event loop's connection,
which never waits; the worker thread's connection only for what that one could not do at once (a lock held
elsewhere, any error), for checkpoints, and for ``:memory:``. The contract itself is in test_store.py, which
runs over every backend."""

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
from gateway.model import User
from gateway.store.base import Deletion, StoreError
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlite import schema as sqlite_schema
from gateway.store.sqlite import store as sqlite_store
from gateway.store.sqlite import writer as writer_module
from tests.test_store import make_message, make_user, write_old_file

GRANT = OAuth2Grant(access_token="at", refresh_token="rt", expires_at=2_000_000_000.0)


class Submissions:
    """Counts the calls a store hands to its worker thread."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        submit = store._worker._executor.submit

        def counting(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            self.count += 1
            return submit(fn, *args, **kwargs)

        monkeypatch.setattr(store._worker._executor, "submit", counting)


class Watched:
    """Stands in for a store connection: records the thread of every statement, and raises ``error`` (as
    sqlite3 would) for every statement while it is set."""

    def __init__(self, real: sqlite3.Connection, error: sqlite3.Error | None = None) -> None:
        self.real = real
        self.error = error
        self.threads: set[int] = set()
        self.statements: list[str] = []

    def _see(self, sql: str) -> None:
        self.threads.add(threading.get_ident())
        self.statements.append(sql)
        if self.error is not None:
            raise self.error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._see(sql)
        return self.real.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._see(sql)
        return self.real.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    @property
    def total_changes(self) -> int:
        return self.real.total_changes

    def close(self) -> None:
        self.real.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    # The purge that follows the first write (test_store.py) would add a commit on the worker to every test.
    opened._writes = 1
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


async def test_point_reads_and_writes_run_on_the_event_loop_without_the_worker(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store._loop_db is not None
    watched = Watched(store._loop_db)
    store._loop_db = store._writer.db = watched  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)

    await fill(store)
    results = [comparable(await read()) for read in hot_reads(store)]
    await store.mark_deleted("1001", "11")
    assert await store.remember_nonce("scope", "n", 2_000_000_000) is True

    assert results == EXPECTED
    assert submissions.count == 0
    assert watched.threads == {threading.get_ident()}
    assert "COMMIT" in watched.statements
    assert (await store.get_deletion("1001")).by == "11"  # type: ignore[union-attr]


async def test_the_loop_connection_never_waits_and_never_checkpoints(store: SQLiteStore) -> None:
    assert store._loop_db is not None and store._worker.db is not None
    pragmas = ("busy_timeout", "wal_autocheckpoint", "synchronous", "foreign_keys", "journal_mode")
    on_loop = [store._loop_db.execute(f"PRAGMA {name}").fetchone()[0] for name in pragmas]
    on_worker = await store._worker.call(
        lambda: [store._worker.connection.execute(f"PRAGMA {name}").fetchone()[0] for name in pragmas]
    )
    assert on_loop == [0, 0, 1, 1, "wal"]  # synchronous 1 is NORMAL
    assert on_worker == [5000, 1000, 1, 1, "wal"]


async def test_a_memory_database_reads_on_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """``:memory:`` cannot be opened by a second connection: every call goes to the one that has it."""
    store = await SQLiteStore.open(":memory:")
    try:
        assert store._loop_db is None
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
    assert store._loop_db is not None
    refusing = Watched(store._loop_db, error)
    store._loop_db = store._writer.db = refusing  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)

    results = [comparable(await read()) for read in hot_reads(store)]

    assert results == EXPECTED
    assert submissions.count == len(results)  # each read tried the loop once, then crossed once
    assert len(refusing.statements) == len(results)


async def test_a_read_neither_connection_can_answer_is_a_store_error(store: SQLiteStore) -> None:
    await fill(store)
    assert store._loop_db is not None and store._worker.db is not None
    store._loop_db = Watched(store._loop_db, sqlite3.OperationalError("database is locked"))  # type: ignore[assignment]
    store._worker.db = Watched(store._worker.db, sqlite3.OperationalError("disk I/O error"))  # type: ignore[assignment]
    with pytest.raises(StoreError, match="disk I/O error"):
        await store.get_message_with_users("1001")


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's write transaction, stopped halfway: it holds the file's write lock."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("""UPDATE messages SET deletions = '{"x": 1e12}' WHERE id = '1001'""")
    return other


async def test_while_another_connection_holds_the_write_lock_the_loop_reads_and_retries_the_write(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in progress elsewhere never makes the loop wait: reads see the last commit at once, and a batch
    the loop cannot begin is tried again on the loop a moment later, growing meanwhile, with no thread
    waiting for the lock; it commits soon after the lock is free."""
    await store.put_messages([make_message("1001")])
    await store.put_users([make_user("11"), make_user("22")])
    other = hold_write_lock(tmp_path / "s.sqlite3")
    submissions = Submissions(store, monkeypatch)
    statements = commits_of(store)
    try:
        write = asyncio.create_task(store.put_messages([make_message("1002")]))
        for _ in range(20):
            await asyncio.sleep(0.005)
            assert await store.get_deletion("1001") is None
            assert (await store.get_message_with_users("1001"))[0] == make_message("1001")
        later = asyncio.create_task(store.put_messages([make_message("1003")]))  # joins the waiting batch
        await asyncio.sleep(0.01)
        assert not write.done() and not later.done()
        assert statements.count("BEGIN IMMEDIATE") > 3  # tried again and again, on the loop
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(write, later), 1)
        assert await store.get_deletion("1001") == Deletion(at=1e12, by="x")
        assert await store.get_message("1002") == make_message("1002")
        assert statements.count("COMMIT") == 1  # both writes in one transaction
        assert submissions.count == 0
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def test_a_write_lock_held_past_the_busy_timeout_leaves_the_batch_to_the_worker(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put_messages([make_message("1001")])
    store._writer.busy_timeout = 0.05
    other = hold_write_lock(tmp_path / "s.sqlite3")
    submissions = Submissions(store, monkeypatch)
    try:
        write = asyncio.create_task(store.put_messages([make_message("1002")]))
        await asyncio.sleep(0.2)
        assert not write.done()
        assert submissions.count == 1  # the worker waits for the lock now, with SQLite's busy timeout
        other.execute("COMMIT")
        await asyncio.wait_for(write, 10)
        assert await store.get_message("1002") == make_message("1002")
        await store.put_messages([make_message("1003")])  # the lock is free: the loop again
        assert submissions.count == 1
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def test_messages_asked_for_in_one_turn_of_the_loop_are_read_together(store: SQLiteStore) -> None:
    await fill(store)
    await store.put_messages([make_message("1003", sender_id="22", recipient_id="33")])
    await store.put_users([make_user("33")])
    assert store._loop_db is not None
    watched = Watched(store._loop_db)
    store._loop_db = store._writer.db = watched  # type: ignore[assignment]

    results = await asyncio.gather(*(store.get_message_with_users(i) for i in ("1001", "404", "1003", "1001")))

    both = {"11": make_user("11"), "22": make_user("22")}
    assert results == [
        (make_message("1001"), both),
        (None, {}),
        (make_message("1003", sender_id="22", recipient_id="33"), {"22": make_user("22"), "33": make_user("33")}),
        (make_message("1001"), both),
    ]
    # One message read each, then the users of all of them: one look at the file's version, one read.
    assert [s.split()[0] for s in watched.statements] == ["SELECT"] * 4 + ["PRAGMA", "SELECT"]
    # A later turn reads again, on its own (its users now kept).
    assert await store.get_message_with_users("1003") == results[2]
    assert [s.split()[0] for s in watched.statements[6:]] == ["SELECT", "PRAGMA"]


async def test_a_record_that_cannot_be_read_fails_its_own_caller_only(store: SQLiteStore, tmp_path: Path) -> None:
    await fill(store)
    with sqlite3.connect(tmp_path / "s.sqlite3") as other:
        other.execute("UPDATE messages SET record = x'00' WHERE id = 1002")
    good, bad = await asyncio.gather(
        store.get_message_with_users("1001"), store.get_message_with_users("1002"), return_exceptions=True
    )
    assert good == (make_message("1001"), {"11": make_user("11"), "22": make_user("22")})
    assert isinstance(bad, ValueError) and not isinstance(bad, StoreError)  # as reading it alone raised


async def test_a_caller_gone_before_the_read_is_not_read_for(store: SQLiteStore) -> None:
    await fill(store)
    assert store._loop_db is not None
    watched = Watched(store._loop_db)
    store._loop_db = store._writer.db = watched  # type: ignore[assignment]
    gone = asyncio.ensure_future(store.get_message_with_users("1002"))
    stays = asyncio.ensure_future(store.get_message_with_users("1001"))
    await asyncio.sleep(0)  # both are waiting for the read at the end of this turn
    gone.cancel()
    assert (await stays)[0] == make_message("1001")
    assert gone.cancelled()
    assert [s.split()[0] for s in watched.statements] == ["SELECT", "PRAGMA", "SELECT"]  # 1001 and its users


async def test_reads_the_loop_cannot_do_cross_to_the_worker_together(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store)
    assert store._loop_db is not None
    store._loop_db = Watched(store._loop_db, sqlite3.OperationalError("database is locked"))  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)
    results = await asyncio.gather(*(store.get_message_with_users(i) for i in ("1001", "404", "1001")))
    assert [comparable(r) for r in results] == [EXPECTED[2], EXPECTED[3], EXPECTED[2]]
    assert submissions.count == 1


async def test_a_closed_store_refuses_the_read_of_a_message_with_its_users(tmp_path: Path) -> None:
    closed = await SQLiteStore.open(str(tmp_path / "c.sqlite3"))
    await closed.close()
    with pytest.raises(StoreError, match="closed"):
        await closed.get_message_with_users("1001")


# 2. Writes are committed in batches ---------------------------------------------------------------------


def commits_of(store: SQLiteStore) -> list[str]:
    """The statements (so the COMMITs) either of the store's connections runs from now on."""
    assert store._worker.db is not None and store._loop_db is not None
    statements: list[str] = []
    store._worker.db.set_trace_callback(statements.append)
    store._loop_db.set_trace_callback(statements.append)
    return statements


def committed_ids(path: Path, where: str = "") -> set[str]:
    """Message ids (those matching ``where``, if given) another connection sees: what is committed."""
    conn = sqlite3.connect(path)
    try:
        return {str(row[0]) for row in conn.execute(f"SELECT id FROM messages {where}")}
    finally:
        conn.close()


@pytest.mark.parametrize(("max_batch", "transactions"), [(256, 1), (10, 7)])
async def test_concurrent_writes_share_transactions_and_are_answered_after_commit(
    store: SQLiteStore, tmp_path: Path, max_batch: int, transactions: int
) -> None:
    store._writer.max_batch = max_batch
    statements = commits_of(store)
    writes = 64

    async def learn(i: int) -> bool:
        await store.put_messages([make_message(str(i))])
        # Answered: another connection must see it already, with no await in between.
        return str(i) in committed_ids(tmp_path / "s.sqlite3")

    acknowledged = await asyncio.gather(*(learn(i) for i in range(1, writes + 1)))

    assert acknowledged == [True] * writes
    assert statements.count("COMMIT") == transactions < writes
    assert committed_ids(tmp_path / "s.sqlite3") == {str(i) for i in range(1, writes + 1)}


async def test_concurrent_destroys_share_a_transaction(store: SQLiteStore) -> None:
    await store.put_messages([make_message(str(i)) for i in range(1, 33)])
    statements = commits_of(store)
    await asyncio.gather(*(store.mark_deleted(str(i), "11") for i in range(1, 33)))
    assert statements.count("COMMIT") == 1
    deletions = await asyncio.gather(*(store.get_deletion(str(i)) for i in range(1, 33)))
    assert all(deletion is not None and deletion.by == "11" for deletion in deletions)


def half_written_then_failing(message_id: str) -> Callable[[sqlite3.Connection], None]:
    """A write that changes a row and then fails as a constraint would."""

    def write(db: sqlite3.Connection) -> None:
        db.execute("""UPDATE messages SET deletions = '{"half": 1e12}' WHERE id = ?""", (message_id,))
        raise sqlite3.IntegrityError("constraint failed")

    return write


async def test_a_write_that_raises_is_undone_alone_and_its_neighbours_commit(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await store.put_messages([make_message("1"), make_message("2")])
    statements = commits_of(store)

    results = await asyncio.gather(
        store.put_consumer(Consumer(key="ck", secret="cs")),
        store.put_token(Token(token="orphan", consumer_key="missing", secret="s")),
        store.put_token(Token(token="tk", consumer_key="ck", secret="ts")),
        store._writer.write(half_written_then_failing("1")),
        store.mark_deleted("2", "22"),
        store.remember_nonce("scope", "n1", 2_000_000_000),
        store.remember_nonce("scope", "n1", 2_000_000_000),
        store.put_messages([make_message("3")]),
        return_exceptions=True,
    )

    assert statements.count("COMMIT") == 1
    consumer, orphan, token, failed, deleted, first, replay, learned = results
    assert (consumer, token, deleted, learned) == (None, None, None, None)
    assert isinstance(orphan, ValueError) and "missing" in str(orphan)
    assert isinstance(failed, StoreError) and "constraint failed" in str(failed)
    assert (first, replay) == (True, False)  # one batch, one nonce: still accepted exactly once
    assert await store.get_token("orphan") is None
    assert await store.get_token("tk") == Token(token="tk", consumer_key="ck", secret="ts")
    assert await store.get_deletion("1") is None  # the half-written update was undone
    assert await store.get_deletion("2") is not None
    assert committed_ids(tmp_path / "s.sqlite3") == {"1", "2", "3"}


async def test_savepoints_are_paid_for_only_when_a_write_raises(store: SQLiteStore) -> None:
    await store.put_messages([make_message("1"), make_message("2")])
    statements = commits_of(store)
    await asyncio.gather(store.mark_deleted("1", "11"), store.put_users([make_user("11")]))
    assert [s for s in statements if s.startswith(("BEGIN", "SAVEPOINT", "ROLLBACK", "COMMIT"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    statements.clear()
    results = await asyncio.gather(
        store.mark_deleted("2", "22"), store._writer.write(half_written_then_failing("1")), return_exceptions=True
    )
    assert results[0] is None and isinstance(results[1], StoreError)
    assert [s for s in statements if s.startswith(("BEGIN", "SAVEPOINT", "ROLLBACK", "RELEASE", "COMMIT"))] == [
        "BEGIN IMMEDIATE",
        "ROLLBACK",  # the first try: everything undone
        "BEGIN IMMEDIATE",
        "SAVEPOINT write",
        "RELEASE write",
        "SAVEPOINT write",
        "ROLLBACK TO write",
        "RELEASE write",
        "COMMIT",
    ]
    assert (await store.get_deletion("2")).by == "22"  # type: ignore[union-attr]
    assert (await store.get_deletion("1")).by == "11"  # type: ignore[union-attr]  # the half-write undone


async def test_a_lone_write_that_raises_leaves_nothing_behind(store: SQLiteStore) -> None:
    await store.put_messages([make_message("1")])
    with pytest.raises(StoreError, match="constraint failed"):
        await store._writer.write(half_written_then_failing("1"))
    assert await store.get_deletion("1") is None
    await store.mark_deleted("1", "11")  # the connection is fine afterwards
    assert await store.get_deletion("1") is not None


class FailingCommit(Watched):
    """A connection whose COMMITs fail, as on a disk that filled up."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.error is not None:
            raise self.error
        return self.real.execute(sql, *args)


async def test_a_batch_that_cannot_commit_answers_no_caller_and_the_next_batch_works(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await store.put_messages([make_message("10")])
    assert store._worker.db is not None and store._loop_db is not None
    error = sqlite3.OperationalError("database or disk is full")
    failing, failing_on_loop = FailingCommit(store._worker.db, error), FailingCommit(store._loop_db, error)
    store._worker.db = failing  # type: ignore[assignment]
    store._loop_db = store._writer.db = failing_on_loop  # type: ignore[assignment]

    results = await asyncio.gather(
        *(store.put_messages([make_message(str(i))]) for i in range(1, 6)),
        store.mark_deleted("10", "11"),
        store.remember_nonce("scope", "n", 2_000_000_000),
        return_exceptions=True,
    )

    assert all(isinstance(result, StoreError) and "disk is full" in str(result) for result in results)
    assert committed_ids(tmp_path / "s.sqlite3") == {"10"}
    assert not failing.real.in_transaction and not failing_on_loop.real.in_transaction
    failing.error = failing_on_loop.error = None  # the disk has room again
    await store.put_messages([make_message("6")])
    assert await store.get_deletion("10") is None
    assert await store.remember_nonce("scope", "n", 2_000_000_000) is True
    assert committed_ids(tmp_path / "s.sqlite3") == {"10", "6"}


async def test_close_commits_the_writes_already_queued(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = await SQLiteStore.open(str(path))
    writes = [asyncio.create_task(store.put_messages([make_message(str(i))])) for i in range(1, 21)]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    assert [write.result() for write in writes] == [None] * 20
    assert committed_ids(path) == {str(i) for i in range(1, 21)}
    with pytest.raises(StoreError):
        await store.put_messages([make_message("21")])


async def test_a_write_whose_caller_is_gone_before_its_batch_starts_is_dropped(
    store: SQLiteStore, tmp_path: Path
) -> None:
    kept = asyncio.create_task(store.put_messages([make_message("1")]))
    dropped = asyncio.create_task(store.put_messages([make_message("2")]))
    await asyncio.sleep(0)
    dropped.cancel()
    await kept
    assert committed_ids(tmp_path / "s.sqlite3") == {"1"}


# 3. Read your writes, in one store and across two on one file ----------------------------------------------

# A round: writes run concurrently, at most one per message id, each through store 0 or 1.
ROUND = st.dictionaries(
    keys=st.sampled_from(["1", "2", "3", "4"]),
    values=st.tuples(
        st.sampled_from([0, 1]), st.sampled_from(["learn", "learn again", "delete"]), st.sampled_from(["11", "22"])
    ),
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
            deleted_by: dict[str, set[str]] = {}  # id -> its deleters
            for writes in rounds:
                calls = []
                for message_id, (which, action, who) in writes.items():
                    if action == "delete":
                        calls.append(stores[which].mark_deleted(message_id, who))
                        if message_id in messages:
                            deleted_by.setdefault(message_id, set()).add(who)
                    else:
                        text = f"{action} by {which}"
                        calls.append(stores[which].put_messages([make_message(message_id, text=text)]))
                        messages[message_id] = text
                await asyncio.gather(*calls)
                for reader in stores:
                    for message_id in ["1", "2", "3", "4"]:
                        message, users = await reader.get_message_with_users(message_id)
                        deletions = await reader.get_deletions(message_id)
                        if message_id in messages:
                            assert message == make_message(message_id, text=messages[message_id])
                            assert set(users) == {"11", "22"}
                        else:
                            assert (message, users) == (None, {})
                        assert {d.by for d in deletions} == deleted_by.get(message_id, set())
        finally:
            for opened in stores:
                await opened.close()


async def test_loop_reads_equal_worker_reads(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same reads through the worker (the path ``:memory:`` and every fallback take) give the same answers."""
    await fill(store)
    on_loop = [comparable(await read()) for read in hot_reads(store)]
    monkeypatch.setattr(store, "_loop_db", None)
    on_worker = [comparable(await read()) for read in hot_reads(store)]
    assert on_loop == on_worker == EXPECTED


# 4. Users read back ----------------------------------------------------------------------------------

USERS = st.builds(
    make_user,
    user_id=st.sampled_from(["11", "22", "33"]),
    name=st.one_of(st.none(), st.text(max_size=20)),
    description=st.one_of(st.none(), st.text(max_size=40)),
    followers_count=st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
    protected=st.booleans(),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=st.lists(USERS, min_size=1, max_size=8))
async def test_a_user_read_is_always_the_last_one_written(versions: list[User]) -> None:
    """Rewriting a user, even back to an earlier version, is read back exactly."""
    store = await SQLiteStore.open(":memory:")
    try:
        for user in versions:
            await store.put_users([user])
            assert await store.get_users([user.id]) == {user.id: user}
    finally:
        await store.close()


# Deletions ------------------------------------------------------------------------------------------


def committed_deletions(path: Path) -> set[str]:
    """Ids whose deletion another connection sees: what is committed."""
    return committed_ids(path, "WHERE deletions IS NOT NULL")


# Checkpoints run on the worker thread ------------------------------------------------------------------


async def test_the_worker_checkpoints_the_log_every_so_many_loop_commits(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store._writer.checkpoint_interval = 3
    assert store._worker.db is not None
    on_worker = Watched(store._worker.db)
    store._worker.db = on_worker  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)
    checkpoints = lambda: [s for s in on_worker.statements if "wal_checkpoint" in s]  # noqa: E731

    for i in range(1, 3):
        await store.put_messages([make_message(str(i))])
    assert checkpoints() == [] and submissions.count == 0
    await store.put_messages([make_message("3")])  # the third commit: a checkpoint is sent
    assert submissions.count == 1
    assert store._writer.checkpoint is not None
    await store._writer.checkpoint
    assert checkpoints() == ["PRAGMA wal_checkpoint(PASSIVE)"]
    assert on_worker.threads and threading.get_ident() not in on_worker.threads
    # What the checkpoint copied is in the database file itself: a reader that ignores the log finds it.
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes((tmp_path / "s.sqlite3").read_bytes())
    assert committed_ids(copy) == {"1", "2", "3"}
    for i in range(4, 7):
        await store.put_messages([make_message(str(i))])
    await asyncio.sleep(0.05)
    assert len(checkpoints()) == 2


async def test_the_worker_checkpoints_sooner_after_loop_commits_that_changed_many_rows(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store._writer.checkpoint_interval, store._writer.checkpoint_changes = 1000, 10
    assert store._worker.db is not None
    on_worker = Watched(store._worker.db)
    store._worker.db = on_worker  # type: ignore[assignment]
    submissions = Submissions(store, monkeypatch)

    await store.put_messages([make_message(str(i)) for i in range(1, 7)])  # 6 rows
    await store.put_users([make_user("11"), make_user("22"), make_user("33")])  # 9
    assert submissions.count == 0
    await store.put_messages([make_message("7")])  # the tenth row changed since the start: a checkpoint
    assert submissions.count == 1
    assert store._writer.checkpoint is not None
    await store._writer.checkpoint
    await store.put_messages([make_message(str(i)) for i in range(8, 17)])  # 9 more since then: not yet
    assert submissions.count == 1
    await store.put_messages([make_message(str(i)) for i in range(17, 40)])  # one large batch: at once
    assert submissions.count == 2
    assert store._writer.checkpoint is not None
    await store._writer.checkpoint
    assert [s for s in on_worker.statements if "wal_checkpoint" in s] == ["PRAGMA wal_checkpoint(PASSIVE)"] * 2


async def test_a_fault_in_the_bookkeeping_after_a_loop_commit_does_not_stop_the_writer(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(db: sqlite3.Connection) -> None:
        raise RuntimeError("bookkeeping broke")

    monkeypatch.setattr(store._writer, "_committed", broken)
    await asyncio.wait_for(store.put_messages([make_message("1")]), 5)
    await asyncio.wait_for(store.put_messages([make_message("2")]), 5)  # the next batch still goes
    assert committed_ids(tmp_path / "s.sqlite3") == {"1", "2"}


async def test_a_checkpoint_that_fails_is_logged_and_loses_nothing(
    store: SQLiteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store._writer.checkpoint_interval = 1
    assert store._worker.db is not None
    store._worker.db = Watched(store._worker.db, sqlite3.OperationalError("disk I/O error"))  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="gateway.store"):
        await store.put_messages([make_message("1")])
        assert store._writer.checkpoint is not None
        with pytest.raises(sqlite3.OperationalError):
            await store._writer.checkpoint
        await asyncio.sleep(0)
    assert store._writer.checkpoint is None
    assert "sqlite checkpoint failed: disk I/O error" in caplog.text
    store._worker.db.error = None  # type: ignore[attr-defined]
    await store.put_messages([make_message("2")])
    assert store._writer.checkpoint is not None
    await store._writer.checkpoint
    assert committed_ids(tmp_path / "s.sqlite3") == {"1", "2"}


# Users read on the loop are kept while nobody else writes -------------------------------------------------


def user_reads(store: SQLiteStore) -> list[str]:
    """The statements reading the users table that the loop's connection runs from now on."""
    assert store._loop_db is not None
    statements: list[str] = []
    store._loop_db.set_trace_callback(lambda sql: statements.append(sql) if "FROM users" in sql else None)
    return statements


async def test_the_loop_keeps_the_users_it_read_while_only_deletions_are_written(store: SQLiteStore) -> None:
    await store.put_messages([make_message(str(i)) for i in range(1, 4)])
    await store.put_users([make_user("11"), make_user("22")])
    reads = user_reads(store)
    both = {"11": make_user("11"), "22": make_user("22")}
    assert await store.get_message_with_users("3") == (make_message("3"), both)
    assert len(reads) == 1
    await store.mark_deleted("3", "11")
    assert await store.get_message_with_users("1") == (make_message("1"), both)
    assert await store.get_users(["22", "11"]) == both
    assert len(reads) == 1
    assert await store.get_users(["11", "33"]) == {"11": make_user("11")}  # only the one not kept is asked for
    assert len(reads) == 2 and "IN ('33')" in reads[-1]


async def test_a_write_of_users_gives_way_to_those_users_only(store: SQLiteStore) -> None:
    await store.put_users([make_user("11"), make_user("22")])
    reads = user_reads(store)
    assert await store.get_users(["11", "22"]) == {"11": make_user("11"), "22": make_user("22")}
    await store.put_users([make_user("33")])
    assert await store.get_users(["11", "22"]) == {"11": make_user("11"), "22": make_user("22")}
    assert len(reads) == 1
    await store.put_users([make_user("11", name="Renamed")])
    assert await store.get_users(["11", "22"]) == {"11": make_user("11", name="Renamed"), "22": make_user("22")}
    assert len(reads) == 2 and "IN ('11')" in reads[-1]


async def test_kept_users_give_way_to_a_write_of_users_or_a_purge(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = await SQLiteStore.open(str(tmp_path / "s.sqlite3"), user_max_age=60, clock=lambda: now[0])
    store.purge_interval = 2
    try:
        await store.put_users([make_user("11")])  # the first write: purges (nothing yet)
        assert await store.get_users(["11"]) == {"11": make_user("11")}
        await store.put_users([make_user("11", name="Renamed")])
        assert await store.get_users(["11"]) == {"11": make_user("11", name="Renamed")}
        now[0] += 30
        await store.put_users([make_user("22")])  # the third: purges, on the worker thread
        now[0] += 31
        assert await store.get_users(["11", "22"]) == {"22": make_user("22")}
        assert set(store._users) == {"22"}
    finally:
        await store.close()


async def test_kept_users_give_way_to_a_commit_by_another_connection(store: SQLiteStore, tmp_path: Path) -> None:
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.put_users([make_user("11")])
        assert await store.get_users(["11"]) == {"11": make_user("11")}
        await other.put_users([make_user("11", name="Elsewhere")])
        assert await store.get_users(["11"]) == {"11": make_user("11", name="Elsewhere")}
        await other.put_messages([make_message("7")])  # anything another connection commits
        assert await store.get_users(["11"]) == {"11": make_user("11", name="Elsewhere")}
    finally:
        await other.close()


async def test_users_read_with_a_message_give_way_to_a_commit_by_another_connection(
    store: SQLiteStore, tmp_path: Path
) -> None:
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.put_messages([make_message("5")])
        await store.put_users([make_user("11"), make_user("22")])
        message, users = await store.get_message_with_users("5")
        assert users["11"] == make_user("11")
        await other.put_users([make_user("11", name="Elsewhere")])
        message, users = await store.get_message_with_users("5")
        assert message == make_message("5") and users["11"] == make_user("11", name="Elsewhere")
    finally:
        await other.close()


async def test_kept_users_expire_as_stored_ones_do(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = await SQLiteStore.open(str(tmp_path / "s.sqlite3"), user_max_age=60, clock=lambda: now[0])
    try:
        await store.put_users([make_user("11")])
        assert await store.get_users(["11"]) == {"11": make_user("11")}
        now[0] += 61
        assert await store.get_users(["11"]) == {}
    finally:
        await store.close()


async def test_kept_users_are_bounded(store: SQLiteStore) -> None:
    store.user_cache_size = 4
    await store.put_users([make_user(str(i)) for i in range(10)])
    for i in range(10):
        assert await store.get_users([str(i)]) == {str(i): make_user(str(i))}
        assert len(store._users) <= 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=st.lists(st.tuples(st.sampled_from([0, 1]), USERS), min_size=1, max_size=8))
async def test_a_user_read_on_the_loop_is_always_the_last_one_written_by_either_store(
    versions: list[tuple[int, User]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "shared.sqlite3")
        stores = [await SQLiteStore.open(path), await SQLiteStore.open(path)]
        try:
            latest: dict[str, User] = {}
            for which, user in versions:
                await stores[which].put_users([user])
                latest[user.id] = user
                for reader in stores:
                    assert await reader.get_users(["11", "22", "33"]) == latest
        finally:
            for opened in stores:
                await opened.close()


# Consumers and tokens read on the loop are kept while nobody else writes --------------------------------


def credential_reads(store: SQLiteStore) -> list[str]:
    """The statements reading the consumers or tokens table that the loop's connection runs from now on."""
    assert store._loop_db is not None
    statements: list[str] = []
    store._loop_db.set_trace_callback(
        lambda sql: statements.append(sql) if "FROM consumers" in sql or "FROM tokens" in sql else None
    )
    return statements


async def test_the_loop_keeps_the_consumer_and_token_it_read_while_nonces_and_messages_are_written(
    store: SQLiteStore,
) -> None:
    await store.put_consumer(Consumer("ck", "consumer secret"))
    await store.put_token(Token("tok", "ck", "token secret"))
    reads = credential_reads(store)
    for i in range(3):
        assert await store.get_consumer("ck") == Consumer("ck", "consumer secret")
        assert await store.get_token("tok") == Token("tok", "ck", "token secret")
        assert await store.remember_nonce("oauth1:ck:tok", f"n{i}", 2e9, now=1e9)
        await store.put_messages([make_message(str(i + 1))])
    assert len(reads) == 2
    assert await store.get_token("unknown") is None and await store.get_token("unknown") is None
    assert len(reads) == 4  # what is not there is asked for every time: nothing kept for it


async def test_kept_credentials_give_way_to_the_loops_own_writes(store: SQLiteStore) -> None:
    await store.put_consumer(Consumer("ck", "consumer secret"))
    await store.put_token(Token("tok", "ck", "token secret"))
    assert await store.get_token("tok") == Token("tok", "ck", "token secret")
    await store.put_token(Token("tok", "ck", "rotated", upstream_user="marcos"))
    assert await store.get_token("tok") == Token("tok", "ck", "rotated", upstream_user="marcos")
    assert await store.get_consumer("ck") == Consumer("ck", "consumer secret")
    await store.put_consumer(Consumer("ck", "new consumer secret", via_upstream_app=True))
    assert await store.get_consumer("ck") == Consumer("ck", "new consumer secret", via_upstream_app=True)
    assert await store.remove_credential("token", "tok")
    assert await store.get_token("tok") is None
    await store.put_token(Token("tok2", "ck", "s"))
    assert await store.get_token("tok2") == Token("tok2", "ck", "s")
    assert await store.remove_credential("consumer", "ck")  # its tokens go with it
    assert await store.get_consumer("ck") is None and await store.get_token("tok2") is None


async def test_kept_credentials_give_way_to_a_commit_by_another_connection(store: SQLiteStore, tmp_path: Path) -> None:
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.put_consumer(Consumer("ck", "consumer secret"))
        await store.put_token(Token("tok", "ck", "token secret"))
        assert await store.get_consumer("ck") == Consumer("ck", "consumer secret")
        assert await store.get_token("tok") == Token("tok", "ck", "token secret")
        await other.put_token(Token("tok", "ck", "rotated elsewhere"))
        assert await store.get_token("tok") == Token("tok", "ck", "rotated elsewhere")
        await other.remove_credential("consumer", "ck")  # dm-gateway credentials remove, in another process
        assert await store.get_consumer("ck") is None and await store.get_token("tok") is None
    finally:
        await other.close()


async def test_the_files_version_is_read_once_a_turn_of_the_loop(store: SQLiteStore, tmp_path: Path) -> None:
    """Every request served in a turn arrived before it began: the file as it was then answers them all, and
    another connection's commit is seen from the next turn on."""
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    try:
        await store.put_consumer(Consumer("ck", "consumer secret"))
        await store.put_token(Token("tok", "ck", "token secret"))
        assert store._loop_db is not None
        checks: list[str] = []
        store._loop_db.set_trace_callback(lambda sql: checks.append(sql) if "data_version" in sql else None)
        await asyncio.sleep(0)
        for _ in range(3):  # none of these awaits gives the loop a turn: all in one
            assert await store.get_consumer("ck") == Consumer("ck", "consumer secret")
            assert await store.get_token("tok") == Token("tok", "ck", "token secret")
        assert len(checks) == 1
        await other.put_token(Token("tok", "ck", "rotated elsewhere"))
        await asyncio.sleep(0)
        assert await store.get_token("tok") == Token("tok", "ck", "rotated elsewhere")
        assert await store.get_consumer("ck") == Consumer("ck", "consumer secret")
        assert len(checks) == 2
    finally:
        await other.close()


def test_a_loop_that_stopped_before_its_next_turn_leaves_the_version_to_be_read_again(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()

    async def kept_token() -> SQLiteStore:
        store = await SQLiteStore.open(path)
        await store.put_consumer(Consumer("ck", "consumer secret"))
        await store.put_token(Token("tok", "ck", "token secret"))
        assert await store.get_token("tok") == Token("tok", "ck", "token secret")
        return store

    def last_turn() -> None:  # a read, then the loop is stopped within the same turn
        assert store._keeping(store._loop_db)  # type: ignore[arg-type]
        first.stop()

    async def on_another_loop() -> None:
        other = await SQLiteStore.open(path)
        try:
            await other.put_token(Token("tok", "ck", "rotated elsewhere"))
            assert await store.get_token("tok") == Token("tok", "ck", "rotated elsewhere")
        finally:
            await other.close()
            await store.close()

    try:
        store = first.run_until_complete(kept_token())
        first.call_soon(last_turn)
        first.run_forever()
        second.run_until_complete(on_another_loop())
    finally:
        first.close()
        second.close()


async def test_kept_credentials_are_bounded(store: SQLiteStore) -> None:
    store.credential_cache_size = 4
    for i in range(10):
        await store.put_consumer(Consumer(f"ck{i}", "s"))
    for i in range(10):
        assert await store.get_consumer(f"ck{i}") == Consumer(f"ck{i}", "s")
        assert len(store._consumers) <= 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(st.sampled_from([0, 1]), st.sampled_from(["put", "remove"]), st.text("ab", max_size=2)),
                       min_size=1, max_size=8))  # fmt: skip
async def test_a_token_read_on_the_loop_is_always_the_last_one_written_by_either_store(
    writes: list[tuple[int, str, str]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "shared.sqlite3")
        stores = [await SQLiteStore.open(path), await SQLiteStore.open(path)]
        try:
            await stores[0].put_consumer(Consumer("ck", "s"))
            latest: Token | None = None
            for which, what, secret in writes:
                if what == "put":
                    latest = Token("tok", "ck", secret or "-")
                    await stores[which].put_token(latest)
                else:
                    await stores[which].remove_credential("token", "tok")
                    latest = None
                for reader in stores:
                    assert await reader.get_token("tok") == latest
        finally:
            for opened in stores:
                await opened.close()


# Purges scan, so they run on the worker thread -----------------------------------------------------------


async def test_a_purge_runs_on_the_worker_and_its_writer_waits_for_it(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "s.sqlite3"
    store = await SQLiteStore.open(str(path), message_retention=60, user_max_age=60, clock=lambda: now[0])
    store.purge_interval = 2
    try:
        assert store._worker.db is not None and store._loop_db is not None
        on_worker, on_loop = Watched(store._worker.db), Watched(store._loop_db)
        store._worker.db = on_worker  # type: ignore[assignment]
        store._loop_db = store._writer.db = on_loop  # type: ignore[assignment]
        await store.put_messages([make_message("100")])  # the first write: purges (nothing yet)
        await store.put_users([make_user("11")])
        now[0] += 61
        await store.put_messages([make_message("200")])  # the third: purges message 100 and user 11 before it returns
        assert committed_ids(path) == {"200"}
        deletes = [s for s in on_worker.statements if s.startswith("DELETE")]
        assert len(deletes) == 4 and all("learned_at <=" in s or "fetched_at <=" in s for s in deletes)
        assert not any(s.startswith("DELETE") for s in on_loop.statements)
        assert threading.get_ident() not in on_worker.threads
    finally:
        await store.close()


async def test_a_purge_that_fails_is_logged_and_the_write_stands(
    store: SQLiteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store._writes = 0  # the next write purges
    assert store._worker.db is not None
    store._worker.db = Watched(store._worker.db, sqlite3.OperationalError("disk I/O error"))  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="gateway.store"):
        await store.put_messages([make_message("1")])
    assert "sqlite purge failed: sqlite: disk I/O error" in caplog.text
    assert committed_ids(tmp_path / "s.sqlite3") == {"1"}


async def test_a_loop_commit_that_fails_in_any_way_is_done_by_the_worker(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = writer_module.commit

    def commit(db: sqlite3.Connection, ops: list[Any]) -> Any:
        if db is store._loop_db:
            raise RuntimeError("something no one expected")
        return real_commit(db, ops)

    monkeypatch.setattr(writer_module, "commit", commit)
    submissions = Submissions(store, monkeypatch)
    await asyncio.wait_for(store.put_messages([make_message("1")]), 5)
    await asyncio.wait_for(store.mark_deleted("1", "11"), 5)
    assert submissions.count == 2
    assert committed_deletions(tmp_path / "s.sqlite3") == {"1"}


# Nonces ------------------------------------------------------------------------------------------------------


async def test_a_nonce_is_committed_before_its_answer_and_refused_by_every_process(
    store: SQLiteStore, tmp_path: Path
) -> None:
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))  # another process sharing the file
    try:
        assert await store.remember_nonce("consumer", "n1", 2e9, now=1e9) is True
        with sqlite3.connect(tmp_path / "s.sqlite3") as db:  # committed, as seen from outside
            digest = sqlite_schema.nonce_digest("consumer", "n1")
            assert db.execute("SELECT count(*) FROM nonce_digests WHERE digest = ?", (digest,)).fetchone() == (1,)
        assert await other.remember_nonce("consumer", "n1", 2e9, now=1e9) is False
        assert await store.remember_nonce("consumer", "n1", 2e9, now=1e9) is False
    finally:
        await other.close()


async def test_nonces_are_kept_apart_by_the_timestamp_their_requests_signed(store: SQLiteStore) -> None:
    """RFC 5849 3.3: a nonce is unique per timestamp, client and token. A replay signed the same timestamp."""
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9, timestamp=1_000_000_000) is True
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9 + 5, timestamp=1_000_000_000) is False
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9, timestamp=1_000_000_001) is True
    assert await store.remember_nonce("oauth1:ck:other", "n1", 2e9, now=1e9, timestamp=1_000_000_000) is True
    # Expired (on the caller's clock): the same request may be accepted again, as before.
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9 + 10, now=2e9, timestamp=1_000_000_000) is True


async def test_a_nonce_spent_before_the_upgrade_is_refused_at_any_timestamp_while_it_lives(tmp_path: Path) -> None:
    path = tmp_path / "v7.sqlite3"
    nonces = [("oauth1:ck:tk", "live", 2e9), ("oauth1:ck:tk", "dead", 1e9 - 1)]
    write_old_file(path, 7, "INSERT INTO nonces (scope, nonce, expires_at) VALUES (?, ?, ?)", nonces)
    store = await SQLiteStore.open(str(path))
    try:
        for timestamp in (999_999_000, 1_000_000_000, None):
            assert await store.remember_nonce("oauth1:ck:tk", "live", 2e9, now=1e9, timestamp=timestamp) is False
        assert await store.remember_nonce("oauth1:ck:other", "live", 2e9, now=1e9, timestamp=1_000_000_000) is True
        assert await store.remember_nonce("oauth1:ck:tk", "dead", 2e9, now=1e9, timestamp=1_000_000_000) is True
        assert await store.remember_nonce("oauth1:ck:tk", "live", 3e9, now=2e9, timestamp=2_000_000_000) is True
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN ('nonces', 'spent_nonces')").fetchall() == []


async def test_a_nonce_spent_under_schema_8_is_refused_after_the_upgrade_and_kept_as_a_digest_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v8.sqlite3"
    nonces = [
        (1_000_000_000, "oauth1:ck:tk", "signed", 2e9),
        (sqlite_schema.NO_TIMESTAMP, "oauth1:ck:tk", "older", 2e9),
        (1_000_000_000, "oauth1:ck:tk", "dead", 1e9 - 1),
    ]
    write_old_file(path, 8, "INSERT INTO spent_nonces VALUES (?, ?, ?, ?)", nonces)
    store = await SQLiteStore.open(str(path))
    try:
        assert await store.remember_nonce("oauth1:ck:tk", "signed", 2e9, now=1e9, timestamp=1_000_000_000) is False
        assert await store.remember_nonce("oauth1:ck:tk", "signed", 2e9, now=1e9, timestamp=1_000_000_001) is True
        assert await store.remember_nonce("oauth1:ck:other", "signed", 2e9, now=1e9, timestamp=1_000_000_000) is True
        for timestamp in (999_999_000, 1_000_000_000, None):
            assert await store.remember_nonce("oauth1:ck:tk", "older", 2e9, now=1e9, timestamp=timestamp) is False
        assert await store.remember_nonce("oauth1:ck:tk", "dead", 2e9, now=1e9, timestamp=1_000_000_000) is True
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_schema.SCHEMA_VERSION,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'spent_nonces'").fetchall() == []
        db.execute("VACUUM")  # nothing of the old table left in free pages
    raw = path.read_bytes()
    assert b"oauth1:ck:tk" not in raw and b"signed" not in raw and b"older" not in raw


async def test_a_nonce_remembered_without_a_timestamp_is_refused_again_only_without_one(store: SQLiteStore) -> None:
    """Only a nonce spent before schema version 8 stands for every timestamp; none lives in a new file."""
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9) is True
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9) is False
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9, timestamp=1_000_000_000) is True
    assert await store.remember_nonce("oauth1:ck:tk", "n1", 2e9, now=1e9, timestamp=1_000_000_000) is False


async def test_a_store_that_cannot_read_its_nonces_as_it_opens_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(db: sqlite3.Connection) -> float:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_store, "_untimed_until", unreadable)
    before = set(threading.enumerate())
    with pytest.raises(StoreError, match="disk I/O error"):
        await SQLiteStore.open(str(tmp_path / "s.sqlite3"))
    assert set(threading.enumerate()) == before  # its thread stopped, not left behind


def test_a_nonce_digest_tells_every_scope_and_nonce_apart() -> None:
    """The scope's length leads the hashed input: moving characters between scope and nonce changes it."""
    pairs = [("oauth1:a:b", "c"), ("oauth1:a:", "bc"), ("oauth1:a", ":bc"), ("oauth1:a:bc", ""), ("", "oauth1:a:bc")]
    assert len({sqlite_schema.nonce_digest(scope, nonce) for scope, nonce in pairs}) == len(pairs)
    assert all(len(sqlite_schema.nonce_digest(scope, nonce)) == 16 for scope, nonce in pairs)
    assert sqlite_schema.nonce_digest("s", "\ud800") != sqlite_schema.nonce_digest("s", "\ud801")  # never raises


async def test_a_purge_reads_the_oldest_nonces_only_and_spares_a_longer_lived_replicas(
    store: SQLiteStore, tmp_path: Path
) -> None:
    store.nonce_purge_interval = 1  # every call purges first
    other = await SQLiteStore.open(str(tmp_path / "s.sqlite3"))  # a replica whose window is ten times as long
    try:
        start = 1_000_000_000
        assert await store.remember_nonce("s", "short", start + 360, now=start, timestamp=start) is True
        assert await other.remember_nonce("s", "long", start + 3600, now=start, timestamp=start) is True
        # Past the first nonce's life, before the second's end: the purge takes the first only.
        later = start + 400
        assert await store.remember_nonce("s", "new", later + 360, now=later, timestamp=later) is True
        with sqlite3.connect(tmp_path / "s.sqlite3") as db:
            kept = {row[0] for row in db.execute("SELECT digest FROM nonce_digests")}
            assert kept == {sqlite_schema.nonce_digest("s", "long"), sqlite_schema.nonce_digest("s", "new")}
        assert await other.remember_nonce("s", "long", start + 3600, now=later, timestamp=start) is False
    finally:
        await other.close()
    assert store._loop_db is not None
    for statement, params in (
        (sqlite_store._REMEMBER_NONCE_UNTIMED_TOO, {"timestamp": 1, "digest": b"d", "expires_at": 2.0, "now": 1.0}),
        (sqlite_store._PURGE_NONCES, {"oldest_live": 1.0, "now": 1.0}),
    ):
        plan = " ".join(row[-1] for row in store._loop_db.execute("EXPLAIN QUERY PLAN " + statement, params))
        assert "SCAN nonce_digests" not in plan and "SEARCH nonce_digests USING PRIMARY KEY" in plan, plan


async def test_a_nonce_waits_out_another_process_holding_the_write_lock(store: SQLiteStore, tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        remembered = asyncio.create_task(store.remember_nonce("consumer", "n2", 2e9, now=1e9))
        await asyncio.sleep(0.1)
        assert not remembered.done()
        holder.execute("COMMIT")
        assert await asyncio.wait_for(remembered, 10) is True
        assert await store.remember_nonce("consumer", "n2", 2e9, now=1e9) is False
    finally:
        holder.close()
