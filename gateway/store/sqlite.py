"""The embedded default store: one SQLite file in WAL mode, versioned schema, survives restarts.

SQLite calls block, so every call runs on one dedicated worker thread that owns the connection; the event
loop never waits on disk. Commits happen before a write returns, so an acknowledged write survives kill -9.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.model import DirectMessage, User
from gateway.store import codec
from gateway.store.base import Deletion, StoreError

T = TypeVar("T")

SCHEMA_VERSION = 1

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
}


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-gateway-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        store = cls(path)
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
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

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

    async def get_message(self, message_id: str) -> DirectMessage | None:
        def read() -> DirectMessage | None:
            row = self._db.execute("SELECT record FROM messages WHERE id = ?", (message_id,)).fetchone()
            return codec.message_from_record(codec.loads(row[0])) if row else None

        return await self._run(read)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        ids = sorted(set(user_ids))
        if not ids:
            return {}

        def read() -> dict[str, User]:
            marks = ",".join("?" * len(ids))
            rows = self._db.execute(f"SELECT record FROM users WHERE id IN ({marks})", ids).fetchall()
            users = (codec.user_from_record(codec.loads(row[0])) for row in rows)
            return {user.id: user for user in users}

        return await self._run(read)

    async def get_deletion(self, message_id: str) -> Deletion | None:
        def read() -> Deletion | None:
            row = self._db.execute(
                "SELECT deleted_at, deleted_by FROM messages WHERE id = ? AND deleted_at IS NOT NULL",
                (message_id,),
            ).fetchone()
            return Deletion(at=row[0], by=row[1]) if row else None

        return await self._run(read)

    # Writes ----------------------------------------------------------------------------------------

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        now = time.time()
        rows = [(m.id, codec.dumps(codec.message_to_record(m)), now) for m in messages]
        if rows:
            await self._run(self._write, _UPSERT_MESSAGE, rows)

    async def put_users(self, users: Iterable[User]) -> None:
        now = time.time()
        rows = [(u.id, codec.dumps(codec.user_to_record(u)), now) for u in users]
        if rows:
            await self._run(self._write, _UPSERT_USER, rows)

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        await self._run(self._write, _MARK_DELETED, [(time.time(), by, message_id)])

    def _write(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(statement, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._closed:
            return

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._run(close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=True)


# Learning a message again refreshes its data but never clears a recorded deletion.
_UPSERT_MESSAGE = """
INSERT INTO messages (id, record, learned_at) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET record = excluded.record, learned_at = excluded.learned_at
"""
_UPSERT_USER = """
INSERT INTO users (id, record, fetched_at) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET record = excluded.record, fetched_at = excluded.fetched_at
"""
_MARK_DELETED = "UPDATE messages SET deleted_at = ?, deleted_by = ? WHERE id = ?"
