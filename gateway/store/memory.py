"""An in-memory store, bounded by entry count with least-recently-used eviction. For tests and tiny sidecars."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

from gateway.model import DirectMessage, User
from gateway.store.base import Deletion

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._max = max_entries

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class MemoryStore:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._messages: _Lru[str, DirectMessage] = _Lru(max_entries)
        self._users: _Lru[str, User] = _Lru(max_entries)
        self._deletions: _Lru[str, Deletion] = _Lru(max_entries)

    async def get_message(self, message_id: str) -> DirectMessage | None:
        return self._messages.get(message_id)

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        for message in messages:
            self._messages.put(message.id, message)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found = {uid: self._users.get(uid) for uid in user_ids}
        return {uid: user for uid, user in found.items() if user is not None}

    async def put_users(self, users: Iterable[User]) -> None:
        for user in users:
            self._users.put(user.id, user)

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        if message_id not in self._messages:
            return
        self._deletions.put(message_id, Deletion(at=time.time(), by=by))

    async def get_deletion(self, message_id: str) -> Deletion | None:
        return self._deletions.get(message_id)

    async def close(self) -> None:
        return None
