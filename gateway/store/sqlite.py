"""The embedded default store: one SQLite file in WAL mode, versioned schema, survives restarts.

SQLite calls block, but the calls the gateway makes per request take microseconds, far less than handing
each one to another thread (and back, and the thread switches and lock hand-overs that come with it). So the
store has two connections and uses each for what it does best:

- The event loop's connection never waits: ``busy_timeout`` is 0 and it never checkpoints. Point reads (a
  message with its users, users, a deletion, a consumer, a token, a Basic user) run on it; in WAL mode a
  reader never waits for a writer and reads the last committed state. Writes are queued and committed on it
  in batches: every write queued so far in one ``BEGIN IMMEDIATE`` transaction; if one of them raises, the
  transaction is undone and run again with a savepoint per write, so that one is undone alone and its
  neighbours still commit. A caller is answered only after that COMMIT, so an acknowledged write survives
  kill -9 (WAL with ``synchronous=NORMAL``: a commit is written to the log, not synced; a checkpoint syncs).
- Every destroy reads its message with the users, and after the rest of a request's work SQLite's code and
  data are cold: the first statement pays for that, the ones right after it far less. So the calls of
  ``get_message_with_users`` made in one turn of the event loop are answered together at its end: their
  messages read one after the other, then the users of all of them at once.
- The worker thread's connection waits (``busy_timeout`` 5 s) and does everything slow or unusual: a read
  or a batch the loop's connection could not do at once (another process holds the write lock, or any
  error at all) is done again there, which waits out a lock and turns a real failure into ``StoreError``;
  the WAL checkpoints, every ``checkpoint_interval`` commits or sooner once they changed
  ``checkpoint_changes`` rows, as they sync the disk; listing credentials,
  ``ping``; and every call on a ``:memory:`` database, which a second connection could not see.
- Users repeat from one message to the next, so the loop keeps the users it read, for as long as the file's
  ``data_version`` says no other connection has committed and none of its own batches wrote more than
  deletions.

A message's row is keyed by its id as an integer (schema version 3): the table's own B-tree is the index, so
a lookup walks one tree instead of a text key's index and then the table, and at a million messages reads
one page that may not be in the connection's cache instead of two. Every id a legacy call can name is such
an integer (``gateway.ids``); a message whose id is not (which v2 never sends) is not kept.

A message's deletions (schema version 4) are a JSON object in its row, one entry per deleter (a caller's
``Principal.identity``) with when it deleted the message: each participant deletes a message for themselves,
and each one's retry is answered from its own entry. Recording one is a ``json_patch`` of that entry into
the object, in one UPDATE as before.

Credentials (schema version 2) live in the same file. Their tables are ``consumers``, ``tokens``,
``basic_users`` (``users`` already holds the v2 user cache) and ``nonces``. Every check-then-write runs inside
the writer's ``BEGIN IMMEDIATE`` transaction, so processes sharing the file cannot both accept the same nonce.
Schema version 5 adds what the gateway keeps as an OAuth 1.0a provider: ``consumers.via_upstream_app``, a
token's mapping to an X token of the operator's app (``upstream_token``, ``upstream_secret``) or to a Basic
user (``upstream_user``), and ``request_tokens``, pending request tokens as one sealed record each, taken
(read and deleted) in one transaction so that each is used once. Schema version 6 adds ``pending``
(onboarding's short-lived records), and version 7 ``small_ids``, the map of ``[routes] small_ids``: an
AUTOINCREMENT key, so no small id is given twice, beside the v2 id it stands for (UNIQUE), never purged.

Retention: a message (with its deletions) learned longer than ``message_retention`` ago, or a user fetched
longer than ``user_max_age`` ago, is a miss at once, and its row is deleted by a purge that runs after the
first message or user write and then every ``purge_interval`` such writes, on the worker thread (it scans).
With an ``encryption_key`` the DM text in ``messages.record`` is a Fernet token, and so are the v2 tokens in
``basic_users.grant_record``; ``consumers.secret`` and ``tokens.secret`` then hold a sealed secret, a BLOB
(see codec.py). Password hashes are scrypt hashes either way.

The file is created readable and writable by its owner only (0600) before SQLite opens it, and SQLite gives
its ``-wal`` and ``-shm`` files the database file's mode; a file already open to others is warned about.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from gateway.auth.credentials import (
    BasicUser,
    Consumer,
    CredentialEntry,
    CredentialKind,
    OAuth2Grant,
    RequestToken,
    Token,
    credential_entries,
)
from gateway.config import StoreConfig
from gateway.ids import is_id
from gateway.model import DirectMessage, User
from gateway.store import codec
from gateway.store.base import Deletion, StoreError, StoreSize, latest

T = TypeVar("T")

log = logging.getLogger("gateway.store")

Op = Callable[[sqlite3.Connection], Any]
"""One write: run inside its batch's transaction, on the loop's connection or on the worker thread's."""

Outcome = tuple[bool, Any]
"""What one write in a batch did: (True, its result) or (False, the exception it raised)."""

SCHEMA_VERSION = 7

_DEFAULTS = StoreConfig()

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE messages (
               id TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deleted_at REAL,
               deleted_by TEXT
           )""",
        """CREATE TABLE users (
               id TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               fetched_at REAL NOT NULL
           )""",
    ),
    2: (
        """CREATE TABLE consumers (
               key TEXT PRIMARY KEY,
               secret TEXT NOT NULL
           )""",
        """CREATE TABLE tokens (
               token TEXT PRIMARY KEY,
               consumer_key TEXT NOT NULL REFERENCES consumers (key) ON DELETE CASCADE,
               secret TEXT NOT NULL
           )""",
        "CREATE INDEX tokens_by_consumer ON tokens (consumer_key)",
        """CREATE TABLE basic_users (
               username TEXT PRIMARY KEY,
               password_hash TEXT NOT NULL,
               grant_record TEXT NOT NULL
           )""",
        """CREATE TABLE nonces (
               scope TEXT NOT NULL,
               nonce TEXT NOT NULL,
               expires_at REAL NOT NULL,
               PRIMARY KEY (scope, nonce)
           ) WITHOUT ROWID""",
        "CREATE INDEX nonces_by_expiry ON nonces (expires_at)",
    ),
    3: (
        """CREATE TABLE messages_by_number (
               id INTEGER PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deleted_at REAL,
               deleted_by TEXT
           )""",
        # Only ids as gateway.ids takes them (no legacy call can name any other), each as its integer.
        """INSERT INTO messages_by_number (id, record, learned_at, deleted_at, deleted_by)
           SELECT CAST(id AS INTEGER), record, learned_at, deleted_at, deleted_by FROM messages
           WHERE id GLOB '[1-9]*' AND id NOT GLOB '*[^0-9]*'
             AND (length(id) < 19 OR (length(id) = 19 AND id <= '9223372036854775807'))""",
        "DROP TABLE messages",
        "ALTER TABLE messages_by_number RENAME TO messages",
    ),
    # A deletion per deleter: a JSON object of each deleter (its Principal.identity, "" for none known) and
    # when it deleted the message, in place of the one deleted_at and deleted_by. Each time is written with
    # the 17 significant digits that give the same number back.
    4: (
        """CREATE TABLE messages_with_deletions (
               id INTEGER PRIMARY KEY,
               record BLOB NOT NULL,
               learned_at REAL NOT NULL,
               deletions TEXT
           )""",
        """INSERT INTO messages_with_deletions (id, record, learned_at, deletions)
           SELECT id, record, learned_at, CASE WHEN deleted_at IS NOT NULL
               THEN json_object(coalesce(deleted_by, ''), json(printf('%!.17g', deleted_at))) END
           FROM messages""",
        "DROP TABLE messages",
        "ALTER TABLE messages_with_deletions RENAME TO messages",
    ),
    # The gateway as OAuth 1.0a provider: consumers that act through the operator's X app, tokens mapped to
    # an X token of that app (its secret sealed like the others) or to a Basic user, and pending request
    # tokens, each one sealed record.
    5: (
        "ALTER TABLE consumers ADD COLUMN via_upstream_app INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tokens ADD COLUMN upstream_token TEXT",
        "ALTER TABLE tokens ADD COLUMN upstream_secret BLOB",
        "ALTER TABLE tokens ADD COLUMN upstream_user TEXT",
        """CREATE TABLE request_tokens (
               token TEXT PRIMARY KEY,
               expires_at REAL NOT NULL,
               record BLOB NOT NULL
           )""",
    ),
    # Short-lived records: onboarding sessions and invites (sealed by their writer), each with its expiry.
    6: (
        """CREATE TABLE pending (
               key TEXT PRIMARY KEY,
               record BLOB NOT NULL,
               expires_at REAL NOT NULL
           )""",
        "CREATE INDEX pending_by_expiry ON pending (expires_at)",
    ),
    # Small ids ([routes] small_ids): AUTOINCREMENT, so a small id is never given twice, even after a row
    # was removed by hand. Never purged.
    7: (
        """CREATE TABLE small_ids (
               small INTEGER PRIMARY KEY AUTOINCREMENT,
               id TEXT NOT NULL UNIQUE
           )""",
    ),
}

_SELECT_SMALL_IDS = "SELECT id, small FROM small_ids WHERE id IN (SELECT value FROM json_each(?))"
_SELECT_V2_IDS = "SELECT small, id FROM small_ids WHERE small IN (SELECT value FROM json_each(?))"


class SQLiteStore:
    # Expired nonces are deleted on the first call and then every this many calls, so the table holds
    # about one replay window of traffic however long the gateway runs.
    nonce_purge_interval = 500
    # Expired messages and users are deleted with the first message or user write and then every this many.
    purge_interval = 500
    # At most this many queued writes share one transaction, so another process sharing the file never
    # waits long for the write lock.
    max_batch = 256
    # The loop's connection never checkpoints (a checkpoint syncs the disk); the worker thread does, after
    # this many batches committed on the loop, or sooner once they changed this many rows: a few large
    # batches (a bulk import, pages of learned messages) must not grow the log without bound, since every
    # page a reader looks for is first looked for among the log's frames. SQLite's own default is about a
    # thousand pages of log; ten thousand messages are about 850.
    checkpoint_interval = 100
    checkpoint_changes = 10_000
    # Users the loop keeps decoded between reads (see the module's docstring), at most.
    user_cache_size = 4096

    def __init__(
        self,
        path: str,
        *,
        message_retention: float = _DEFAULTS.message_retention,
        user_max_age: float = _DEFAULTS.user_max_age,
        encryption_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if message_retention <= 0 or user_max_age <= 0:
            raise ValueError("message_retention and user_max_age must be positive")
        self.path = path
        self.message_retention = message_retention
        self.user_max_age = user_max_age
        self._cipher = codec.cipher_for(encryption_key)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-gateway-sqlite")
        self._conn: sqlite3.Connection | None = None  # waits for locks; used on the worker thread only
        self._loop_db: sqlite3.Connection | None = None  # never waits; used on the event loop only
        self._closed = False
        self._nonce_calls = 0
        self._writes = 0
        self._queue: list[tuple[Op, asyncio.Future[Any], bool]] = []  # (write, its caller, whether it is a deletion)
        self._writing = False  # a batch is scheduled or being committed
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        self._loop_commits = 0  # batches committed on the loop since the last checkpoint was started
        self._loop_changes = 0  # the loop connection's total_changes when the last checkpoint was started
        self._checkpoint: asyncio.Future[Any] | None = None  # on the worker thread
        # Users read on the loop: id -> (fetched_at, user), valid for one data_version of the file.
        self._users: dict[str, tuple[float, User]] = {}
        self._users_version: int | None = None
        # Messages asked for with their users in this turn of the event loop, read together at its end.
        self._wanted: list[tuple[int, asyncio.Future[tuple[DirectMessage | None, dict[str, User]]]]] = []

    @classmethod
    async def open(cls, path: str, **options: Any) -> SQLiteStore:
        store = cls(path, **options)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _connect(self) -> None:
        shared = _is_file(self.path)
        if shared:
            _create_private(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")  # per connection; removing a consumer removes its tokens
            self._migrate(conn)
            # Only now: the loop must never see a file whose schema is still being migrated.
            loop_db = self._open_loop_connection() if shared else None
        except BaseException:
            conn.close()
            raise
        self._conn, self._loop_db = conn, loop_db

    def _open_loop_connection(self) -> sqlite3.Connection:
        """The event loop's connection: it fails at once rather than wait for a lock, and leaves checkpoints
        (which sync the disk) to the worker thread."""
        uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=rw"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=0")
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        (current,) = conn.execute("PRAGMA user_version").fetchone()
        if current > SCHEMA_VERSION:
            raise StoreError(f"sqlite schema version {current} is newer than this gateway's ({SCHEMA_VERSION})")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("sqlite store is closed")
        return self._conn

    # Reads -----------------------------------------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on the event loop's connection, which answers without a thread crossing; if it reports
        any SQLite error, ``read`` again on the worker thread, which waits out a lock and reports a failure
        that is real as ``StoreError``. Without a loop connection (closed, or ``:memory:``) the worker only."""
        loop_db = self._loop_db
        if loop_db is not None:
            try:
                return read(loop_db)
            except sqlite3.Error:
                pass
        return await self._run(lambda: read(self._db))

    async def get_message(self, message_id: str) -> DirectMessage | None:
        key = _key(message_id)
        if key is None:
            return None
        cutoff = self._clock() - self.message_retention

        def read(db: sqlite3.Connection) -> DirectMessage | None:
            row = db.execute(_SELECT_MESSAGE, (key, cutoff)).fetchone()
            return codec.read_message(codec.loads(row[0]), self._cipher) if row else None

        return await self._read(read)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        cutoff = self._clock() - self.user_max_age
        return await self._read(lambda db: self._read_users(db, ids, cutoff))

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        """The message and its users (every destroy's read). The calls made in one turn of the event loop are
        answered together at its end, by one read of all their messages and then of all their users: the
        first statement after the rest of a request's work finds SQLite's code and data cold and pays for it,
        the ones right after it far less (docs/PERFORMANCE.md). A fallback to the worker thread is then one
        trip for all of them."""
        key = _key(message_id)
        if key is None:
            return None, {}
        if self._closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[DirectMessage | None, dict[str, User]]] = loop.create_future()
        self._wanted.append((key, future))
        if len(self._wanted) == 1:
            loop.call_soon(self._read_wanted)
        return await future

    def _read_wanted(self) -> None:
        """Answer every caller of ``get_message_with_users`` still waiting: on the loop's connection, or if it
        reports any SQLite error, on the worker thread (as ``_read`` does)."""
        wanted, self._wanted = self._wanted, []
        callers = [(key, future) for key, future in wanted if not future.done()]
        if not callers:
            return
        keys = [key for key, _ in callers]
        now = self._clock()
        message_cutoff, user_cutoff = now - self.message_retention, now - self.user_max_age
        loop_db = self._loop_db
        if loop_db is not None:
            try:
                outcomes = self._messages_with_users(loop_db, keys, message_cutoff, user_cutoff)
            except sqlite3.Error:
                pass  # the worker reads them again: it waits out a lock, and reports a failure that is real
            except Exception as exc:  # noqa: BLE001 - whatever else went wrong is every waiting caller's answer
                _answer(callers, [(False, exc)] * len(callers))
                return
            else:
                _answer(callers, outcomes)
                return
        read = self._run(lambda: self._messages_with_users(self._db, keys, message_cutoff, user_cutoff))
        asyncio.ensure_future(read).add_done_callback(functools.partial(_answer_from, callers))

    def _messages_with_users(
        self, db: sqlite3.Connection, keys: list[int], message_cutoff: float, user_cutoff: float
    ) -> list[Outcome]:
        """For each key, (True, (message or None, its users)), or (False, the error) when its record cannot be
        read; a SQLite error is raised for all."""
        rows = [db.execute(_SELECT_MESSAGE, (key, message_cutoff)).fetchone() for key in keys]
        messages: list[Outcome] = []
        for row in rows:
            try:
                messages.append((True, codec.read_message(codec.loads(row[0]), self._cipher) if row else None))
            except Exception as exc:  # noqa: BLE001 - a record that cannot be read fails its own caller only
                messages.append((False, exc))
        ids = sorted({i for ok, m in messages if ok and m is not None for i in (m.sender_id, m.recipient_id)})
        users = self._read_users(db, ids, user_cutoff) if ids else {}
        answers: list[Outcome] = []
        for ok, message in messages:
            if not ok:
                answers.append((False, message))
            elif message is None:
                answers.append((True, (None, {})))
            else:
                pair = (message.sender_id, message.recipient_id)
                answers.append((True, (message, {i: users[i] for i in pair if i in users})))
        return answers

    def _read_users(self, db: sqlite3.Connection, ids: list[str], cutoff: float) -> dict[str, User]:
        """The users ``ids`` fetched after ``cutoff``; on the loop's connection, those it read before while
        the file's ``data_version`` is what it was then (no other connection committed since), and the
        rest from the file. (A PRAGMA statement of its own: reading ``pragma_data_version`` inside the
        message's SELECT saves two fcntl calls, but the pragma table prepares its statement on every run,
        and a destroy cost the gateway about 5 us more CPU with it.)"""
        if db is not self._loop_db:
            return {user.id: user for user, _ in _user_rows(db, ids, cutoff)}
        (version,) = db.execute("PRAGMA data_version").fetchone()
        kept = self._users
        if version != self._users_version:
            kept.clear()
            self._users_version = version
        found: dict[str, User] = {}
        missing: list[str] = []
        for user_id in ids:
            entry = kept.get(user_id)
            if entry is not None and entry[0] > cutoff:
                found[user_id] = entry[1]
            else:
                missing.append(user_id)
        if missing:
            rows = _user_rows(db, missing, cutoff)
            if len(kept) + len(rows) > self.user_cache_size:
                kept.clear()
            for user, fetched_at in rows:
                kept[user.id] = (fetched_at, user)
                found[user.id] = user
        return found

    async def get_deletions(self, message_id: str) -> tuple[Deletion, ...]:
        key = _key(message_id)
        if key is None:
            return ()
        cutoff = self._clock() - self.message_retention

        def read(db: sqlite3.Connection) -> tuple[Deletion, ...]:
            row = db.execute(_SELECT_DELETIONS, (key, cutoff)).fetchone()
            if row is None:
                return ()
            return tuple(sorted(_deletions(row[0]).values(), key=lambda deletion: deletion.at))

        return await self._read(read)

    async def get_deletion(self, message_id: str) -> Deletion | None:
        return latest(await self.get_deletions(message_id))

    # Writes ----------------------------------------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], T], *, deletion: bool = False) -> T:
        """Queue ``op`` for the next batch; return what it returned once the transaction holding it has
        committed, or raise what it raised (a SQLite error as ``StoreError``), its neighbours unaffected.
        A batch of nothing but ``deletion`` records leaves the users the loop keeps as they are."""
        if self._closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future, deletion))
        self._idle.clear()
        if not self._writing:
            self._writing = True
            loop.call_soon(self._send_batch)
        return await future

    def _send_batch(self) -> None:
        """Commit the queued writes as one transaction: on the loop's connection if it can begin one at
        once, else on the worker thread. A write whose caller is gone by now is dropped."""
        queued = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        batch = [(op, future) for op, future, _ in queued if not future.done()]
        if not batch:
            self._next_batch()
            return
        ops = [op for op, _ in batch]
        loop = asyncio.get_running_loop()
        if self._loop_db is not None:
            try:
                outcomes = _commit(self._loop_db, ops)
            except Exception:  # noqa: BLE001 - nothing committed: the worker tries again and reports what is real
                pass  # another process is writing, or worse: the worker waits for the lock, or reports it
            else:
                if not all(deletion for _, _, deletion in queued):
                    self._users.clear()  # only deletions leave users as they were
                _answer(batch, outcomes)
                loop.call_soon(self._next_batch)  # after what the loop has ready: a long queue never holds it
                self._committed_on_loop(self._loop_db)
                return
        try:
            done = loop.run_in_executor(self._executor, self._commit_on_worker, ops)
        except RuntimeError as exc:  # the executor was shut down under a close() that was cancelled
            self._settle(batch, exc)
            self._next_batch()
            return
        done.add_done_callback(functools.partial(self._batch_done, batch))

    def _batch_done(self, batch: list[tuple[Op, asyncio.Future[Any]]], done: asyncio.Future[list[Outcome]]) -> None:
        _answer_from(batch, done)
        self._next_batch()

    def _next_batch(self) -> None:
        if self._queue:
            self._send_batch()
            return
        self._writing = False
        self._idle.set()

    @staticmethod
    def _settle(batch: list[tuple[Op, asyncio.Future[Any]]], error: BaseException) -> None:
        """Fail every caller of a batch that did not commit."""
        for _, future in batch:
            if not future.done():
                future.set_exception(_store_error(error))

    def _commit_on_worker(self, ops: list[Op]) -> list[Outcome]:
        return _commit(self._db, ops)

    def _committed_on_loop(self, db: sqlite3.Connection) -> None:
        """Count a batch the loop committed; every ``checkpoint_interval`` of them, or once they changed
        ``checkpoint_changes`` rows, have the worker thread checkpoint the log (PASSIVE: it copies what no
        reader still needs and waits for nobody)."""
        self._loop_commits += 1
        if self._checkpoint is not None:
            return
        changes = db.total_changes
        if self._loop_commits < self.checkpoint_interval and changes - self._loop_changes < self.checkpoint_changes:
            return
        self._loop_commits, self._loop_changes = 0, changes
        try:
            self._checkpoint = asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint_log)
        except RuntimeError:  # the executor was shut down under a close() that was cancelled
            return
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_log(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _checkpoint_done(self, done: asyncio.Future[Any]) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            # Nothing is lost: the log keeps every commit until a later checkpoint copies it.
            log.warning("sqlite checkpoint failed: %s", done.exception())

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        now = self._clock()
        cutoff = now - self.message_retention
        rows = [
            {"id": key, "record": codec.dumps(codec.message_to_record(m, self._cipher)), "now": now, "cutoff": cutoff}
            for m in messages
            if (key := _key(m.id)) is not None
        ]
        if rows:
            purge = self._purge_due(now)
            await self._write(_writer(_UPSERT_MESSAGE, rows))
            await self._purge(purge)

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        rows = [(u.id, codec.dumps(codec.user_to_record(u)), now) for u in users]
        if rows:
            purge = self._purge_due(now)
            await self._write(_writer(_UPSERT_USER, rows))
            await self._purge(purge)

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        await self.mark_deleted_many([(message_id, by)])

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        now = self._clock()
        cutoff = now - self.message_retention
        # Only a message still within retention takes a deletion, as only such a message is found.
        rows = [
            (codec.dumps({by or "": now}).decode(), key, cutoff)
            for message_id, by in deletions
            if (key := _key(message_id)) is not None
        ]
        if rows:
            await self._write(_writer(_MARK_DELETED, rows), deletion=True)

    def _purge_due(self, now: float) -> tuple[float, float] | None:
        """The (message, user) cutoffs when this write should also purge expired rows, else None."""
        due = self._writes % self.purge_interval == 0
        self._writes += 1
        return (now - self.message_retention, now - self.user_max_age) if due else None

    async def _purge(self, cutoffs: tuple[float, float] | None) -> None:
        """Delete the rows older than the (message, user) ``cutoffs``, if given, on the worker thread: finding
        them scans the whole table, far too long to hold the event loop. The writer that was due waits for it,
        as it waited for its own write; a purge that fails is only logged (the rows stay misses, and the next
        purge takes them)."""
        if cutoffs is None:
            return
        messages_before, users_before = cutoffs

        def purge(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM messages WHERE learned_at <= ?", (messages_before,))
            db.execute("DELETE FROM users WHERE fetched_at <= ?", (users_before,))

        try:
            [(ok, error)] = await self._run(self._commit_on_worker, [purge])
        except StoreError as exc:
            ok, error = False, exc
        if not ok:
            log.warning("sqlite purge failed: %s", error)

    # Credentials -----------------------------------------------------------------------------------

    async def put_consumer(self, consumer: Consumer) -> None:
        # An upsert, not INSERT OR REPLACE: replacing the row would cascade and delete the consumer's tokens.
        secret = codec.seal(consumer.secret, self._cipher)
        await self._write(_writer(_UPSERT_CONSUMER, [(consumer.key, secret, int(consumer.via_upstream_app))]))

    async def get_consumer(self, key: str) -> Consumer | None:
        def read(db: sqlite3.Connection) -> Consumer | None:
            row = db.execute("SELECT key, secret, via_upstream_app FROM consumers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            secret = self._secret(row[1], f"consumer {key!r}")
            return Consumer(key=row[0], secret=secret, via_upstream_app=bool(row[2]))

        return await self._read(read)

    async def put_token(self, token: Token) -> None:
        secret = codec.seal(token.secret, self._cipher)
        upstream_secret = None if token.upstream_secret is None else codec.seal(token.upstream_secret, self._cipher)
        row = (token.token, token.consumer_key, secret, token.upstream_token, upstream_secret, token.upstream_user)

        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM consumers WHERE key = ?", (token.consumer_key,)).fetchone() is None:
                raise ValueError(f"no consumer {token.consumer_key!r}")
            db.execute(_UPSERT_TOKEN, row)

        await self._write(write)

    async def get_token(self, token: str) -> Token | None:
        def read(db: sqlite3.Connection) -> Token | None:
            row = db.execute(
                "SELECT token, consumer_key, secret, upstream_token, upstream_secret, upstream_user FROM tokens "
                "WHERE token = ?",
                (token,),
            ).fetchone()
            if row is None:
                return None
            return Token(
                token=row[0],
                consumer_key=row[1],
                secret=self._secret(row[2], f"token {token!r}"),
                upstream_token=row[3],
                upstream_secret=None if row[4] is None else self._secret(row[4], f"token {token!r}"),
                upstream_user=row[5],
            )

        return await self._read(read)

    async def put_request_token(self, token: RequestToken) -> None:
        row = (token.token, token.expires_at, codec.seal_request_token(token, self._cipher))
        now = self._clock()

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM request_tokens WHERE expires_at <= ?", (now,))
            db.execute("INSERT OR REPLACE INTO request_tokens (token, expires_at, record) VALUES (?, ?, ?)", row)

        await self._write(write)

    async def get_request_token(self, token: str) -> RequestToken | None:
        now = self._clock()

        def read(db: sqlite3.Connection) -> RequestToken | None:
            statement = "SELECT record FROM request_tokens WHERE token = ? AND expires_at > ?"
            row = db.execute(statement, (token, now)).fetchone()
            return None if row is None else self._request_token(row[0], token)

        return await self._read(read)

    async def take_request_token(self, token: str) -> RequestToken | None:
        now = self._clock()

        def take(db: sqlite3.Connection) -> str | bytes | None:
            # Read and deleted in one write transaction: of concurrent takers, only one finds the row.
            statement = "SELECT record FROM request_tokens WHERE token = ? AND expires_at > ?"
            row = db.execute(statement, (token, now)).fetchone()
            db.execute("DELETE FROM request_tokens WHERE token = ?", (token,))
            return None if row is None else row[0]

        record = await self._write(take)
        return None if record is None else self._request_token(record, token)

    def _request_token(self, stored: str | bytes, token: str) -> RequestToken:
        with codec.opened(f"sqlite: request token {token!r}"):
            return codec.unseal_request_token(stored, self._cipher)

    async def put_user(self, user: BasicUser) -> None:
        row = (user.username, user.password_hash, self._grant_text(user.grant))
        await self._write(_writer(_UPSERT_BASIC_USER, [row]))

    async def get_user(self, username: str) -> BasicUser | None:
        def read(db: sqlite3.Connection) -> BasicUser | None:
            row = db.execute(
                "SELECT username, password_hash, grant_record FROM basic_users WHERE username = ?", (username,)
            ).fetchone()
            if row is None:
                return None
            return BasicUser(username=row[0], password_hash=row[1], grant=self._grant(row[2], username))

        return await self._read(read)

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        statement = "UPDATE basic_users SET grant_record = ? WHERE username = ?"
        await self._write(_writer(statement, [(self._grant_text(grant), username)]))

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        table_and_column = _CREDENTIAL_TABLES.get(kind)
        if table_and_column is None:
            raise ValueError(f"unknown credential kind {kind!r}")
        table, column = table_and_column
        statement = f"DELETE FROM {table} WHERE {column} = ?"
        removed: int = await self._write(lambda db: db.execute(statement, (key,)).rowcount)
        return removed > 0

    async def list_credentials(self) -> list[CredentialEntry]:
        def read() -> list[CredentialEntry]:
            db = self._db
            db.execute("BEGIN")  # one snapshot for all three tables
            try:
                rows = db.execute("SELECT key, via_upstream_app FROM consumers")
                consumers = [(row[0], bool(row[1])) for row in rows]
                rows = db.execute("SELECT token, consumer_key, upstream_token, upstream_user FROM tokens")
                tokens = [(r[0], r[1], Token(r[0], r[1], "", r[2], None, r[3]).mapping) for r in rows]
                rows = db.execute("SELECT username, grant_record FROM basic_users")
                users = [(row[0], self._grant(row[1], row[0])) for row in rows]
            finally:
                db.execute("COMMIT")
            return credential_entries(consumers, tokens, users)

        return await self._run(read)

    def _secret(self, stored: str | bytes, what: str) -> str:
        """The secret a consumer's or token's row holds; one that cannot be read is a ``StoreError`` naming
        ``what`` (never the secret), not a missing credential."""
        with codec.opened(f"sqlite: the secret of {what}"):
            return codec.unseal(stored, self._cipher)

    def _grant_text(self, grant: OAuth2Grant) -> str:
        return codec.dumps(codec.grant_to_record(grant, self._cipher)).decode("utf-8")

    def _grant(self, text: str, username: str) -> OAuth2Grant:
        with codec.opened(f"sqlite: the upstream grant of user {username!r}"):
            return codec.grant_from_record(codec.loads(text), self._cipher)

    async def remember_nonce(self, scope: str, nonce: str, expires_at: float, *, now: float | None = None) -> bool:
        purge = self._nonce_calls % self.nonce_purge_interval == 0
        self._nonce_calls += 1
        if now is None:
            now = time.time()

        def write(db: sqlite3.Connection) -> bool:
            if purge:
                db.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
            # Inserted, or an expired row replaced: one row changed. A live row left alone: none, a replay.
            return db.execute(_REMEMBER_NONCE, (scope, nonce, expires_at, now)).rowcount == 1

        accepted: bool = await self._write(write)
        return accepted

    async def size(self) -> StoreSize:
        """Counts the rows within their retention on the worker thread (it scans both tables; the admin status
        page asks at most every half minute), never on the event loop."""
        now = self._clock()

        def count() -> StoreSize:
            db = self._db
            (messages,) = db.execute(
                "SELECT count(*) FROM messages WHERE learned_at > ?", (now - self.message_retention,)
            ).fetchone()
            (users,) = db.execute(
                "SELECT count(*) FROM users WHERE fetched_at > ?", (now - self.user_max_age,)
            ).fetchone()
            return StoreSize(messages=messages, users=users)

        return await self._run(count)

    async def put_pending(self, key: str, record: bytes, expires_at: float) -> None:
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pending WHERE expires_at <= ?", (now,))  # few rows: swept on each write
            db.execute(
                "INSERT OR REPLACE INTO pending (key, record, expires_at) VALUES (?, ?, ?)", (key, record, expires_at)
            )

        await self._write(write)

    async def get_pending(self, key: str) -> bytes | None:
        now = time.time()

        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT record FROM pending WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            return bytes(row[0]) if row else None

        return await self._read(read)

    async def take_pending(self, key: str) -> bytes | None:
        now = time.time()

        def write(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("DELETE FROM pending WHERE key = ? RETURNING record, expires_at", (key,)).fetchone()
            return bytes(row[0]) if row and row[1] > now else None

        taken: bytes | None = await self._write(write)
        return taken

    async def small_ids(self, ids: Sequence[str]) -> list[int]:
        ids = list(ids)
        wanted = codec.dumps(ids).decode()

        def read(db: sqlite3.Connection) -> dict[str, int]:
            return dict(db.execute(_SELECT_SMALL_IDS, (wanted,)).fetchall())

        known = await self._read(read)
        missing = [v2_id for v2_id in dict.fromkeys(ids) if v2_id not in known]
        if missing:

            def allocate(db: sqlite3.Connection) -> dict[str, int]:
                # In the order given; another process may have given some of them one meanwhile (IGNORE).
                db.executemany("INSERT OR IGNORE INTO small_ids (id) VALUES (?)", [(v2_id,) for v2_id in missing])
                return dict(db.execute(_SELECT_SMALL_IDS, (codec.dumps(missing).decode(),)).fetchall())

            known.update(await self._write(allocate))
        return [known[v2_id] for v2_id in ids]

    async def v2_ids(self, smalls: Iterable[int]) -> dict[int, str]:
        wanted = codec.dumps([small for small in smalls if 0 < small < 2**63]).decode()

        def read(db: sqlite3.Connection) -> dict[int, str]:
            return dict(db.execute(_SELECT_V2_IDS, (wanted,)).fetchall())

        return await self._read(read)

    async def ping(self) -> None:
        """A read of the schema page through the worker thread: fails if the file or the worker cannot
        answer, and the worker is what every write waits for."""

        def check() -> None:
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()

        await self._run(check)

    async def close(self) -> None:
        """Refuse new calls, let the writes already queued commit, then close both connections."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._idle.wait()
        finally:
            loop_db, self._loop_db = self._loop_db, None
            if loop_db is not None:
                loop_db.close()

            def close() -> None:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, close)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            finally:
                self._executor.shutdown(wait=True)


def _is_file(path: str) -> bool:
    """Whether ``path`` names a file that a second connection can open (not a private in-memory database)."""
    return path not in ("", ":memory:")


#: The files SQLite keeps beside a database, by the suffix of their names.
COMPANIONS = ("-wal", "-shm", "-journal")


def _create_private(path: str) -> None:
    """Create the database file at ``path``, if it is not there, with mode 0600 (whatever the umask, which
    can only take permissions away), so that SQLite, which gives its ``-wal``, ``-shm`` and ``-journal``
    files the mode of the database file, creates those 0600 too. Then warn about any of them already
    readable or writable by others. The directory must exist: a store is never created somewhere new."""
    directory = Path(path).parent
    if not directory.is_dir():
        raise StoreError(f"sqlite: the directory {str(directory)!r} of the store file does not exist")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"sqlite: cannot create {path!r}: {exc.strerror}") from None
    warn_if_open_to_others(path)


def check_file(path: str) -> None:
    """Raise ``StoreError`` if opening the store at ``path`` would fail, creating nothing: the file must open
    read-write as a SQLite database whose schema is not newer than this gateway's, or not exist yet in a
    directory where it can be created. Warns, as opening does, about files open to others."""
    if not _is_file(path):
        return
    directory = Path(path).parent
    if not directory.is_dir():
        raise StoreError(f"sqlite: the directory {str(directory)!r} of the store file does not exist")
    if not os.path.exists(path):
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(f"sqlite: cannot create {path!r}: its directory is not writable")
        return
    warn_if_open_to_others(path)
    try:
        db = sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode=rw", uri=True, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            (version,) = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite: {path}: {exc}") from None
    if version > SCHEMA_VERSION:
        raise StoreError(f"sqlite schema version {version} is newer than this gateway's ({SCHEMA_VERSION})")


def warn_if_open_to_others(path: str) -> None:
    """One warning for each of the store's files (the database and its companions) that others than its owner
    may read or write."""
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            log.warning("store file %s has mode %04o: others than its owner may read it; chmod 600 it", name, mode)


def _answer_from(callers: list[tuple[Any, asyncio.Future[Any]]], done: asyncio.Future[list[Outcome]]) -> None:
    """``_answer`` with what a batch run on the worker thread (writes or reads) gave, or its error for every
    caller."""
    error = StoreError("sqlite call on the worker cancelled") if done.cancelled() else done.exception()
    _answer(callers, [(False, error)] * len(callers) if error is not None else done.result())


def _answer(batch: list[tuple[Any, asyncio.Future[Any]]], outcomes: list[Outcome]) -> None:
    """Give each caller of a batch (writes committed, or reads done) what its part returned or raised."""
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(_store_error(value))


def _commit(db: sqlite3.Connection, ops: list[Op]) -> list[Outcome]:
    """Run ``ops`` in one write transaction: other connections see all of it or none of it. The ops run as
    they are; only if one raises is the transaction undone and run again with a savepoint per op, so that
    the one that raised is undone alone and its neighbours still commit (an op touches nothing but the
    database, so running it again after a ROLLBACK is safe). Raises only if a transaction could not be
    begun or committed, and then nothing of it is left."""
    if db.in_transaction:  # a ROLLBACK that failed along with the disk: start clean
        db.execute("ROLLBACK")
    db.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[Outcome] = []
        for op in ops:
            outcome = _outcome(op, db)
            if not outcome[0]:
                break
            outcomes.append(outcome)
        else:
            db.execute("COMMIT")
            return outcomes
        db.execute("ROLLBACK")
        if len(ops) == 1:
            return [outcome]
        db.execute("BEGIN IMMEDIATE")
        outcomes = [_in_savepoint(op, db) for op in ops]
        db.execute("COMMIT")
    except BaseException:
        _roll_back(db)
        raise
    return outcomes


def _user_rows(db: sqlite3.Connection, ids: list[str], cutoff: float) -> list[tuple[User, float]]:
    """The users ``ids`` fetched after ``cutoff``, each with when it was fetched."""
    marks = ",".join("?" * len(ids))
    statement = f"SELECT record, fetched_at FROM users WHERE id IN ({marks}) AND fetched_at > ?"
    return [(codec.user_from_record(codec.loads(row[0])), row[1]) for row in db.execute(statement, [*ids, cutoff])]


def _key(message_id: str) -> int | None:
    """A message's row key: its id as an integer; None for an id no kept message has (not one that
    ``gateway.ids`` takes)."""
    return int(message_id) if is_id(message_id) else None


def _writer(statement: str, rows: list[Any]) -> Op:
    """The write of ``rows`` with ``statement``."""

    def write(db: sqlite3.Connection) -> None:
        db.executemany(statement, rows)

    return write


def _outcome(op: Op, db: sqlite3.Connection) -> Outcome:
    try:
        return True, op(db)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
        return False, exc


def _in_savepoint(op: Op, db: sqlite3.Connection) -> Outcome:
    """``op`` within a savepoint of the batch's transaction: if it raises, what it wrote is undone, nothing else."""
    db.execute("SAVEPOINT write")
    outcome = _outcome(op, db)
    if not outcome[0]:
        db.execute("ROLLBACK TO write")
    db.execute("RELEASE write")
    return outcome


def _roll_back(db: sqlite3.Connection) -> None:
    """Undo the open transaction. If SQLite already did (it does after some I/O errors) or the disk refuses,
    the error that got us here is the one worth reporting, and the next batch starts with a ROLLBACK."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


def _store_error(error: BaseException) -> BaseException:
    """What a caller sees for ``error``: SQLite errors and a closed store as ``StoreError``, others as raised
    (a token for an unknown consumer is a ``ValueError``)."""
    if isinstance(error, sqlite3.Error):
        wrapped = StoreError(f"sqlite: {error}")
        wrapped.__cause__ = error
        return wrapped
    if isinstance(error, StoreError):
        return StoreError(*error.args)
    return error


_SELECT_MESSAGE = "SELECT record FROM messages WHERE id = ? AND learned_at > ?"
_SELECT_DELETIONS = "SELECT deletions FROM messages WHERE id = ? AND learned_at > ?"


# Learning a message again refreshes its data but never clears a recorded deletion, unless the old row was
# already past retention (only not yet purged): that message, deletion and all, was forgotten.
_UPSERT_MESSAGE = """
INSERT INTO messages (id, record, learned_at) VALUES (:id, :record, :now)
ON CONFLICT(id) DO UPDATE SET
    record = excluded.record,
    learned_at = excluded.learned_at,
    deletions = CASE WHEN messages.learned_at > :cutoff THEN messages.deletions END
"""
_UPSERT_USER = """
INSERT INTO users (id, record, fetched_at) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET record = excluded.record, fetched_at = excluded.fetched_at
"""
# Adds (or renews) one deleter's entry in the message's JSON object of deletions, the others' left as they are.
_MARK_DELETED = """
UPDATE messages SET deletions = json_patch(coalesce(deletions, '{}'), ?) WHERE id = ? AND learned_at > ?
"""

_UPSERT_CONSUMER = """
INSERT INTO consumers (key, secret, via_upstream_app) VALUES (?, ?, ?)
ON CONFLICT(key) DO UPDATE SET secret = excluded.secret, via_upstream_app = excluded.via_upstream_app
"""
_UPSERT_TOKEN = """
INSERT INTO tokens (token, consumer_key, secret, upstream_token, upstream_secret, upstream_user)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(token) DO UPDATE SET consumer_key = excluded.consumer_key, secret = excluded.secret,
    upstream_token = excluded.upstream_token, upstream_secret = excluded.upstream_secret,
    upstream_user = excluded.upstream_user
"""
_UPSERT_BASIC_USER = """
INSERT INTO basic_users (username, password_hash, grant_record) VALUES (?, ?, ?)
ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, grant_record = excluded.grant_record
"""
_REMEMBER_NONCE = """
INSERT INTO nonces (scope, nonce, expires_at) VALUES (?, ?, ?)
ON CONFLICT(scope, nonce) DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at <= ?
"""
_CREDENTIAL_TABLES: dict[str, tuple[str, str]] = {
    "consumer": ("consumers", "key"),
    "token": ("tokens", "token"),
    "user": ("basic_users", "username"),
}


def _deletions(text: str | None) -> dict[str | None, Deletion]:
    """A message's deletions column (a JSON object of each deleter, "" for none known, and when it deleted the
    message), by deleter."""
    if not text:
        return {}
    try:
        return {by or None: Deletion(at=float(at), by=by or None) for by, at in codec.loads(text).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"sqlite: unreadable deletions ({exc.__class__.__name__})") from None
