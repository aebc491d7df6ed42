"""The embedded default store: one SQLite file in WAL mode, versioned schema, survives restarts.

SQLite calls block, and handing each one to another thread costs more CPU than the call itself, so the store
splits them by what they need:

- Point reads (a message with its users, users, a deletion, a consumer, a token, a Basic user) run on the event
  loop, on a connection of their own opened read-only with ``busy_timeout`` 0. In WAL mode a reader never
  waits for a writer: it reads the last committed state, from pages the OS normally has cached. If that
  connection reports anything at all (busy during a recovery, a file that stopped answering), the same read
  is asked of the worker thread, which waits out a lock and turns a real failure into ``StoreError``.
- Writes are queued. One worker thread owns the read-write connection and runs every write queued so far in
  one ``BEGIN IMMEDIATE`` transaction, each write in a savepoint of its own, so one that raises is undone
  alone and its neighbours still commit. A caller is answered only after that COMMIT, so an acknowledged
  write survives kill -9, and a burst of writes costs one thread crossing instead of one each.
- Everything else (listing credentials, ``ping``) runs on the worker thread, as does every read of a
  ``:memory:`` database, which a second connection could not see.

Credentials (schema version 2) live in the same file. Their tables are ``consumers``, ``tokens``,
``basic_users`` (``users`` already holds the v2 user cache) and ``nonces``. Every check-then-write runs inside
the writer's ``BEGIN IMMEDIATE`` transaction, so processes sharing the file cannot both accept the same nonce.

Retention: a message (with its deletion) learned longer than ``message_retention`` ago, or a user fetched
longer than ``user_max_age`` ago, is a miss at once, and its row is deleted by a purge that runs with the
first message or user write and then every ``purge_interval`` such writes. With an ``encryption_key`` the DM
text in ``messages.record`` is a Fernet token (see codec.py).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable
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
    Token,
    credential_entries,
)
from gateway.config import StoreConfig
from gateway.model import DirectMessage, User
from gateway.store import codec
from gateway.store.base import Deletion, StoreError

T = TypeVar("T")

Op = Callable[[sqlite3.Connection], Any]
"""One write: run on the worker thread, inside the batch's transaction, with the read-write connection."""

Outcome = tuple[bool, Any]
"""What one write in a batch did: (True, its result) or (False, the exception it raised)."""

SCHEMA_VERSION = 2

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
}


class SQLiteStore:
    # Expired nonces are deleted on the first call and then every this many calls, so the table holds
    # about one replay window of traffic however long the gateway runs.
    nonce_purge_interval = 500
    # Expired messages and users are deleted with the first message or user write and then every this many.
    purge_interval = 500
    # At most this many queued writes share one transaction, so another process sharing the file never
    # waits long for the write lock.
    max_batch = 256
    # A deletion record waits up to this long (seconds) for other writes to share its transaction: nobody
    # answering a client waits for one (the service records a deletion after answering), and a commit costs
    # far more than one more row in it. Any other write sends the batch at once, deletions included.
    deletion_linger = 0.02

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
        self._conn: sqlite3.Connection | None = None  # read-write; used on the worker thread only
        self._reader: sqlite3.Connection | None = None  # read-only; used on the event loop only
        self._closed = False
        self._nonce_calls = 0
        self._writes = 0
        self._queue: list[tuple[Op, asyncio.Future[Any], bool]] = []  # (write, its caller, whether it lingers)
        self._writing = False  # a batch is scheduled or on the worker thread
        self._linger: asyncio.TimerHandle | None = None  # sends lingering writes when nothing else has
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        # Deletions queued or being written, so this process reads them at once (keyed by message id).
        self._pending_deletions: dict[str, Deletion] = {}

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
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")  # per connection; removing a consumer removes its tokens
            self._migrate(conn)
            # Only now: the reader must never see a file whose schema is still being migrated.
            reader = self._open_reader() if shared else None
        except BaseException:
            conn.close()
            raise
        self._conn, self._reader = conn, reader

    def _open_reader(self) -> sqlite3.Connection:
        """The event loop's connection: read-only twice over, and failing at once rather than waiting on a lock."""
        uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
        reader = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("PRAGMA query_only=ON")
            reader.execute("PRAGMA busy_timeout=0")
        except BaseException:
            reader.close()
            raise
        return reader

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
        reader = self._reader
        if reader is not None:
            try:
                return read(reader)
            except sqlite3.Error:
                pass
        return await self._run(lambda: read(self._db))

    async def get_message(self, message_id: str) -> DirectMessage | None:
        cutoff = self._clock() - self.message_retention

        def read(db: sqlite3.Connection) -> DirectMessage | None:
            row = db.execute(_SELECT_MESSAGE, (message_id, cutoff)).fetchone()
            return codec.read_message(codec.loads(row[0]), self._cipher) if row else None

        return await self._read(read)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        cutoff = self._clock() - self.user_max_age
        return await self._read(lambda db: _read_users(db, ids, cutoff))

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        """Both reads at once, so that a fallback to the worker thread is one trip rather than two."""
        now = self._clock()
        message_cutoff, user_cutoff = now - self.message_retention, now - self.user_max_age

        def read(db: sqlite3.Connection) -> tuple[DirectMessage | None, dict[str, User]]:
            row = db.execute(_SELECT_MESSAGE, (message_id, message_cutoff)).fetchone()
            if row is None:
                return None, {}
            message = codec.read_message(codec.loads(row[0]), self._cipher)
            if message is None:
                return None, {}
            return message, _read_users(db, sorted({message.sender_id, message.recipient_id}), user_cutoff)

        return await self._read(read)

    async def get_deletion(self, message_id: str) -> Deletion | None:
        cutoff = self._clock() - self.message_retention
        pending = self._pending_deletions.get(message_id)

        def read(db: sqlite3.Connection) -> Deletion | None:
            if pending is not None:  # not committed yet: it holds if its message is there to take it
                found = db.execute("SELECT 1 FROM messages WHERE id = ? AND learned_at > ?", (message_id, cutoff))
                return pending if found.fetchone() else None
            row = db.execute(
                "SELECT deleted_at, deleted_by FROM messages"
                " WHERE id = ? AND deleted_at IS NOT NULL AND learned_at > ?",
                (message_id, cutoff),
            ).fetchone()
            return Deletion(at=row[0], by=row[1]) if row else None

        return await self._read(read)

    # Writes ----------------------------------------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], T], *, lingers: bool = False) -> T:
        """Queue ``op`` for the worker thread; return what it returned once the transaction holding it has
        committed, or raise what it raised (a SQLite error as ``StoreError``), its neighbours unaffected.
        A write that ``lingers`` waits up to ``deletion_linger`` for company, unless another write or the
        end of a batch sends it first."""
        if self._closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future, lingers))
        self._idle.clear()
        if not lingers:
            self._send_soon()
        elif not self._writing and self._linger is None:
            self._wait_for_company()
        return await future

    def _wait_for_company(self) -> None:
        self._linger = asyncio.get_running_loop().call_later(self.deletion_linger, self._send_soon)

    def _send_soon(self) -> None:
        """Send a batch once the loop has run every task ready now, so writes made together share it."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().call_soon(self._send_batch)

    def _send_batch(self) -> None:
        """Hand the queued writes to the worker thread as one transaction; a write whose caller is gone by
        now is dropped, as one still waiting in an executor's queue would be."""
        batch = [(op, future) for op, future, _ in self._queue[: self.max_batch] if not future.done()]
        del self._queue[: self.max_batch]
        if not batch:
            self._next_batch()
            return
        try:
            done = asyncio.get_running_loop().run_in_executor(self._executor, self._commit, [op for op, _ in batch])
        except RuntimeError as exc:  # the executor was shut down under a close() that was cancelled
            self._settle(batch, exc)
            self._next_batch()
            return
        done.add_done_callback(functools.partial(self._batch_done, batch))

    def _batch_done(self, batch: list[tuple[Op, asyncio.Future[Any]]], done: asyncio.Future[list[Outcome]]) -> None:
        error = done.exception()
        if error is not None:
            self._settle(batch, error)
        else:
            for (_, future), (ok, value) in zip(batch, done.result(), strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(_store_error(value))
        self._next_batch()

    def _next_batch(self) -> None:
        queue = self._queue
        if queue and (self._closed or len(queue) >= self.max_batch or not all(lingers for _, _, lingers in queue)):
            self._send_batch()
            return
        self._writing = False
        if self._queue:  # only lingering writes came in meanwhile: they get their own wait
            self._wait_for_company()
        else:
            self._idle.set()

    @staticmethod
    def _settle(batch: list[tuple[Op, asyncio.Future[Any]]], error: BaseException) -> None:
        """Fail every caller of a batch that did not commit."""
        for _, future in batch:
            if not future.done():
                future.set_exception(_store_error(error))

    def _commit(self, ops: list[Op]) -> list[Outcome]:
        """Run ``ops`` in one write transaction, on the worker thread: other connections see all of it or
        none of it. Several ops each get a savepoint, so one that raises is undone alone."""
        db = self._db
        if db.in_transaction:  # a ROLLBACK that failed along with the disk: start clean
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(ops) == 1:
                outcomes = [_outcome(ops[0], db)]
                if not outcomes[0][0]:
                    db.execute("ROLLBACK")
                    return outcomes
            else:
                outcomes = [_in_savepoint(op, db) for op in ops]
            db.execute("COMMIT")
        except BaseException:
            _roll_back(db)
            raise
        return outcomes

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        now = self._clock()
        cutoff = now - self.message_retention
        rows = [
            {"id": m.id, "record": codec.dumps(codec.message_to_record(m, self._cipher)), "now": now, "cutoff": cutoff}
            for m in messages
        ]
        if rows:
            await self._write(_writer(_UPSERT_MESSAGE, rows, self._purge_due(now)))

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        rows = [(u.id, codec.dumps(codec.user_to_record(u)), now) for u in users]
        if rows:
            await self._write(_writer(_UPSERT_USER, rows, self._purge_due(now)))

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        """Lingers (``deletion_linger``) for company in its transaction; this process reads the deletion at
        once, other processes sharing the file once it has committed."""
        now = self._clock()
        deletion = self._pending_deletions[message_id] = Deletion(at=now, by=by)
        try:
            # Only a message still within retention takes a deletion, as only such a message is found.
            write = _writer(_MARK_DELETED, [(now, by, message_id, now - self.message_retention)])
            await self._write(write, lingers=True)
        finally:
            if self._pending_deletions.get(message_id) is deletion:
                del self._pending_deletions[message_id]

    def _purge_due(self, now: float) -> tuple[float, float] | None:
        """The (message, user) cutoffs when this write should also purge expired rows, else None."""
        due = self._writes % self.purge_interval == 0
        self._writes += 1
        return (now - self.message_retention, now - self.user_max_age) if due else None

    # Credentials -----------------------------------------------------------------------------------

    async def put_consumer(self, consumer: Consumer) -> None:
        # An upsert, not INSERT OR REPLACE: replacing the row would cascade and delete the consumer's tokens.
        await self._write(_writer(_UPSERT_CONSUMER, [(consumer.key, consumer.secret)]))

    async def get_consumer(self, key: str) -> Consumer | None:
        def read(db: sqlite3.Connection) -> Consumer | None:
            row = db.execute("SELECT key, secret FROM consumers WHERE key = ?", (key,)).fetchone()
            return Consumer(key=row[0], secret=row[1]) if row else None

        return await self._read(read)

    async def put_token(self, token: Token) -> None:
        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM consumers WHERE key = ?", (token.consumer_key,)).fetchone() is None:
                raise ValueError(f"no consumer {token.consumer_key!r}")
            db.execute(_UPSERT_TOKEN, (token.token, token.consumer_key, token.secret))

        await self._write(write)

    async def get_token(self, token: str) -> Token | None:
        def read(db: sqlite3.Connection) -> Token | None:
            row = db.execute("SELECT token, consumer_key, secret FROM tokens WHERE token = ?", (token,)).fetchone()
            return Token(token=row[0], consumer_key=row[1], secret=row[2]) if row else None

        return await self._read(read)

    async def put_user(self, user: BasicUser) -> None:
        row = (user.username, user.password_hash, _grant_text(user.grant))
        await self._write(_writer(_UPSERT_BASIC_USER, [row]))

    async def get_user(self, username: str) -> BasicUser | None:
        def read(db: sqlite3.Connection) -> BasicUser | None:
            row = db.execute(
                "SELECT username, password_hash, grant_record FROM basic_users WHERE username = ?", (username,)
            ).fetchone()
            if row is None:
                return None
            return BasicUser(username=row[0], password_hash=row[1], grant=_grant(row[2]))

        return await self._read(read)

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        statement = "UPDATE basic_users SET grant_record = ? WHERE username = ?"
        await self._write(_writer(statement, [(_grant_text(grant), username)]))

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
                consumers = [row[0] for row in db.execute("SELECT key FROM consumers")]
                tokens = [(row[0], row[1]) for row in db.execute("SELECT token, consumer_key FROM tokens")]
                rows = db.execute("SELECT username, grant_record FROM basic_users")
                users = [(row[0], _grant(row[1])) for row in rows]
            finally:
                db.execute("COMMIT")
            return credential_entries(consumers, tokens, users)

        return await self._run(read)

    async def remember_nonce(self, scope: str, nonce: str, expires_at: float) -> bool:
        purge = self._nonce_calls % self.nonce_purge_interval == 0
        self._nonce_calls += 1
        now = time.time()

        def write(db: sqlite3.Connection) -> bool:
            if purge:
                db.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
            # Inserted, or an expired row replaced: one row changed. A live row left alone: none, a replay.
            return db.execute(_REMEMBER_NONCE, (scope, nonce, expires_at, now)).rowcount == 1

        accepted: bool = await self._write(write)
        return accepted

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
        if self._queue:
            self._send_soon()  # lingering writes go now
        try:
            await self._idle.wait()
        finally:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()

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


def _read_users(db: sqlite3.Connection, ids: list[str], cutoff: float) -> dict[str, User]:
    marks = ",".join("?" * len(ids))
    statement = f"SELECT record FROM users WHERE id IN ({marks}) AND fetched_at > ?"
    users = [_user(row[0]) for row in db.execute(statement, [*ids, cutoff])]
    return {user.id: user for user in users}


@functools.lru_cache(maxsize=4096)
def _user(record: bytes) -> User:
    """The user a stored record holds. The same few users come with most messages, and decoding one costs
    more than reading its row; a ``User`` is immutable, so equal records can share one."""
    return codec.user_from_record(codec.loads(record))


def _writer(statement: str, rows: list[Any], purge: tuple[float, float] | None = None) -> Op:
    """The write of ``rows`` with ``statement``, after purging rows older than the ``purge`` cutoffs if given."""

    def write(db: sqlite3.Connection) -> None:
        if purge is not None:
            db.execute("DELETE FROM messages WHERE learned_at <= ?", (purge[0],))
            db.execute("DELETE FROM users WHERE fetched_at <= ?", (purge[1],))
        db.executemany(statement, rows)

    return write


def _outcome(op: Op, db: sqlite3.Connection) -> Outcome:
    try:
        return True, op(db)
    except Exception as exc:
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
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


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


# Learning a message again refreshes its data but never clears a recorded deletion, unless the old row was
# already past retention (only not yet purged): that message, deletion and all, was forgotten.
_UPSERT_MESSAGE = """
INSERT INTO messages (id, record, learned_at) VALUES (:id, :record, :now)
ON CONFLICT(id) DO UPDATE SET
    record = excluded.record,
    learned_at = excluded.learned_at,
    deleted_at = CASE WHEN messages.learned_at > :cutoff THEN messages.deleted_at END,
    deleted_by = CASE WHEN messages.learned_at > :cutoff THEN messages.deleted_by END
"""
_UPSERT_USER = """
INSERT INTO users (id, record, fetched_at) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET record = excluded.record, fetched_at = excluded.fetched_at
"""
_MARK_DELETED = "UPDATE messages SET deleted_at = ?, deleted_by = ? WHERE id = ? AND learned_at > ?"

_UPSERT_CONSUMER = """
INSERT INTO consumers (key, secret) VALUES (?, ?)
ON CONFLICT(key) DO UPDATE SET secret = excluded.secret
"""
_UPSERT_TOKEN = """
INSERT INTO tokens (token, consumer_key, secret) VALUES (?, ?, ?)
ON CONFLICT(token) DO UPDATE SET consumer_key = excluded.consumer_key, secret = excluded.secret
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


def _grant_text(grant: OAuth2Grant) -> str:
    return codec.dumps(codec.grant_to_record(grant)).decode("utf-8")


def _grant(text: str) -> OAuth2Grant:
    return codec.grant_from_record(codec.loads(text))
