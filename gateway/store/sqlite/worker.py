"""The SQLite store's worker thread and its connection: the one place the store may wait.

Guarantees: every call runs on one thread, one at a time, on the connection that waits for locks
(``busy_timeout``) and checkpoints; a SQLite error comes back as ``StoreError``; once the store is closed,
every call is refused with ``StoreError`` and nothing more reaches the file. On ``:memory:`` (which a second
connection cannot see) this connection is the only one, so every call of the store runs here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.store.base import StoreError

T = TypeVar("T")


class Worker:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dm-gateway-sqlite")
        self.db: sqlite3.Connection | None = None  # used on the worker thread only
        self.closed = False

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the thread; a SQLite error as ``StoreError``."""
        if self.closed:
            raise StoreError("sqlite store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` with the thread's connection, on the thread; a SQLite error as ``StoreError``."""
        return await self.call(lambda: fn(self.connection))

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """``fn`` with the thread's connection, on the thread, as a future of what it returns or raises
        (for callbacks). Raises ``RuntimeError`` once the thread is shut down."""
        return asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self.connection))

    @property
    def connection(self) -> sqlite3.Connection:
        if self.db is None:
            raise StoreError("sqlite store is closed")
        return self.db

    async def close(self) -> None:
        """Close the connection on the thread, then stop the thread."""
        self.closed = True

        def close() -> None:
            if self.db is not None:
                self.db.close()
                self.db = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        finally:
            self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop the thread without waiting (the store never opened)."""
        self.closed = True
        self._executor.shutdown(wait=False)
