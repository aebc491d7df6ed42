"""The store protocols every backend implements (``gateway.store.factory`` picks one from a store URL).

A backend keeps messages and credentials together (``Store``), so one URL and one file hold everything a
gateway needs; code that only reads or writes messages keeps asking for a ``MessageStore``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway.auth.credentials import CredentialStore
from gateway.model import DirectMessage, User


@dataclass(frozen=True, slots=True)
class Deletion:
    """A successful upstream delete: when, and by whom (the caller's ``Principal.identity``; None when not
    known). A message keeps one per deleter, as each participant deletes it for themselves."""

    at: float
    by: str | None


def latest(deletions: Iterable[Deletion]) -> Deletion | None:
    """The most recent of ``deletions``, or None."""
    return max(deletions, key=lambda deletion: deletion.at, default=None)


@dataclass(frozen=True, slots=True)
class StoreSize:
    """How many messages and v2 users a store holds that are still live (within their retention)."""

    messages: int
    users: int


class StoreError(Exception):
    """The backend could not answer; callers treat reads as misses and keep serving from upstream."""


K = TypeVar("K")
R = TypeVar("R")


class TurnBatch(Generic[K, R]):
    """The calls made in one turn of the event loop, handed over together once it ends: ``answer`` gets every
    caller still waiting, as (its key, its future), and must settle each future, now or later. A backend reads
    them in one go where each alone would cost a read (a statement, a round trip) of its own."""

    def __init__(self, answer: Callable[[list[tuple[K, asyncio.Future[R]]]], None]) -> None:
        self._answer = answer
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []

    async def ask(self, key: K) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((key, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        waiting, self._waiting = self._waiting, []
        callers = [(key, future) for key, future in waiting if not future.done()]  # a caller gone asks nothing
        if callers:
            self._answer(callers)


Outcome = tuple[bool, Any]
"""What one caller's part of a batch came to: (True, its result) or (False, the exception it raised)."""


def caller_error(error: BaseException) -> BaseException:
    """The exception a caller of a batch gets for ``error``: a ``StoreError`` of its own (one raised in several
    callers' tasks would gather all their tracebacks), anything else as raised."""
    return StoreError(*error.args) if isinstance(error, StoreError) else error


def answer_each(
    callers: Sequence[tuple[Any, asyncio.Future[Any]]],
    outcomes: Sequence[Outcome],
    error: Callable[[BaseException], BaseException] = caller_error,
) -> None:
    """Give each caller of a batch (a ``TurnBatch``'s, a writer's) what its part returned, or ``error`` of what it
    raised; a caller gone already is skipped."""
    for (_, future), (ok, value) in zip(callers, outcomes, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(error(value))


class MessageStore(Protocol):
    async def get_message(self, message_id: str) -> DirectMessage | None: ...

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None: ...

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]: ...

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        """``get_message``, and for a message found, ``get_users`` of its sender and recipient, as cheaply as
        the backend can (one trip where it can)."""

    async def put_users(self, users: Iterable[User]) -> None: ...

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        """Record a successful upstream delete by ``by``, beside the other deleters' (``by``'s own earlier one
        is replaced). Only a message the store holds takes it, and the message data is kept: other
        participants still see it."""

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        """``mark_deleted`` for each (message id, by), in one trip where the backend can."""

    async def get_deletions(self, message_id: str) -> tuple[Deletion, ...]:
        """Every deleter's record of the message, oldest first; none for a message the store does not hold."""

    async def get_deletion(self, message_id: str) -> Deletion | None:
        """The most recent of ``get_deletions``, or None."""

    async def small_ids(self, ids: Sequence[str]) -> list[int]:
        """The small id of each v2 id in ``ids`` (``[routes] small_ids``), in the same order. An id that has
        none yet is given the next one, 1, 2, 3, ..., in the order of ``ids``; once given, it never changes
        and is never given to another id, by this process or any other on the same store. Kept for good:
        retention does not apply, since a client may hold a small id for as long as it likes."""

    async def v2_ids(self, smalls: Iterable[int]) -> dict[int, str]:
        """The v2 id each of ``smalls`` was given to; a small id never given is left out."""

    async def size(self) -> StoreSize:
        """The live messages and users held, at a bounded cost that does not grow with the traffic (the admin
        status page asks, and keeps the answer for a while; each backend says how it counts)."""

    async def ping(self) -> None:
        """Return when the backend answers a trivial request; raise ``StoreError`` when it cannot.
        The admin listener's /readyz asks this (under a short timeout of its own)."""

    async def close(self) -> None: ...


class Store(MessageStore, CredentialStore, Protocol):
    """Messages and credentials from one object: what ``open_store`` returns and every backend is."""


Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``; stores take one so tests can move time without sleeping."""
