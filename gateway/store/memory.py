"""An in-memory store, bounded by entry count and by bytes with least-recently-used eviction. For tests and
tiny sidecars.

Messages and users share one LRU: an entry's size is the length of its encoded record plus its key, an
approximation of what it costs. Whenever the entries or their bytes exceed a bound, the least recently used
go first (an entry larger than the whole byte budget is not kept at all). A deletion lives inside its
message's entry, so it is evicted and expires with it, as in SQLite. Expired entries (older than the message
retention or the user max age) are misses and are dropped when read. Text is kept as plain objects: memory is
not at rest, so no encryption here.

Credentials are never evicted (losing one would lock a client out); nonces are dropped once expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

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
from gateway.store.base import Deletion

K = TypeVar("K")
V = TypeVar("V")

_DEFAULTS = StoreConfig()
_DELETION_BYTES = 64  # a timestamp and a user id, roughly


class _Lru(Generic[K, V]):
    """Least recently used first out, bounded by entries and by the sizes given with each ``put``."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("memory store bounds must be positive")
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        self._data.move_to_end(key)
        return item[0]

    def peek(self, key: K) -> V | None:
        item = self._data.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, size: int) -> None:
        self.discard(key)
        self._data[key] = (value, size)
        self.bytes += size
        while self._data and (len(self._data) > self._max_entries or self.bytes > self._max_bytes):
            _, (_, evicted) = self._data.popitem(last=False)
            self.bytes -= evicted

    def replace(self, key: K, value: V) -> None:
        """Change a value in place: neither its size nor its recency."""
        _, size = self._data[key]
        self._data[key] = (value, size)

    def discard(self, key: K) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class _Learned:
    value: DirectMessage | User
    at: float
    deletion: Deletion | None = None


class MemoryStore:
    # Expired nonces are swept on the first call and then every this many calls, so memory stays bounded
    # by the traffic of one replay window.
    nonce_purge_interval = 500

    def __init__(
        self,
        max_entries: int = _DEFAULTS.memory_max_entries,
        *,
        max_bytes: int = _DEFAULTS.memory_max_bytes,
        message_retention: float = _DEFAULTS.message_retention,
        user_max_age: float = _DEFAULTS.user_max_age,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if message_retention <= 0 or user_max_age <= 0:
            raise ValueError("message_retention and user_max_age must be positive")
        self._cache: _Lru[tuple[str, str], _Learned] = _Lru(max_entries, max_bytes)
        self._message_retention = message_retention
        self._user_max_age = user_max_age
        self._clock = clock
        self._consumers: dict[str, Consumer] = {}
        self._tokens: dict[str, Token] = {}
        self._basic_users: dict[str, BasicUser] = {}
        self._nonces: dict[tuple[str, str], float] = {}
        self._nonce_calls = 0

    @property
    def cached_bytes(self) -> int:
        """The approximate size of every cached message and user (credentials are not counted)."""
        return self._cache.bytes

    def _live(self, key: tuple[str, str], max_age: float) -> _Learned | None:
        entry = self._cache.get(key)
        if entry is not None and entry.at + max_age <= self._clock():
            self._cache.discard(key)  # expired: purged on read
            return None
        return entry

    async def get_message(self, message_id: str) -> DirectMessage | None:
        entry = self._live(("m", message_id), self._message_retention)
        return None if entry is None else entry.value  # type: ignore[return-value]

    async def put_messages(self, messages: Iterable[DirectMessage]) -> None:
        now = self._clock()
        for message in messages:
            key = ("m", message.id)
            previous = self._cache.peek(key)
            # Learning a message again refreshes it but never forgets a recorded deletion.
            deletion = previous.deletion if previous is not None else None
            size = len(key[1]) + len(codec.dumps(codec.message_to_record(message)))
            size += _DELETION_BYTES if deletion is not None else 0
            self._cache.put(key, _Learned(message, now, deletion), size)

    async def get_message_with_users(self, message_id: str) -> tuple[DirectMessage | None, dict[str, User]]:
        message = await self.get_message(message_id)
        if message is None:
            return None, {}
        return message, await self.get_users({message.sender_id, message.recipient_id})

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found = {uid: self._live(("u", uid), self._user_max_age) for uid in user_ids}
        return {uid: entry.value for uid, entry in found.items() if entry is not None}  # type: ignore[misc]

    async def put_users(self, users: Iterable[User]) -> None:
        now = self._clock()
        for user in users:
            size = len(user.id) + len(codec.dumps(codec.user_to_record(user)))
            self._cache.put(("u", user.id), _Learned(user, now), size)

    async def mark_deleted(self, message_id: str, by: str | None) -> None:
        self._mark_deleted(message_id, by)

    async def mark_deleted_many(self, deletions: Sequence[tuple[str, str | None]]) -> None:
        for message_id, by in deletions:
            self._mark_deleted(message_id, by)

    def _mark_deleted(self, message_id: str, by: str | None) -> None:
        key = ("m", message_id)
        entry = self._live(key, self._message_retention)
        if entry is None:
            return
        self._cache.replace(key, replace(entry, deletion=Deletion(at=self._clock(), by=by)))

    async def get_deletion(self, message_id: str) -> Deletion | None:
        entry = self._live(("m", message_id), self._message_retention)
        return None if entry is None else entry.deletion

    # Credentials. No method awaits between reading and writing, so each is atomic on the event loop. ----

    async def put_consumer(self, consumer: Consumer) -> None:
        self._consumers[consumer.key] = consumer

    async def get_consumer(self, key: str) -> Consumer | None:
        return self._consumers.get(key)

    async def put_token(self, token: Token) -> None:
        if token.consumer_key not in self._consumers:
            raise ValueError(f"no consumer {token.consumer_key!r}")
        self._tokens[token.token] = token

    async def get_token(self, token: str) -> Token | None:
        return self._tokens.get(token)

    async def put_user(self, user: BasicUser) -> None:
        self._basic_users[user.username] = user

    async def get_user(self, username: str) -> BasicUser | None:
        return self._basic_users.get(username)

    async def put_grant(self, username: str, grant: OAuth2Grant) -> None:
        user = self._basic_users.get(username)
        if user is not None:
            self._basic_users[username] = replace(user, grant=grant)

    async def remove_credential(self, kind: CredentialKind, key: str) -> bool:
        if kind == "consumer":
            if self._consumers.pop(key, None) is None:
                return False
            for token in [t.token for t in self._tokens.values() if t.consumer_key == key]:
                del self._tokens[token]
            return True
        if kind == "token":
            return self._tokens.pop(key, None) is not None
        if kind == "user":
            return self._basic_users.pop(key, None) is not None
        raise ValueError(f"unknown credential kind {kind!r}")

    async def list_credentials(self) -> list[CredentialEntry]:
        return credential_entries(
            self._consumers,
            ((t.token, t.consumer_key) for t in self._tokens.values()),
            ((u.username, u.grant) for u in self._basic_users.values()),
        )

    async def remember_nonce(self, scope: str, nonce: str, expires_at: float) -> bool:
        now = time.time()  # nonces expire on the wall clock their expires_at was computed from
        if self._nonce_calls % self.nonce_purge_interval == 0:
            self._nonces = {key: until for key, until in self._nonces.items() if until > now}
        self._nonce_calls += 1
        seen_until = self._nonces.get((scope, nonce))
        if seen_until is not None and seen_until > now:
            return False
        self._nonces[(scope, nonce)] = expires_at
        return True

    async def ping(self) -> None:
        return None  # in-process: always answers

    async def close(self) -> None:
        return None
