"""The SQLite store: one file in WAL mode, shared by the processes of one host, surviving restarts.

Guarantees:

- Reads run on the event loop's connection, which never waits: a WAL reader sees the last commit of any
  process sharing the file, without a thread crossing. A read that connection cannot answer (any SQLite
  error) is read again on the worker thread, which waits out a lock and reports a real failure as
  ``StoreError``.
- The messages asked for with their users in one turn of the event loop are read together at its end.
- Users, consumers and tokens read on the loop are kept while the file's ``data_version`` stands (no other
  connection committed), read once a turn of the event loop: a user until the loop's own commit writes it
  again, consumers and tokens until the loop's own commit writes or removes any of them. A read never answers
  an older record than the last committed before its turn began, and an OAuth 1.0a request's two credential
  reads cost nothing but lookups once another read in the turn has checked the version.
- Writes go through the writer (``writer.py``): committed in batches, each caller answered after its commit.
- Every check-then-write (a nonce spent, a request token or pending record taken, a small id given) is one
  write in one transaction, under SQLite's write lock, so processes sharing the file agree.
- A message's row is keyed by its id as an integer (``gateway.ids``); a message whose id is not one (which
  v2 never sends) is not kept. Its deletions are a JSON object in its row, one entry per deleter.
- Retention: a message (with its deletions) learned longer than ``message_retention`` ago, or a user fetched
  longer than ``user_max_age`` ago, is a miss at once; a purge deletes such rows after the first message or
  user write and then every ``purge_interval`` of them, on the worker thread (it scans), and the write that
  was due waits for it.
- With an ``encryption_key``, DM text, every credential secret and grants are sealed (see ``codec``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

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
from gateway.store.base import Deletion, Outcome, StoreError, StoreSize, TurnBatch, latest
from gateway.store.sqlite import schema
from gateway.store.sqlite.worker import Worker
from gateway.store.sqlite.writer import Op, Writer, answer, answer_from, commit

T = TypeVar("T")
C = TypeVar("C", Consumer, Token)

log = logging.getLogger("gateway.store")

_DEFAULTS = StoreConfig()

_SELECT_SMALL_IDS = "SELECT id, small FROM small_ids WHERE id IN (SELECT value FROM json_each(?))"
_SELECT_V2_IDS = "SELECT small, id FROM small_ids WHERE small IN (SELECT value FROM json_each(?))"


class SQLiteStore:
    # Expired nonces are deleted on the first call and then every this many calls, so the table holds
    # about one replay window of traffic however long the gateway runs.
    nonce_purge_interval = 500
    # Expired messages and users are deleted with the first message or user write and then every this many.
    purge_interval = 500
    # Users, and consumers and tokens, the loop keeps decoded between reads, at most.
    user_cache_size = 4096
    credential_cache_size = 4096

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
        self._worker = Worker()  # waits for locks
        self._loop_db: sqlite3.Connection | None = None  # never waits; used on the event loop only
        self._writer = Writer(None, self._worker)
        self._closed = False
        # Read on the loop and valid for one data_version of the file: users, id -> (fetched_at, user), and
        # consumers by key and tokens by token.
        self._users: dict[str, tuple[float, User]] = {}
        self._consumers: dict[str, Consumer] = {}
        self._tokens: dict[str, Token] = {}
        self._kept_version: int | None = None
        # The loop whose current turn has read the version (a loop that stopped before its next turn cannot
        # leave the version unread for another).
        self._version_read_on: asyncio.AbstractEventLoop | None = None
        # Messages asked for with their users in one turn of the event loop, read together at its end.
        self._wanted: TurnBatch[int, tuple[DirectMessage | None, dict[str, User]]] = TurnBatch(self._read_wanted)
        self._nonce_calls = 0
        # Until then a nonce spent before schema version 8 (kept under NO_TIMESTAMP) may still live, and each
        # new nonce is checked against those as well. Read once, when the store opens: since then only a call
        # without a timestamp writes under NO_TIMESTAMP, and such a nonce is refused again only without one.
        self._untimed_until = 0.0
        self._writes = 0

    @classmethod
    async def open(cls, path: str, **options: Any) -> SQLiteStore:
        """Open (creating and migrating) the store file at ``path``, or a private ``:memory:`` database."""
        store = cls(path, **options)
        try:
            store._worker.db, store._loop_db = await store._worker.call(lambda: schema.open_connections(path))
        except BaseException:
            store._worker.abandon()
            raise
        store._writer.db = store._loop_db
        try:
            store._untimed_until = await store._worker.run(_untimed_until)
        except BaseException:
            await store.close()
            raise
        return store

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
        return await self._worker.run(read)

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
        answered together at its end, by one read of all their messages and then of all their users, which
        costs less than reading each apart (docs/PERFORMANCE.md); a fallback to the worker thread is then one
        trip for all of them. A record that cannot be read fails its own caller only."""
        key = _key(message_id)
        if key is None:
            return None, {}
        if self._closed:
            raise StoreError("sqlite store is closed")
        return await self._wanted.ask(key)

    def _read_wanted(
        self, callers: list[tuple[int, asyncio.Future[tuple[DirectMessage | None, dict[str, User]]]]]
    ) -> None:
        """Answer the callers of ``get_message_with_users`` still waiting: on the loop's connection, or if it
        reports any SQLite error, on the worker thread (as ``_read`` does)."""
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
                answer(callers, [(False, exc)] * len(callers))
                return
            else:
                answer(callers, outcomes)
                return
        read = self._worker.run(lambda db: self._messages_with_users(db, keys, message_cutoff, user_cutoff))
        asyncio.ensure_future(read).add_done_callback(functools.partial(answer_from, callers))

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
        """The users ``ids`` fetched after ``cutoff``. On the loop's connection, those it kept from an earlier
        read while the file's ``data_version`` is what it was then (no other connection committed since, and
        the loop's own commits forget the users they write), and the rest from the file."""
        if not self._keeping(db):
            return {user.id: user for user, _ in _user_rows(db, ids, cutoff)}
        kept = self._users
        found: dict[str, User] = {}
        missing: list[str] = []
        for user_id in ids:
            entry = kept.get(user_id)
            if entry is not None and entry[0] > cutoff:
                found[user_id] = entry[1]
            else:
                missing.append(user_id)
        if missing:
            for user_id in missing:  # an expired copy is no use: the file has a newer one or none
                kept.pop(user_id, None)
            rows = _user_rows(db, missing, cutoff)
            if len(kept) + len(rows) > self.user_cache_size:
                kept.clear()
            for user, fetched_at in rows:
                kept[user.id] = (fetched_at, user)
                found[user.id] = user
        return found

    def _keeping(self, db: sqlite3.Connection) -> bool:
        """Whether what is read on ``db`` may be kept: only on the loop's connection. What it kept is
        forgotten first if another connection has committed since it was read (the file's ``data_version``
        moved on). The version is read once a turn of the event loop: every request served in a turn had
        arrived before the turn began, so the file as it was then is what each of them may be answered from."""
        if db is not self._loop_db:
            return False
        loop = asyncio.get_running_loop()
        if self._version_read_on is loop:
            return True
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version != self._kept_version:
            self._users.clear()
            self._forget_credentials()
            self._kept_version = version
        self._version_read_on = loop
        loop.call_soon(self._read_version_again)
        return True

    def _read_version_again(self) -> None:
        self._version_read_on = None

    def _kept_credential(
        self, db: sqlite3.Connection, kept: dict[str, C], key: str, read: Callable[[], C | None]
    ) -> C | None:
        """The consumer or token ``key``: ``kept`` from an earlier read on the loop's connection, or ``read``
        (and kept there, when there is one)."""
        keeping = self._keeping(db)
        record = kept.get(key) if keeping else None
        if record is None:
            record = read()
            if keeping and record is not None:
                if len(kept) >= self.credential_cache_size:
                    kept.clear()
                kept[key] = record
        return record

    def _forget_credentials(self) -> None:
        """Drop every kept consumer and token: another connection committed, or the loop's own commit wrote
        or removed one (removing a consumer removes its tokens)."""
        self._consumers.clear()
        self._tokens.clear()

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
            await self._writer.write(_writer(_UPSERT_MESSAGE, rows))
            await self._purge(purge)

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        rows = [(u.id, codec.dumps(codec.user_to_record(u)), now) for u in users]
        if rows:
            purge = self._purge_due(now)
            written = functools.partial(self._forget_users, [row[0] for row in rows])
            await self._writer.write(_writer(_UPSERT_USER, rows), on_commit=written)
            await self._purge(purge)

    def _forget_users(self, user_ids: list[str]) -> None:
        """Drop the kept copies of users just written: the next read takes them from the file."""
        for user_id in user_ids:
            self._users.pop(user_id, None)

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
            await self._writer.write(_writer(_MARK_DELETED, rows))

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
            [(ok, error)] = await self._worker.run(lambda db: commit(db, [purge]))
        except StoreError as exc:
            ok, error = False, exc
        if not ok:
            log.warning("sqlite purge failed: %s", error)

    # Credentials -----------------------------------------------------------------------------------

    async def put_consumer(self, consumer: Consumer) -> None:
        # An upsert, not INSERT OR REPLACE: replacing the row would cascade and delete the consumer's tokens.
        secret = codec.seal(consumer.secret, self._cipher)
        row = (consumer.key, secret, int(consumer.via_upstream_app))
        await self._writer.write(_writer(_UPSERT_CONSUMER, [row]), on_commit=self._forget_credentials)

    async def get_consumer(self, key: str) -> Consumer | None:
        def read(db: sqlite3.Connection) -> Consumer | None:
            return self._kept_credential(db, self._consumers, key, lambda: self._read_consumer(db, key))

        return await self._read(read)

    def _read_consumer(self, db: sqlite3.Connection, key: str) -> Consumer | None:
        row = db.execute("SELECT key, secret, via_upstream_app FROM consumers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        secret = self._secret(row[1], f"consumer {key!r}")
        return Consumer(key=row[0], secret=secret, via_upstream_app=bool(row[2]))

    async def put_token(self, token: Token) -> None:
        secret = codec.seal(token.secret, self._cipher)
        upstream_secret = None if token.upstream_secret is None else codec.seal(token.upstream_secret, self._cipher)
        row = (token.token, token.consumer_key, secret, token.upstream_token, upstream_secret, token.upstream_user)

        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM consumers WHERE key = ?", (token.consumer_key,)).fetchone() is None:
                raise ValueError(f"no consumer {token.consumer_key!r}")
            db.execute(_UPSERT_TOKEN, row)

        await self._writer.write(write, on_commit=self._forget_credentials)

    async def get_token(self, token: str) -> Token | None:
        def read(db: sqlite3.Connection) -> Token | None:
            return self._kept_credential(db, self._tokens, token, lambda: self._read_token(db, token))

        return await self._read(read)

    def _read_token(self, db: sqlite3.Connection, token: str) -> Token | None:
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

    async def put_request_token(self, token: RequestToken) -> None:
        row = (token.token, token.expires_at, codec.seal_request_token(token, self._cipher))
        now = self._clock()

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM request_tokens WHERE expires_at <= ?", (now,))
            db.execute("INSERT OR REPLACE INTO request_tokens (token, expires_at, record) VALUES (?, ?, ?)", row)

        await self._writer.write(write)

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

        record = await self._writer.write(take)
        return None if record is None else self._request_token(record, token)

    def _request_token(self, stored: str | bytes, token: str) -> RequestToken:
        with codec.opened(f"sqlite: request token {token!r}"):
            return codec.unseal_request_token(stored, self._cipher)

    async def put_user(self, user: BasicUser) -> None:
        row = (user.username, user.password_hash, self._grant_text(user.grant))
        await self._writer.write(_writer(_UPSERT_BASIC_USER, [row]))

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
        await self._writer.write(_writer(statement, [(self._grant_text(grant), username)]))

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        table_and_column = _CREDENTIAL_TABLES.get(kind)
        if table_and_column is None:
            raise ValueError(f"unknown credential kind {kind!r}")
        table, column = table_and_column
        statement = f"DELETE FROM {table} WHERE {column} = ?"
        forget = self._forget_credentials if kind != "user" else None
        removed: int = await self._writer.write(lambda db: db.execute(statement, (key,)).rowcount, on_commit=forget)
        return removed > 0

    async def list_credentials(self) -> list[CredentialEntry]:
        def read() -> list[CredentialEntry]:
            db = self._worker.connection
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

        return await self._worker.call(read)

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

    async def remember_nonce(
        self, scope: str, nonce: str, expires_at: float, *, now: float | None = None, timestamp: int | None = None
    ) -> bool:
        """Kept as a digest of ``scope`` and ``nonce`` (``schema.nonce_digest``) under ``timestamp``, so a new
        nonce lands beside the last ones. A nonce spent before schema version 8 is refused at any timestamp while
        it lives, as every nonce was then; one remembered without a timestamp since is kept apart under the
        same ``NO_TIMESTAMP``, refused again only without one."""
        purge = self._nonce_calls % self.nonce_purge_interval == 0
        self._nonce_calls += 1
        if now is None:
            now = time.time()
        row = {"timestamp": schema.NO_TIMESTAMP if timestamp is None else timestamp,
               "digest": schema.nonce_digest(scope, nonce), "expires_at": expires_at, "now": now}  # fmt: skip
        remember = _REMEMBER_NONCE if timestamp is None or now >= self._untimed_until else _REMEMBER_NONCE_UNTIMED_TOO
        # The purge reads the table from its start (its oldest timestamps) only as far as this nonce's own
        # life ago; a row there that a replica with a longer life wrote is left until it expires.
        oldest_live = now if timestamp is None else now - (expires_at - timestamp)

        def write(db: sqlite3.Connection) -> bool:
            if purge:
                db.execute(_PURGE_NONCES, {"oldest_live": oldest_live, "now": now})
            # Inserted, or an expired row replaced: one row changed. A live row left alone: none, a replay.
            return db.execute(remember, row).rowcount == 1

        accepted: bool = await self._writer.write(write)
        return accepted

    async def size(self) -> StoreSize:
        """Counts the rows within their retention on the worker thread (it scans both tables; the admin status
        page asks at most every half minute), never on the event loop."""
        now = self._clock()

        def count() -> StoreSize:
            db = self._worker.connection
            (messages,) = db.execute(
                "SELECT count(*) FROM messages WHERE learned_at > ?", (now - self.message_retention,)
            ).fetchone()
            (users,) = db.execute(
                "SELECT count(*) FROM users WHERE fetched_at > ?", (now - self.user_max_age,)
            ).fetchone()
            return StoreSize(messages=messages, users=users)

        return await self._worker.call(count)

    async def put_pending(self, key: str, record: bytes, expires_at: float) -> None:
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pending WHERE expires_at <= ?", (now,))  # few rows: swept on each write
            db.execute(
                "INSERT OR REPLACE INTO pending (key, record, expires_at) VALUES (?, ?, ?)", (key, record, expires_at)
            )

        await self._writer.write(write)

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

        taken: bytes | None = await self._writer.write(write)
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

            known.update(await self._writer.write(allocate))
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
            self._worker.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()

        await self._worker.call(check)

    async def close(self) -> None:
        """Refuse new calls, let the writes already queued commit, then close both connections."""
        if self._closed:
            return
        self._closed = self._worker.closed = True
        try:
            await self._writer.close()
        finally:
            loop_db, self._loop_db = self._loop_db, None
            self._writer.db = None
            if loop_db is not None:
                loop_db.close()
            await self._worker.close()


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
# A nonce is new unless a live row has its timestamp and digest.
_REMEMBER_NONCE = """
INSERT INTO nonce_digests (timestamp, digest, expires_at) VALUES (:timestamp, :digest, :expires_at)
ON CONFLICT (timestamp, digest) DO UPDATE SET expires_at = excluded.expires_at
WHERE nonce_digests.expires_at <= :now
"""
# The same, while a nonce spent before schema version 8 may live: and no live row has its digest and no timestamp.
_REMEMBER_NONCE_UNTIMED_TOO = f"""
INSERT INTO nonce_digests (timestamp, digest, expires_at)
SELECT :timestamp, :digest, :expires_at
WHERE NOT EXISTS (
    SELECT 1 FROM nonce_digests WHERE timestamp = {schema.NO_TIMESTAMP} AND digest = :digest AND expires_at > :now
)
ON CONFLICT (timestamp, digest) DO UPDATE SET expires_at = excluded.expires_at
WHERE nonce_digests.expires_at <= :now
"""
_PURGE_NONCES = "DELETE FROM nonce_digests WHERE timestamp < :oldest_live AND expires_at <= :now"


def _untimed_until(db: sqlite3.Connection) -> float:
    """When the last nonce kept without a timestamp expires (0 without one)."""
    (until,) = db.execute(
        f"SELECT max(expires_at) FROM nonce_digests WHERE timestamp = {schema.NO_TIMESTAMP}"
    ).fetchone()
    return 0.0 if until is None else float(until)


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
