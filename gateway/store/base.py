"""The store protocols every backend implements, and the factory that picks one from a store URL.

A backend keeps messages and credentials together (``Store``), so one URL and one file hold everything a
gateway needs; code that only reads or writes messages keeps asking for a ``MessageStore``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.auth.credentials import CredentialStore
from gateway.config import store_location
from gateway.model import DirectMessage, User


@dataclass(frozen=True, slots=True)
class Deletion:
    """A successful upstream delete: when, and for whom (None when the caller's id was not known)."""

    at: float
    by: str | None


class StoreError(Exception):
    """The backend could not answer; callers treat reads as misses and keep serving from upstream."""


class MessageStore(Protocol):
    async def get_message(self, message_id: str) -> DirectMessage | None: ...

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None: ...

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]: ...

    async def put_users(self, users: Iterable[User]) -> None: ...

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        """Record a successful upstream delete. The message data is kept: other participants still see it."""

    async def get_deletion(self, message_id: str) -> Deletion | None: ...

    async def close(self) -> None: ...


class Store(MessageStore, CredentialStore, Protocol):
    """Messages and credentials from one object: what ``open_store`` returns and every backend is."""


async def open_store(url: str) -> Store:
    backend, location = store_location(url)
    if backend == "memory":
        from gateway.store.memory import MemoryStore

        return MemoryStore()
    if backend == "redis":
        from gateway.store.redis import RedisStore

        return await RedisStore.open(location)
    from gateway.store.sqlite import SQLiteStore

    return await SQLiteStore.open(location)
