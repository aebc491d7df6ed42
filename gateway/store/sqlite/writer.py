"""The SQLite store's writer: every write is queued and committed in batches, one transaction each.

Guarantees:

- A caller is answered only after the transaction holding its write has committed (WAL with
  ``synchronous=NORMAL``: the commit is in the log, so it survives ``kill -9``; a checkpoint syncs the disk).
- Everything queued while a batch commits goes into the next one (at most ``max_batch`` writes each).
- A write that raises is undone alone: the batch is run again with a savepoint per write, so its neighbours
  still commit, and the caller gets what it raised (a SQLite error as ``StoreError``).
- Batches commit on the event loop's connection, which never waits. While another connection holds the
  write lock, the loop tries again a moment later, the batch growing meanwhile, and only after the worker's
  busy timeout hands it to the worker thread; no thread sleeps in SQLite's busy handler on the way. Any other
  failure is tried again on the worker thread, which waits for the lock and reports what is real. With no
  loop connection (``:memory:``) every batch commits on the worker.
- The log is checkpointed (PASSIVE) on the worker thread every ``checkpoint_interval`` loop commits, or
  sooner once they changed ``checkpoint_changes`` rows, so a few large batches never grow it without bound.
- ``close`` returns once everything queued has been answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.store.base import Outcome, StoreError, answer_each, caller_error
from gateway.store.sqlite.schema import BUSY_TIMEOUT_MS
from gateway.store.sqlite.worker import Worker

T = TypeVar("T")

log = logging.getLogger("gateway.store")

Op = Callable[[sqlite3.Connection], Any]
"""One write: run inside its batch's transaction, on the loop's connection or on the worker thread's."""


Batch = list[tuple[Op, "asyncio.Future[Any]"]]
"""Writes with their callers."""

OnCommit = Callable[[], None] | None
"""What to do on the loop as soon as a write's transaction has committed, before any caller is answered."""


class Writer:
    # At most this many queued writes share one transaction, so another process sharing the file never
    # waits long for the write lock.
    max_batch = 256
    # While another connection holds the write lock, the loop tries again after this long (seconds),
    # doubled on each try up to ``busy_retry_max``, for up to ``busy_timeout`` in all.
    busy_retry = 0.0005
    busy_retry_max = 0.004
    busy_timeout = BUSY_TIMEOUT_MS / 1000
    # Checkpoints: after this many batches committed on the loop, or sooner once they changed this many
    # rows (SQLite's own default is about a thousand pages of log; ten thousand messages are about 850).
    checkpoint_interval = 100
    checkpoint_changes = 10_000

    def __init__(self, db: sqlite3.Connection | None, worker: Worker) -> None:
        self.db = db  # the event loop's connection, or None for ``:memory:``
        self._worker = worker
        self.closed = False
        self._queue: list[tuple[Op, asyncio.Future[Any], OnCommit]] = []
        self._writing = False  # a batch is scheduled, being committed or waiting for the lock
        self._busy_since: float | None = None  # when the batch waiting for the lock was first refused
        self._busy_tries = 0
        self._idle = asyncio.Event()  # set while nothing is queued or being written
        self._idle.set()
        self._commits = 0  # batches committed on the loop since the last checkpoint was started
        self._changes = 0  # the loop connection's total_changes when the last checkpoint was started
        self.checkpoint: asyncio.Future[Any] | None = None  # on the worker thread

    async def write(self, op: Callable[[sqlite3.Connection], T], *, on_commit: OnCommit = None) -> T:
        """Queue ``op`` for the next batch; return what it returned once the transaction holding it has
        committed, or raise what it raised. ``on_commit`` runs once that transaction has committed (or was
        tried: it must be safe either way), before any caller is answered."""
        if self.closed:
            raise StoreError("sqlite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future, on_commit))
        self._idle.clear()
        if not self._writing:
            self._writing = True
            loop.call_soon(self._send)
        return await future

    async def close(self) -> None:
        """Refuse new writes; return once every write queued so far has been answered."""
        self.closed = True
        await self._idle.wait()

    def _send(self) -> None:
        """Commit the queued writes as one transaction (those whose caller is gone are dropped)."""
        queued = [write for write in self._queue[: self.max_batch] if not write[1].done()]
        del self._queue[: self.max_batch]
        if not queued:
            self._next()
            return
        batch = [(op, future) for op, future, _ in queued]
        ops = [op for op, _ in batch]
        hooks = [hook for _, _, hook in queued if hook is not None]
        loop = asyncio.get_running_loop()
        if self.db is not None:
            try:
                outcomes = commit(self.db, ops)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY and self._wait_for_lock(queued):
                    return
            except Exception:  # noqa: BLE001 - nothing committed: the worker tries again and reports what is real
                pass
            else:
                self._busy_since = None
                _run(hooks)
                answer(batch, outcomes)
                loop.call_soon(self._next)  # after what the loop has ready: a long queue never holds it
                self._committed(self.db)
                return
        self._busy_since = None
        try:
            done = self._worker.submit(functools.partial(commit, ops=ops))
        except RuntimeError as exc:  # the thread was shut down under a close() that was cancelled
            settle(batch, exc)
            self._next()
            return
        done.add_done_callback(functools.partial(self._done_on_worker, batch, hooks))

    def _wait_for_lock(self, queued: list[tuple[Op, asyncio.Future[Any], OnCommit]]) -> bool:
        """Put the ``queued`` writes back at the head of the queue and try again a moment later, unless the lock
        has been refused for ``busy_timeout`` already (then False: the batch is the worker's)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._busy_since is None:
            self._busy_since, self._busy_tries = now, 0
        elif now - self._busy_since >= self.busy_timeout:
            return False
        self._queue[:0] = queued
        delay = min(self.busy_retry * 2**self._busy_tries, self.busy_retry_max)
        self._busy_tries += 1
        loop.call_later(delay, self._send)
        return True

    def _done_on_worker(
        self, batch: Batch, hooks: list[Callable[[], None]], done: asyncio.Future[list[Outcome]]
    ) -> None:
        _run(hooks)
        answer_from(batch, done)
        self._next()

    def _next(self) -> None:
        if self._queue:
            self._send()
            return
        self._writing = False
        self._idle.set()

    def _committed(self, db: sqlite3.Connection) -> None:
        """Count a batch the loop committed; every ``checkpoint_interval`` of them, or once they changed
        ``checkpoint_changes`` rows, have the worker thread checkpoint the log (PASSIVE: it copies what no
        reader still needs and waits for nobody)."""
        self._commits += 1
        if self.checkpoint is not None:
            return
        changes = db.total_changes
        if self._commits < self.checkpoint_interval and changes - self._changes < self.checkpoint_changes:
            return
        self._commits, self._changes = 0, changes
        try:
            self.checkpoint = self._worker.submit(_checkpoint)
        except RuntimeError:  # the thread was shut down under a close() that was cancelled
            return
        self.checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, done: asyncio.Future[Any]) -> None:
        self.checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            # Nothing is lost: the log keeps every commit until a later checkpoint copies it.
            log.warning("sqlite checkpoint failed: %s", done.exception())


def _run(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        hook()


def _checkpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def commit(db: sqlite3.Connection, ops: list[Op]) -> list[Outcome]:
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


def answer_from(callers: list[tuple[Any, asyncio.Future[Any]]], done: asyncio.Future[list[Outcome]]) -> None:
    """``answer`` with what a batch run on the worker thread gave, or its error for every caller."""
    error = StoreError("sqlite call on the worker cancelled") if done.cancelled() else done.exception()
    answer(callers, [(False, error)] * len(callers) if error is not None else done.result())


def answer(batch: list[tuple[Any, asyncio.Future[Any]]], outcomes: list[Outcome]) -> None:
    """Give each caller of a batch what its part returned or raised (SQLite's errors as ``StoreError``)."""
    answer_each(batch, outcomes, store_error)


def settle(batch: Batch, error: BaseException) -> None:
    """Fail every caller of a batch that did not commit."""
    answer(batch, [(False, error)] * len(batch))


def store_error(error: BaseException) -> BaseException:
    """What a caller sees for ``error``: SQLite errors and a closed store as ``StoreError``, others as raised
    (a token for an unknown consumer is a ``ValueError``)."""
    if isinstance(error, sqlite3.Error):
        wrapped = StoreError(f"sqlite: {error}")
        wrapped.__cause__ = error
        return wrapped
    return caller_error(error)
