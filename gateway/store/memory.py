"""An in-memory store, bounded by entry count with least-recently-used eviction. For tests and tiny sidecars.

Credentials are never evicted (losing one would lock a client out); nonces are dropped once expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
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
    # Expired nonces are swept on the first call and then every this many calls, so memory stays bounded
    # by the traffic of one replay window.
    nonce_purge_interval = 500

    def __init__(self, max_entries: int = 100_000) -> None:
        self._messages: _Lru[str, DirectMessage] = _Lru(max_entries)
        self._users: _Lru[str, User] = _Lru(max_entries)
        self._deletions: _Lru[str, Deletion] = _Lru(max_entries)
        self._consumers: dict[str, Consumer] = {}
        self._tokens: dict[str, Token] = {}
        self._basic_users: dict[str, BasicUser] = {}
        self._nonces: dict[tuple[str, str], float] = {}
        self._nonce_calls = 0

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
        now = time.time()
        if self._nonce_calls % self.nonce_purge_interval == 0:
            self._nonces = {key: until for key, until in self._nonces.items() if until > now}
        self._nonce_calls += 1
        seen_until = self._nonces.get((scope, nonce))
        if seen_until is not None and seen_until > now:
            return False
        self._nonces[(scope, nonce)] = expires_at
        return True

    async def close(self) -> None:
        return None
